"""The simulated real pools: proportions, exact annotations, determinism, pycocotools read-back."""

import hashlib
from collections import Counter

import numpy as np
import pytest
from pycocotools.coco import COCO

from billetjax import coco as cc
from billetjax.data.pools import simulate_real_pools, plan_test_pool, plan_train_pool
from billetjax.data.report import statistics
from billetjax.data.stamps import make_stamp_pairs, make_surfaces

@pytest.fixture(scope="module")
def config(make_config):
    return make_config({"seed": 11, "image_size_px": 128, "data": {
        "source": "simulate",
        "simulate": {"train_pool_images": 30, "site_a_fraction": 1 / 3, "poor_fraction": 0.1,
                     "partial_fraction": 0.14, "surfaces": 4,
                     "test_pool": {"well": 4, "poor": 3, "partial": 3}},
        "stamps": {"size_px": 32, "train": 40, "val": 10, "margin": 0.15},
    }})


def tree_digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def pools(tmp_path_factory, config):
    root = tmp_path_factory.mktemp("pools")
    simulate_real_pools(config, root / "real/train_pool.json", root / "real/test_pool.json", workers=2)
    return root


def test_plans_have_the_configured_proportions():
    plan = plan_train_pool(300, 1 / 3, 0.10, 0.14, seed=0)
    counts = Counter(plan)
    assert sum(v for (s, _), v in counts.items() if s == "A") == 100
    assert sum(v for (_, vis), v in counts.items() if vis != "well") == pytest.approx(0.24 * 300, abs=2)
    test = Counter(plan_test_pool(200, 83, 117, seed=0))
    assert test[("A", "well")] == test[("B", "well")] == 100
    assert test[("A", "poor")] + test[("A", "partial")] == 100  # set 3 balanced by site


def test_pools_read_back_and_annotations_are_exact(pools):
    for name, n in (("train_pool", 30), ("test_pool", 10)):
        path = pools / "real" / f"{name}.json"
        data = cc.load(path, check_images=True)
        assert len(data["images"]) == n
        api = COCO(str(path))
        assert len(api.getAnnIds()) == len(data["annotations"]) > 0
        for ann in data["annotations"]:
            poly = cc.coco_to_polygon(ann["segmentation"][0])
            assert len(poly) >= 3
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0
            # The box is tight around its polygon (within rounding) and inside the image.
            assert np.allclose([x, y, x + w, y + h], [*poly.min(0), *poly.max(0)], atol=1.0)
            assert x >= -1 and y >= -1 and x + w <= 129 and y + h <= 129
        ids = {img["id"] for img in data["images"]}
        assert len(ids) == n


def test_pool_proportions_and_character_counts(pools):
    train = cc.load(pools / "real/train_pool.json")
    assert cc.split_counts(train, "site")["A"] == 10
    # Rounded per site: A 10 -> 1 poor + 1 partial, B 20 -> 2 poor + 3 partial (24 % overall).
    assert sum(img["visibility"] != "well" for img in train["images"]) == 7
    per_image = cc.annotations_by_image(train)
    for img in train["images"]:
        n = len(per_image[img["id"]])
        assert len(img["billet_id"]) in (11, 12)
        if img["visibility"] == "well":
            assert n == len(img["billet_id"])
        else:
            assert 0 < n <= len(img["billet_id"])
    test = cc.load(pools / "real/test_pool.json")
    assert Counter(img["visibility"] for img in test["images"]) == {"well": 4, "poor": 3, "partial": 3}
    assert not {img["billet_id"] + img["file_name"] for img in test["images"]} & {
        img["billet_id"] + img["file_name"] for img in train["images"]}


def test_test_pool_ids_come_from_heats_with_their_lexicon(pools):
    from billetjax.data.lexicon import load_lexicon

    test = cc.load(pools / "real/test_pool.json")
    lexicon = load_lexicon(pools / "real/test_lexicon.csv")
    for img in test["images"]:
        assert img["billet_id"].startswith(img["batch"]) and img["billet_id"] in lexicon[img["batch"]]
    # consecutive billets share their heat: fewer heats than billets
    assert len({img["batch"] for img in test["images"]}) < len(test["images"])


def test_same_seed_same_bytes_any_worker_count(pools, tmp_path, config):
    simulate_real_pools(config, tmp_path / "real/train_pool.json", tmp_path / "real/test_pool.json", workers=1)
    assert tree_digest(tmp_path / "real") == tree_digest(pools / "real")


def test_stamp_pairs_surfaces_and_statistics(pools, tmp_path, config):
    make_stamp_pairs(pools / "real/train_pool.json", tmp_path / "train.npz", tmp_path / "val.npz", 32, 40, 10, 0.15, 5)
    pairs = np.load(tmp_path / "train.npz")
    assert pairs["images"].shape == (40, 32, 32, 3)
    assert set(pairs["labels"]) <= set("0123456789")
    # A stamp is a shaded depression: its mask covers a sizeable, not total, part of the crop.
    cover = (pairs["masks"] > 0).mean(axis=(1, 2))
    assert 0.1 < np.median(cover) < 0.8
    index = make_surfaces(config, pools / "real/train_pool.json", tmp_path / "surfaces")
    assert len(index) == 4 and {r["site"] for r in index} <= {"A", "B"}
    assert cc.read_image(tmp_path / "surfaces" / index[0]["file_name"]).shape == (128, 128, 3)
    stats = statistics({"train_pool": pools / "real/train_pool.json"})
    total = stats[(stats.site == "all")].iloc[0]
    assert total.images == 30 and total.characters == len(cc.load(pools / "real/train_pool.json")["annotations"])
    assert stats[stats.site != "all"].images.sum() == 30
