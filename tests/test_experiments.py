"""Table 1's experiment sets: sizes, synthetic share, site ratio, nesting, determinism, refusals."""

import numpy as np
import pytest

from billetjax import coco as cc
from billetjax.experiments import make_experiment_set, stratified_order, table1

EXPERIMENTS = {
    "images": 80,
    "validation_fraction": 0.25,
    "seeds": [0],
    "sets": [{"synthetic_pct": p} for p in (0, 25, 50, 75, 100)] + [{"synthetic_pct": 0, "images_fraction": 0.25}],
}


@pytest.fixture
def config(make_config):
    return make_config({"seed": 7, "experiments": EXPERIMENTS})


def fake_pool(path, n, source, share_a, seed):
    rng = np.random.default_rng(seed)
    data = cc.empty_dataset()
    for i in range(1, n + 1):
        site = "A" if i <= round(n * share_a) else "B"
        vis = rng.choice(["well", "well", "well", "poor", "partial"])
        data["images"].append({"id": i, "file_name": f"img/{source}{i}.png", "width": 64, "height": 64,
                               "site": site, "visibility": str(vis), "billet_id": "1", "source": source})
        data["annotations"].append({"id": i, "image_id": i, "category_id": 2, "bbox": [1, 1, 5, 9],
                                    "iscrowd": 0, "area": 45, "segmentation": [[1, 1, 6, 1, 6, 10]]})
    cc.save(path, data)
    return path


@pytest.fixture
def pools(tmp_path):
    return (fake_pool(tmp_path / "real/pool.json", 120, "real", 1 / 3, 0),
            fake_pool(tmp_path / "synth/pool.json", 100, "synthetic", 0.5, 1))


def build(config, tmp_path, pools, number, seed=0):
    out = tmp_path / f"exp{number}" / f"seed{seed}"
    make_experiment_set(config, number, seed, pools[0], pools[1], out / "train.json", out / "val.json")
    return cc.load(out / "train.json"), cc.load(out / "val.json")


def test_table1_sizes_and_shares(config, tmp_path, pools):
    assert [(e.synthetic_pct, e.n_images) for e in table1(config["experiments"])] == [
        (0, 80), (25, 80), (50, 80), (75, 80), (100, 80), (0, 20)]
    assert [(e.n_real, e.n_synthetic, e.real_pct) for e in table1(config["experiments"])] == [
        (80, 0, 100), (60, 20, 75), (40, 40, 50), (20, 60, 25), (0, 80, 0), (20, 0, 100)]
    assert [(e.uses_real, e.uses_synthetic) for e in table1({"images": 400, "sets": [
        {"synthetic_pct": 0.1, "images_fraction": 1.0}, {"synthetic_pct": 100, "images_fraction": 0.5}]})] == [
        (True, True), (False, True)]
    for number, (pct, n) in enumerate([(0, 80), (25, 80), (50, 80), (75, 80), (100, 80), (0, 20)], 1):
        train, val = build(config, tmp_path, pools, number)
        assert len(train["images"]) + len(val["images"]) == n
        assert len(val["images"]) == round(n * 0.25)
        for split in (train, val):
            synthetic = sum(img["source"] == "synthetic" for img in split["images"])
            assert synthetic == pytest.approx(len(split["images"]) * pct / 100, abs=1)
        # Ids are fresh and unique within a file.
        for split in (train, val):
            assert [img["id"] for img in split["images"]] == list(range(1, len(split["images"]) + 1))


def test_real_part_keeps_site_ratio(config, tmp_path, pools):
    train, val = build(config, tmp_path, pools, 1)
    real = [img for img in train["images"] + val["images"] if img["source"] == "real"]
    assert sum(img["site"] == "A" for img in real) / len(real) == pytest.approx(1 / 3, abs=0.02)


def test_sets_nest_and_splits_are_disjoint(config, tmp_path, pools):
    def real_ids(number):
        train, val = build(config, tmp_path, pools, number)
        assert not {i["source_image_id"] for i in train["images"] if i["source"] == "real"} & {
            i["source_image_id"] for i in val["images"] if i["source"] == "real"}
        return {(i["source"], i["source_image_id"]) for i in train["images"] + val["images"] if i["source"] == "real"}

    assert real_ids(6) == real_ids(4)  # experiment 6 = the real part of experiment 4 (paper §2.3.1)
    assert real_ids(4) < real_ids(3) < real_ids(2) < real_ids(1)


def test_deterministic_and_seeds_differ(config, tmp_path, pools):
    a = build(config, tmp_path / "a", pools, 2)
    b = build(config, tmp_path / "b", pools, 2)
    c = build(config, tmp_path / "c", pools, 2, seed=1)
    strip = lambda d: [(i["source"], i["source_image_id"]) for i in d[0]["images"]]
    assert strip(a) == strip(b) and strip(a) != strip(c)


def test_stratified_order_prefixes_keep_proportions():
    strata = ["A"] * 30 + ["B"] * 60
    order = stratified_order(strata, seed=3)
    for n in (9, 30, 45, 90):
        share = np.mean([strata[i] == "A" for i in order[:n]])
        assert abs(share - 1 / 3) <= 1.5 / n + 1e-9


def test_too_small_pool_is_refused(config, make_config, tmp_path, pools):
    bigger = make_config({"seed": 7, "experiments": {**EXPERIMENTS, "images": 200}})
    with pytest.raises(ValueError, match="needs 200 real images but the pool has 120"):
        make_experiment_set(bigger, 1, 0, pools[0], pools[1], tmp_path / "t.json", tmp_path / "v.json")
    with pytest.raises(ValueError, match="experiment 9 is not in experiments.sets"):
        make_experiment_set(config, 9, 0, pools[0], pools[1], tmp_path / "t.json", tmp_path / "v.json")
