"""The synthetic pool end to end (classic renderer): COCO as pycocotools reads it, annotations that
follow the written pixels, balance of partial images, stable bytes; and the GAN bank's wiring."""

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from pycocotools.coco import COCO

from billetjax import coco as cc
from billetjax.synth.embed import EmbedParams, annotation_of, compose_billet
from billetjax.synth.masks import MaskParams
from billetjax.synth.pool import _stamp, bank_plan, load_banks, make_bank, make_masks, make_pool, plan_pool
from billetjax.vocabulary import DIGIT_CATEGORIES

SIZE = 256
STAMP_PX = 64
MARGIN = 0.15
N_IMAGES = 12


@pytest.fixture(scope="module")
def config_with(make_config):
    """A function: config.yaml at this file's sizes with `synth` keys changed (and, if given, the
    experiments), validated."""

    def build(experiments: dict | None = None, **synth) -> dict:
        overrides = {"seed": 7, "image_size_px": SIZE,
                     "synth": {"method": "classic", "checkpoints": [100, 200], "images": N_IMAGES,
                               "characters_per_image": 10, "partial_image_fraction": 0.5, **synth}}
        if experiments is not None:
            overrides["experiments"] = experiments
        return make_config(overrides)

    return build


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
def pool(tmp_path_factory, config_with):
    root = tmp_path_factory.mktemp("synth")
    config = config_with()
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
    masks, embed = MaskParams.from_config(pool["config"]["synth"]), EmbedParams.from_config(pool["config"]["synth"])
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


# ----------------------------------------------------------------------------- other alphabets

# A user's categories: any ids (0 included), names that are letters and digits, listed out of order.
MIXED = [{"id": 2, "name": "B", "supercategory": "character"}, {"id": 0, "name": "A"}, {"id": 1, "name": "7"}]


def _best_glyph(stamp, candidates: dict) -> str:
    """The candidate whose glyph, framed like the stamp, overlaps the stamp's silhouette most."""
    from billetjax.glyphs import rasterise
    from billetjax.synth.masks import crop_transform, silhouette_of

    scores = {}
    for name, shape in candidates.items():
        framed = shapely.affinity.affine_transform(shape, crop_transform(shape, STAMP_PX, MARGIN))
        ref = rasterise(silhouette_of(framed), STAMP_PX) > 0
        seen = stamp.silhouette > 0
        scores[name] = (ref & seen).sum() / (ref | seen).sum()
    return max(scores, key=scores.get)


@pytest.fixture(scope="module")
def mixed_pool(tmp_path_factory, config_with):
    root = tmp_path_factory.mktemp("mixed")
    config = config_with(images=6, characters_per_image=6)
    surfaces = _surfaces(root / "surfaces", n=2)
    bank = root / "classic" / "stamps_classic.npz"
    make_bank(config, "classic", bank, STAMP_PX, MARGIN, categories=MIXED)
    out = root / "classic" / "pool.json"
    make_pool(config, [bank], surfaces, out, root / "classic" / "images", method="classic", categories=MIXED)
    return {"config": config, "json": out, "bank": bank, "surfaces": surfaces, "root": root}


def test_mixed_alphabet_pool_has_exactly_the_real_categories(mixed_pool):
    data = cc.load(mixed_pool["json"], check_images=True)
    assert sorted(data["categories"], key=lambda c: c["id"]) == sorted(MIXED, key=lambda c: c["id"])
    used = {a["category_id"] for a in data["annotations"]}
    assert used == {0, 1, 2}
    names = cc.category_names(data)
    per_image = cc.annotations_by_image(data)
    for image in data["images"]:
        assert set(image["billet_id"]) <= {"A", "7", "B"}
        assert image["billet_id"] == "".join(names[a["category_id"]] for a in per_image[image["id"]])


def test_mixed_alphabet_stamps_cycle_over_the_names_in_id_order(mixed_pool):
    bank = np.load(mixed_pool["bank"])
    expected = ["A", "7", "B"]  # ids 0, 1, 2
    assert bank["labels"].tolist() == [expected[k % 3] for k in bank["stamp_index"]]


def test_mixed_alphabet_masks_show_their_own_glyph(mixed_pool):
    from billetjax.glyphs import glyph

    indices = np.arange(12)
    stamps = make_masks(mixed_pool["config"], indices, STAMP_PX, MARGIN, categories=MIXED)
    plan = bank_plan(mixed_pool["config"])
    candidates = {c: glyph(c) for c in "A7B"}
    whole = [s for k, s in zip(indices, stamps) if not plan.partial[k]]
    assert len(whole) >= 8
    for stamp in whole:
        assert _best_glyph(stamp, candidates) == stamp.label


