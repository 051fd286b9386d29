"""Table 1's experiment sets: sizes, synthetic share, site ratio, nesting, determinism, refusals."""

import json

import numpy as np
import pytest

from billetjax import coco as cc
from billetjax.experiments import Experiment, make_experiment_set, stratified_order, table1

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


def row(config, number):
    return table1(config["experiments"], config["synth"]["method"])[number - 1]


def build(config, tmp_path, pools, number, seed=0):
    out = tmp_path / f"exp{number}" / f"seed{seed}"
    make_experiment_set(row(config, number), config, seed, pools[0], pools[1], out / "train.json", out / "val.json")
    return cc.load(out / "train.json"), cc.load(out / "val.json")


def test_table1_sizes_and_shares(config, make_config, tmp_path, pools):
    assert [(e.synthetic_pct, e.n_images) for e in table1(config["experiments"], "gan")] == [
        (0, 80), (25, 80), (50, 80), (75, 80), (100, 80), (0, 20)]
    assert [(e.n_real, e.n_synthetic, e.real_pct) for e in table1(config["experiments"], "gan")] == [
        (80, 0, 100), (60, 20, 75), (40, 40, 50), (20, 60, 25), (0, 80, 0), (20, 0, 100)]
    assert all(e.is_plain and e.batch_plan() is None for e in table1(config["experiments"], "gan"))
    tiny = make_config({"experiments": {"images": 400, "sets": [{"synthetic_pct": 0.1}, {"synthetic_pct": 100, "images_fraction": 0.5}]}})
    assert [(e.uses_real, e.uses_synthetic) for e in table1(tiny["experiments"], "gan")] == [
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
        make_experiment_set(row(bigger, 1), bigger, 0, pools[0], pools[1], tmp_path / "t.json", tmp_path / "v.json")
    with pytest.raises(ValueError, match="experiment 3 needs 100 synthetic images but no synthetic pool was given"):
        make_experiment_set(row(bigger, 3), bigger, 0, pools[0], None, tmp_path / "t.json", tmp_path / "v.json")


def test_rows_round_trip_through_plain_dicts(table1_of):
    for e in table1_of(AXES):
        assert Experiment.from_dict(e.to_dict()) == e
        assert json.loads(json.dumps(e.to_dict())) == e.to_dict()


# ----------------------------------------------------------------------------- experiment axes


AXES = {**EXPERIMENTS, "sets": [
    {"synthetic_pct": 0},
    {"synthetic_pct": 50},
    {"synthetic_pct": 50, "synthetic_source": "classic"},
    {"synthetic_pct": 50, "strategy": "sequential"},
    {"synthetic_pct": 50, "synthetic_schedule": [75, 25]},
    {"real_images": 20, "synthetic_images": 60},
    {"real_images": 20},
    {"synthetic_pct": 0, "oversample_hard": True},
]}


@pytest.fixture
def axes(make_config):
    return make_config({"seed": 7, "experiments": AXES})


def test_rows_with_axes_have_their_sizes_labels_and_plans(axes):
    rows = table1(axes["experiments"], "gan")
    assert [(e.n_real, e.n_synthetic) for e in rows] == [(80, 0), (40, 40), (40, 40), (40, 40), (40, 40),
                                                        (20, 60), (20, 0), (80, 0)]
    assert [e.source for e in rows[1:6]] == ["gan", "classic", "gan", "gan", "gan"]
    assert [e.is_plain for e in rows] == [True, True, False, False, False, True, True, False]
    assert rows[5].synthetic_pct == 75 and rows[6].synthetic_pct == 0
    assert [e.label for e in rows] == [
        "0 % synthetic of 80", "50 % synthetic of 80", "50 % synthetic (classic) of 80", "50 % synthetic of 80, sequential",
        "50 % synthetic of 80, schedule 75->25 %", "20 real + 60 synthetic", "20 real",
        "0 % synthetic of 80, hard real oversampled"]
    assert [e.batch_plan() for e in rows[2:5]] == [
        None, {"strategy": "sequential", "synthetic_schedule": None}, {"strategy": "mix", "synthetic_schedule": [75.0, 25.0]}]
    # With synth.method classic, the same rows' default source is classic and row 3 is plain.
    classic = table1(axes["experiments"], "classic")
    assert [e.source for e in classic[1:4]] == ["classic", "classic", "classic"] and classic[2].is_plain


def test_count_rows_nest_with_share_rows(axes, tmp_path, pools):
    def real_ids(number):
        train, val = build(axes, tmp_path, pools, number)
        return {i["source_image_id"] for i in train["images"] + val["images"] if i["source"] == "real"}

    # 20 real images of the counts rows are the first 20 of the order: inside the 40 of the 50 % rows.
    assert real_ids(6) == real_ids(7) < real_ids(2) < real_ids(1)
    train, val = build(axes, tmp_path, pools, 6)
    assert sum(i["source"] == "synthetic" for i in train["images"] + val["images"]) == 60


def test_batch_plan_is_written_into_the_training_set_only(axes, tmp_path, pools):
    for number, plan in ((2, None), (4, {"strategy": "sequential", "synthetic_schedule": None}),
                         (5, {"strategy": "mix", "synthetic_schedule": [75, 25]})):
        train, val = build(axes, tmp_path, pools, number)
        assert train["info"].get("batch_plan") == plan
        assert "batch_plan" not in val["info"]


def test_classic_rows_draw_from_the_pool_they_are_given(axes, tmp_path, pools):
    # The workflow hands each row the pool of its source; the draw itself is the same.
    same = build(axes, tmp_path / "a", pools, 2)[0]["images"]
    classic = build(axes, tmp_path / "b", pools, 3)[0]["images"]
    assert [(i["source"], i["source_image_id"]) for i in same] == [(i["source"], i["source_image_id"]) for i in classic]
    assert "(classic)" in build(axes, tmp_path / "b", pools, 3)[0]["info"]["description"]


@pytest.mark.parametrize("visibility, share, expected", [
    (["well"] * 6 + ["poor"] * 2, 0.5, [1] * 6 + [3, 3]),         # 6 hard copies beside 6 easy
    (["well"] * 6 + ["partial", "poor", "poor"], 0.5, [1] * 6 + [2, 2, 2]),
    (["well"] * 6 + ["poor"] * 4, 0.5, [1] * 6 + [2, 2, 1, 1]),   # 6 copies of 4: the first two twice
    (["poor", "well", "well", "well", "well"], 0.2, [1] * 5),     # the share is already there
    (["well"] * 9 + ["partial"], 0.25, [1] * 9 + [3]),
])
def test_hard_repeats_hand_counts(visibility, share, expected):
    from billetjax.experiments import hard_repeats

    assert hard_repeats(visibility, share).tolist() == expected


def test_hard_repeats_refuse_a_set_without_hard_images():
    from billetjax.experiments import hard_repeats

    with pytest.raises(ValueError, match="no poor or partially visible"):
        hard_repeats(["well", "well", "unknown"], 0.5)


def test_oversample_hard_reaches_the_hard_share_in_training_only(axes, tmp_path, pools):
    plain_train, plain_val = build(axes, tmp_path / "a", pools, 1)
    train, val = build(axes, tmp_path / "b", pools, 8)
    hard = [i for i in train["images"] if i["visibility"] in ("poor", "partial")]
    assert len(hard) / len(train["images"]) == pytest.approx(0.5, abs=1 / len(train["images"]))
    assert val["images"] == plain_val["images"]  # validation untouched
    # The distinct images are experiment 1's; every copy names its first record and shares its file.
    assert {i["source_image_id"] for i in train["images"]} == {i["source_image_id"] for i in plain_train["images"]}
    by_id = {i["id"]: i for i in train["images"]}
    copies = [i for i in train["images"] if "repeat_of" in i]
    assert copies and len(copies) == len(train["images"]) - len(plain_train["images"])
    for c in copies:
        first = by_id[c["repeat_of"]]
        assert first["id"] < c["id"] and "repeat_of" not in first
        assert (first["source_image_id"], first["file_name"]) == (c["source_image_id"], c["file_name"])
    # Annotations follow their copies.
    per_image = cc.annotations_by_image(train)
    assert all(len(per_image[c["id"]]) == len(per_image[c["repeat_of"]]) for c in copies)
