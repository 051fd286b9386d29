"""The synthetic pool end to end (classic renderer): COCO as pycocotools reads it, annotations that
follow the written pixels, balance of partial images, stable bytes; and the GAN bank's wiring."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from billetjax import coco as cc
from billetjax.synth.embed import EmbedParams, annotation_of, compose_billet
from billetjax.synth.masks import MaskParams
from billetjax.synth.pool import _stamp, bank_plan, load_banks, make_bank, make_masks, make_pool, plan_pool

SIZE = 256
STAMP_PX = 64
MARGIN = 0.15
N_IMAGES = 12


def _config(**synth):
    return {"seed": 7, "image_size_px": SIZE,
            "synth": {"method": "classic", "checkpoints": [100, 200], "images": N_IMAGES,
                      "characters_per_image": 10, "partial_image_fraction": 0.5, **synth}}


def _surfaces(folder: Path, n: int = 5) -> Path:
    """Small blank 'billet faces' of our own: smooth noise in steel tones, two sites."""
    import cv2

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    index = []
    for i in range(n):
        face = rng.uniform(70, 150, 3) + cv2.GaussianBlur(rng.normal(0, 30, (SIZE, SIZE, 3)), (0, 0), 4)
        cc.write_image(folder / f"face_{i}.png", np.clip(face, 0, 255).astype(np.uint8))
        index.append({"file_name": f"face_{i}.png", "site": "AB"[i % 2]})
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def _mask_box(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    config = _config()
    surfaces = _surfaces(root / "surfaces")
    bank = root / "classic" / "stamps_classic.npz"
    make_bank(config, "classic", bank, STAMP_PX, MARGIN)
    out = root / "classic" / "pool.json"
    make_pool(config, [bank], surfaces, out, root / "classic" / "images", method="classic", workers=1)
    return {"root": root, "config": config, "json": out, "bank": bank, "surfaces": surfaces}


def test_pycocotools_reads_the_pool(pool):
    api = COCO(str(pool["json"]))
    assert len(api.getImgIds()) == N_IMAGES
    assert len(api.getAnnIds()) == N_IMAGES * 10
    data = cc.load(pool["json"], check_images=True, categories=[str(d) for d in range(10)])
    assert {img["source"] for img in data["images"]} == {"synthetic"}
    assert {img["site"] for img in data["images"]} <= {"A", "B"}


def test_categories_are_the_digits_without_zero_or_duplicates(pool):
    data = json.loads(pool["json"].read_text())
    ids = [c["id"] for c in data["categories"]]
    names = [c["name"] for c in data["categories"]]
    assert sorted(ids) == list(range(1, 11)) and len(set(names)) == 10
    assert {c["id"]: c["name"] for c in data["categories"]} == {d + 1: str(d) for d in range(10)}
    assert all(a["category_id"] != 0 for a in data["annotations"])


def test_boxes_have_area_and_polygons_stay_inside(pool):
    data = json.loads(pool["json"].read_text())
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        assert w >= 1 and h >= 1 and ann["area"] > 0 and ann["iscrowd"] == 0
        assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
        assert ann["segmentation"]
        for poly in ann["segmentation"]:
            pts = np.asarray(poly).reshape(-1, 2)
            assert len(pts) >= 3
            assert (pts >= [x - 1e-6, y - 1e-6]).all() and (pts <= [x + w + 1e-6, y + h + 1e-6]).all()


def test_half_the_images_carry_a_partial_character(pool):
    data = json.loads(pool["json"].read_text())
    per_image = cc.annotations_by_image(data)
    names = cc.category_names(data)
    masks, embed = MaskParams(), EmbedParams()
    partial = [img for img in data["images"] if img["visibility"] == "partial"]
    assert len(partial) == N_IMAGES // 2
    for img in data["images"]:
        anns = per_image[img["id"]]
        fractions = [a["visible_fraction"] for a in anns]
        assert img["billet_id"] == "".join(names[a["category_id"]] for a in anns)
        if img["visibility"] == "partial":
            assert min(fractions) <= embed.partial_visible[1] + 0.01
        else:
            assert img["visibility"] == "well" and len(anns) == 10
            assert min(fractions) >= masks.min_area_fraction - 0.02


def test_annotations_follow_the_written_pixels(pool):
    """Recompose some images: same pixels as written, and every written box within 1 px of the box
    of the stamp's warped mask (pixel path: the crop's silhouette warped like its colours)."""
    config, data = pool["config"], json.loads(pool["json"].read_text())
    surfaces = json.loads((pool["surfaces"] / "index.json").read_text())
    bank = load_banks([pool["bank"]])
    plans = plan_pool(config, bank, len(surfaces))
    per_image = cc.annotations_by_image(data)
    params = EmbedParams.from_config(config["synth"])
    for plan in plans[:8]:
        image = data["images"][plan.index]
        surface = cc.read_image(pool["surfaces"] / surfaces[plan.surface]["file_name"])
        texture = cc.read_image(pool["surfaces"] / surfaces[plan.texture]["file_name"])
        billet = compose_billet(surface, texture, [_stamp(bank, k) for k in plan.stamps],
                                np.random.default_rng(plan.seed), params, plan.partial_mode, plan.partial_targets)
        np.testing.assert_array_equal(billet.image, cc.read_image(cc.image_path(pool["json"], image)))
        written = per_image[image["id"]]
        assert len(written) == len(billet.characters)
        for ann, char in zip(written, billet.characters):
            x, y, w, h = ann["bbox"]
            bx0, by0, bx1, by1 = _mask_box(char.mask)
            assert max(abs(bx0 - x), abs(by0 - y), abs(bx1 - x - w), abs(by1 - y - h)) <= 1.0
            assert ann == {**ann, **annotation_of(char)}


def test_same_seed_same_bytes_whatever_the_workers(pool, tmp_path):
    out = tmp_path / "classic" / "pool.json"
    make_pool(pool["config"], [pool["bank"]], pool["surfaces"], out, tmp_path / "classic" / "images",
              method="classic", workers=2)
    assert out.read_bytes() == pool["json"].read_bytes()
    for image in json.loads(out.read_text())["images"]:
        assert cc.image_path(out, image).read_bytes() == cc.image_path(pool["json"], image).read_bytes()


def test_gan_banks_split_the_classic_stamps(pool):
    """Checkpoint i renders stamps [i n, (i+1) n): with one seed both methods embed the same masks."""
    config = pool["config"]
    plan = bank_plan(config)
    parts = [plan.indices("gan", c, config["synth"]["checkpoints"]) for c in config["synth"]["checkpoints"]]
    np.testing.assert_array_equal(np.concatenate(parts), plan.indices("classic", None, []))
    classic = np.load(pool["bank"])
    again = make_masks(config, parts[1][:3], STAMP_PX, MARGIN)
    for k, stamp in zip(parts[1][:3], again):
        np.testing.assert_array_equal(stamp.mask, classic["masks"][k])
    with pytest.raises(ValueError, match="not in synth.checkpoints"):
        plan.indices("gan", 300, config["synth"]["checkpoints"])


def test_masks_do_not_depend_on_the_workers(pool):
    indices = np.arange(70)
    one = make_masks(pool["config"], indices, STAMP_PX, MARGIN, workers=1)
    two = make_masks(pool["config"], indices, STAMP_PX, MARGIN, workers=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a.mask, b.mask)