def test_default_categories_are_the_digits_in_id_order(config_with):
    """No categories given = the simulated digits; a shuffled digit list gives the same stamps, as
    the study's stamp k is the digit k mod 10 (the default study's banks stay as they were)."""
    config = config_with()
    indices = np.arange(0, 40, 3)
    default = make_masks(config, indices, STAMP_PX, MARGIN)
    shuffled = list(reversed(DIGIT_CATEGORIES))
    given = make_masks(config, indices, STAMP_PX, MARGIN, categories=shuffled)
    assert [s.label for s in default] == [str(k % 10) for k in indices]
    for a, b in zip(default, given):
        assert a.label == b.label
        np.testing.assert_array_equal(a.mask, b.mask)


def test_own_glyph_file_via_synth_glyphs(tmp_path, config_with):
    """A category the built-in set lacks is drawn from the plant's glyph file (synth.glyphs), and
    refused by name without it."""
    from shapely.geometry import Polygon

    hash_glyph = {"exterior": [[0.0, 0.3], [0.6, 0.3], [0.6, 0.5], [0.3, 1.0], [0.0, 0.5]], "holes": []}
    glyph_file = tmp_path / "plant_glyphs.json"
    glyph_file.write_text(json.dumps({"glyphs": {"#": hash_glyph}}))
    categories = [{"id": 1, "name": "#"}, {"id": 2, "name": "1"}]
    config = config_with(glyphs=str(glyph_file))
    indices = np.arange(8)
    stamps = make_masks(config, indices, STAMP_PX, MARGIN, categories=categories)
    assert [s.label for s in stamps] == ["#", "1"] * 4
    plan = bank_plan(config)
    from billetjax.glyphs import glyph

    candidates = {"#": Polygon(hash_glyph["exterior"]), "1": glyph("1"), "7": glyph("7")}
    for k, stamp in zip(indices, stamps):
        if not plan.partial[k]:
            assert _best_glyph(stamp, candidates) == stamp.label
    with pytest.raises(ValueError, match=r"categories \['#'\] have no glyph.*synth.glyphs"):
        make_masks(config_with(), indices, STAMP_PX, MARGIN, categories=categories)


def test_pool_refuses_banks_of_other_categories(mixed_pool, tmp_path):
    with pytest.raises(ValueError, match=r"hold characters \['A', 'B'\] that are not categories"):
        make_pool(mixed_pool["config"], [mixed_pool["bank"]], mixed_pool["surfaces"], tmp_path / "pool.json",
                  tmp_path / "images", method="classic")


def test_letters_of_a_simulated_pool_reach_the_experiment_set(tmp_path, config_with):
    """A plant whose IDs have letters, end to end: a real pool with letter categories -> stamps
    and a synthetic pool of those categories -> an experiment set mixing both (which refused pools
    whose categories differ)."""
    from billetjax.data.billet_ids import IdScheme
    from billetjax.data.pools import render_pool
    from billetjax.experiments import make_experiment_set, table1
    from billetjax.synth.pool import real_categories

    real_json = tmp_path / "real" / "train_pool.json"
    plan = [("A", "well"), ("B", "well"), ("A", "well"), ("B", "poor")]
    render_pool(plan, real_json, tmp_path / "real" / "train", SIZE, seed=3, prefix="train",
                id_scheme=IdScheme("KZ", (0, 6)))
    categories = real_categories(real_json)
    assert [c["name"] for c in categories] == list("0123456789KZ")
    config = config_with(experiments={"images": 4, "validation_fraction": 0.25, "sets": [{"synthetic_pct": 50}]},
                     images=4, characters_per_image=12)
    bank = tmp_path / "classic" / "stamps_classic.npz"
    make_bank(config, "classic", bank, STAMP_PX, MARGIN, categories=categories)
    assert set(np.load(bank)["labels"].tolist()) == set("0123456789KZ")
    pool = tmp_path / "classic" / "pool.json"
    make_pool(config, [bank], _surfaces(tmp_path / "surfaces", n=2), pool, tmp_path / "classic" / "images",
              method="classic", categories=categories)
    train, val = tmp_path / "exp" / "train.json", tmp_path / "exp" / "val.json"
    row = table1(config["experiments"], config["synth"]["method"])[0]
    make_experiment_set(row, config, 0, real_json, pool, train, val)
    data = cc.load(train)
    assert cc.category_names(data) == {c["id"]: c["name"] for c in categories}
    assert {img["source"] for img in data["images"]} == {"real", "synthetic"}
    names = cc.category_names(data)
    assert {names[a["category_id"]] for a in data["annotations"]} & {"K", "Z"}
