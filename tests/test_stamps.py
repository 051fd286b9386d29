"""Stamp pairs from multi-polygon and box-only annotations, inpainting of boxes, the box-mask figure.

Stamp pairs of the simulated pools (one polygon per character) are checked in test_data_pools.py,
crop framing and inpainting of a user's polygons in test_data_import.py.
"""

import numpy as np
import pytest

from billetjax import coco as cc
from billetjax.data import box_masks
from billetjax.data.simulate import render_billet
from billetjax.data.stamps import crop_box, crop_pair, inpaint_stamps, make_stamp_pairs, make_surfaces, segment_stamp
from billetjax.vocabulary import UNKNOWN

MARGIN = 0.15


def iou(a, b):
    a, b = a > 0, b > 0
    return (a & b).sum() / (a | b).sum()


def test_mask_of_two_polygons_is_their_union():
    # Two overlapping rectangles whose union spans x, y in [10, 30): with margin 0 and a 20 px crop
    # the crop is the image shifted by 10 px, one crop pixel per image pixel.
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    tall = np.array([[10, 10], [20, 10], [20, 30], [10, 30]], float)   # x 10-20, y 10-30
    wide = np.array([[14, 16], [30, 16], [30, 22], [14, 22]], float)   # x 14-30, y 16-22
    crop, mask = crop_pair(image, [tall, wide], 20, margin=0.0)
    # In crop pixels tall covers x 0-10, y 0-20 and wide x 4-20, y 6-12. OpenCV's fillPoly (as
    # crop_pair has always used it) also fills the pixels on a right or bottom edge: a 10-wide box
    # fills 11 columns; the crop's own edge cuts the rest.
    expected = np.zeros((20, 20), bool)
    expected[0:20, 0:11] = True   # tall: columns 0-10, rows 0-19
    expected[6:13, 4:20] = True   # wide: columns 4-19, rows 6-12
    assert expected.sum() == 220 + 112 - 49  # hand count: the overlap (columns 4-10, rows 6-12) once
    np.testing.assert_array_equal(mask > 0, expected)  # the overlap is filled, not an even-odd hole
    assert set(np.unique(mask)) == {0, 255}
    np.testing.assert_array_equal(crop, image[10:30, 10:30])
    # A single outline given alone or as a one-item list is the same pair.
    for a, b in zip(crop_pair(image, tall, 20, 0.0), crop_pair(image, [tall], 20, 0.0)):
        np.testing.assert_array_equal(a, b)


def simulated_stamps(n_billets=8, size_px=64):
    """(polygon mask, box-segmented mask, box rectangle, box rectangle grown by a pixel) of every
    character on simulated billets of both sites, well and poorly visible."""
    out = []
    looks = [("A", "well"), ("B", "well"), ("A", "poor"), ("B", "poor")]
    for k in range(n_billets):
        site, vis = looks[k % 4]
        billet = render_billet(np.random.default_rng(k), site=site, visibility=vis, size_px=256)
        for char in billet.characters:
            _, reference = crop_pair(billet.image, char.polygon, size_px, MARGIN)
            _, segmented = crop_box(billet.image, char.bbox, size_px, MARGIN)
            # The box in the crop, by hand: centred, its longer side 1 / (1 + 2 margin) of the crop.
            x, y, w, h = char.bbox
            scale = size_px / (max(w, h) * (1 + 2 * MARGIN))
            offsets = np.abs(np.arange(size_px) + 0.5 - size_px / 2)
            rect = (offsets[:, None] < h * scale / 2) & (offsets[None, :] < w * scale / 2)
            # The same box a pixel wider on each side: polygon masks take their edge pixels too.
            grown = (offsets[:, None] < h * scale / 2 + 1) & (offsets[None, :] < w * scale / 2 + 1)
            out.append((reference, segmented, rect, grown))
    return out


def test_box_only_masks_match_the_polygons_of_simulated_stamps():
    stamps = simulated_stamps()
    assert len(stamps) > 60
    seg_iou = np.mean([iou(seg, ref) for ref, seg, _, _ in stamps])
    box_iou = np.mean([iou(rect, ref) for ref, _, rect, _ in stamps])
    # Measured: 0.65-0.68 on four such samples of 8 billets (0.69 on 668 stamps of a pool), the
    # box rectangle itself about 0.57.
    assert seg_iou > 0.60, seg_iou
    assert seg_iou > box_iou + 0.05, (seg_iou, box_iou)
    for ref, seg, rect, grown in stamps:
        assert set(np.unique(seg)) <= {0, 255}
        assert not (seg > 0)[~grown].any()  # nothing outside the box


def test_segmentation_is_deterministic_and_falls_back_on_a_flat_box():
    billet = render_billet(np.random.default_rng(3), site="B", visibility="poor", size_px=256)
    char = billet.characters[0]
    first = crop_box(billet.image, char.bbox, 64, MARGIN)
    again = crop_box(billet.image.copy(), list(char.bbox), 64, MARGIN)
    for a, b in zip(first, again):
        assert a.tobytes() == b.tobytes()
    flat = np.full((32, 32, 3), 128, np.uint8)
    mask = segment_stamp(flat, (8.0, 4.0, 24.0, 28.0))
    # Nothing to see: the ellipse inscribed in the box (area pi * 8 * 12 = 301.6 px).
    assert abs((mask > 0).sum() - np.pi * 8 * 12) < 20 and mask[16, 16] == 255 and mask[4, 8] == 0


def bbox_of_polygon(polygon: np.ndarray) -> list[float]:
    """The tight [x, y, w, h] box of an outline, rounded to 0.01 px as our COCO writers round."""
    (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
    return [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)]


def write_pool(folder, n_images=6):
    """A COCO train pool of simulated billets, images without site or visibility, characters
    annotated in turn as one polygon, as two overlapping pieces, and as a box only."""
    data = cc.empty_dataset()
    names = {c["name"]: c["id"] for c in data["categories"]}
    kinds, ann_id = {}, 1
    for i in range(n_images):
        billet = render_billet(np.random.default_rng(50 + i), site="AB"[i % 2], visibility="well", size_px=128)
        cc.write_image(folder / f"b{i}.png", billet.image)
        data["images"].append({"id": i + 1, "file_name": f"b{i}.png", "width": 128, "height": 128})
        for char in billet.characters:
            kind = ("polygon", "pieces", "box")[ann_id % 3]
            poly = char.polygon.astype(np.float64)
            if kind == "polygon":
                seg = [cc.polygon_to_coco(poly)]
            elif kind == "pieces":
                # The outline split at its centre line into two halves that overlap by 1 px.
                mid = (poly[:, 1].min() + poly[:, 1].max()) / 2
                x0, x1 = poly[:, 0].min(), poly[:, 0].max()
                top = np.array([[x0, poly[:, 1].min()], [x1, poly[:, 1].min()], [x1, mid + 1], [x0, mid + 1]])
                bottom = np.array([[x0, mid - 1], [x1, mid - 1], [x1, poly[:, 1].max()], [x0, poly[:, 1].max()]])
                seg = [cc.polygon_to_coco(top), cc.polygon_to_coco(bottom)]
            else:
                seg = []
            data["annotations"].append({"id": ann_id, "image_id": i + 1, "category_id": names[char.label],
                                        "bbox": bbox_of_polygon(poly), "segmentation": seg, "iscrowd": 0})
            kinds[ann_id] = kind
            ann_id += 1
    cc.save(folder / "train_pool.json", data)
    return data, kinds


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool")
    data, kinds = write_pool(folder)
    return folder, data, kinds


def test_pairs_of_polygons_pieces_and_boxes(pool, tmp_path):
    folder, data, kinds = pool
    make_stamp_pairs(folder / "train_pool.json", tmp_path / "train.npz", tmp_path / "val.npz", 32, 30, 10, MARGIN, 4)
    train = np.load(tmp_path / "train.npz")
    assert {"images", "masks", "labels", "sites", "visibility", "image_ids", "annotation_ids",
            "mask_source"} <= set(train.files)
    # Images without site or visibility are used, and read as one site and one visibility class.
    assert set(train["sites"]) == {UNKNOWN} and set(train["visibility"]) == {UNKNOWN}
    anns = {a["id"]: a for a in data["annotations"]}
    for i, ann_id in enumerate(train["annotation_ids"]):
        kind = kinds[int(ann_id)]
        assert train["mask_source"][i] == ("box" if kind == "box" else "polygon")
        ann = anns[int(ann_id)]
        image = cc.read_image(folder / f"b{ann['image_id'] - 1}.png")
        if kind == "pieces":
            # The union of the two halves is the outline's box, drawn as one polygon.
            pts = np.concatenate([cc.coco_to_polygon(p) for p in ann["segmentation"]]).astype(np.float64)
            (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
            whole = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
            crop, mask = crop_pair(image, whole, 32, MARGIN)
            np.testing.assert_array_equal(train["images"][i], crop)
            np.testing.assert_array_equal(train["masks"][i], mask)
        elif kind == "box":
            crop, mask = crop_box(image, ann["bbox"], 32, MARGIN)
            np.testing.assert_array_equal(train["images"][i], crop)
            np.testing.assert_array_equal(train["masks"][i], mask)
    assert (train["mask_source"] == "box").sum() >= 5 and (train["mask_source"] == "polygon").sum() >= 10
    # Same pool, same seed: the same bytes.
    make_stamp_pairs(folder / "train_pool.json", tmp_path / "again.npz", tmp_path / "val2.npz", 32, 30, 10, MARGIN, 4)
    again = np.load(tmp_path / "again.npz")
    for key in train.files:
        assert train[key].tobytes() == again[key].tobytes(), key


def test_partial_billets_still_left_out(pool, tmp_path):
    folder, data, _ = pool
    data = {**data, "images": [{**img, "visibility": "partial" if img["id"] == 1 else "well", "site": "A"}
                               for img in data["images"]]}
    cc.save(folder / "graded.json", data)
    make_stamp_pairs(folder / "graded.json", tmp_path / "train.npz", tmp_path / "val.npz", 32, 30, 10, MARGIN, 4)
    for split in ("train", "val"):
        pairs = np.load(tmp_path / f"{split}.npz")
        assert 1 not in set(pairs["image_ids"]) and set(pairs["visibility"]) == {"well"}


def test_inpainting_covers_boxes_and_pieces():
    image = np.full((60, 60, 3), 180, np.uint8)
    image[10:30, 8:18] = 20    # a stamp annotated by its box only
    image[35:55, 30:40] = 20   # a stamp annotated in two pieces
    box = np.array([[8, 10], [18, 10], [18, 30], [8, 30]], float)
    pieces = [np.array([[30, 35], [40, 35], [40, 45], [30, 45]], float),
              np.array([[30, 45], [40, 45], [40, 55], [30, 55]], float)]
    clean = inpaint_stamps(image, [box, pieces])
    assert clean[10:30, 8:18].mean() > 150 and clean[35:55, 30:40].mean() > 150
    # The untouched surface stays as it was.
    assert (clean[:, 50:] == 180).all()


def test_a_folder_of_surfaces_takes_the_pools_sites(pool, tmp_path, make_config):
    """Surfaces from data.coco.surfaces: the train pool's site mix, or UNKNOWN for every surface of
    a pool without sites (the word whole, as the stamp pairs read it)."""
    folder, data, _ = pool
    blanks = tmp_path / "blanks"
    blanks.mkdir()
    for i in range(6):
        cc.write_image(blanks / f"s{i}.png", np.full((40, 50, 3), 100 + 10 * i, np.uint8))
    config = make_config({"image_size_px": 128, "seed": 1, "data": {"source": "coco", "coco": {"surfaces": str(blanks)}}})
    index = make_surfaces(config, folder / "train_pool.json", tmp_path / "without_sites")
    assert [r["site"] for r in index] == [UNKNOWN] * 6
    with_sites = dict(data, images=[dict(img, site="AB"[i % 2]) for i, img in enumerate(data["images"])])
    cc.save(tmp_path / "with_sites.json", with_sites)
    for img in with_sites["images"]:
        cc.write_image(tmp_path / img["file_name"], cc.read_image(folder / img["file_name"]))
    index = make_surfaces(config, tmp_path / "with_sites.json", tmp_path / "with")
    assert {r["site"] for r in index} <= {"A", "B"} and len(index) == 6


def test_inpainted_surfaces_of_a_pool_with_box_only_stamps(pool, tmp_path, make_config):
    folder, data, kinds = pool
    config = make_config({"image_size_px": 128, "seed": 1, "data": {"source": "coco"}})
    index = make_surfaces(config, folder / "train_pool.json", tmp_path / "surfaces")
    assert len(index) == len(data["images"]) and {r["site"] for r in index} == {UNKNOWN}
    by_id = {r["source_image_id"]: r for r in index}
    dark = []
    for ann in data["annotations"]:
        if kinds[ann["id"]] != "box":
            continue
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        before = cc.read_image(folder / f"b{ann['image_id'] - 1}.png")[y:y + h, x:x + w].astype(float)
        after = cc.read_image(tmp_path / "surfaces" / by_id[ann["image_id"]]["file_name"])[y:y + h, x:x + w].astype(float)
        # The stamp's shading is gone: the box is flatter than before.
        dark.append(after.std() < before.std())
    assert np.mean(dark) > 0.9


def texts_of(monkeypatch):
    """Capture the texts of the figure box_mask_figure saves."""
    seen = []
    real = box_masks.save_figure

    def spy(fig, path, **kwargs):
        seen.extend(t.get_text() for t in fig.texts)
        seen.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return real(fig, path, **kwargs)

    monkeypatch.setattr(box_masks, "save_figure", spy)
    return seen


def test_box_mask_figure_with_and_without_box_only_masks(pool, tmp_path, monkeypatch):
    import matplotlib.image

    folder, _, _ = pool
    make_stamp_pairs(folder / "train_pool.json", tmp_path / "train.npz", tmp_path / "val.npz", 32, 30, 10, MARGIN, 4)
    n_box = sum(int((np.load(tmp_path / f"{s}.npz")["mask_source"] == "box").sum()) for s in ("train", "val"))
    seen = texts_of(monkeypatch)
    assert box_masks.box_mask_figure([tmp_path / "train.npz", tmp_path / "val.npz"], tmp_path / "box.png", n=8) == n_box
    assert matplotlib.image.imread(tmp_path / "box.png").shape[2] in (3, 4)
    assert any(f"{n_box} of 40 pairs" in t for t in seen)
    # All-polygon pairs: the figure says that no mask was segmented.
    polygons = {k: v for k, v in np.load(tmp_path / "train.npz").items()}
    polygons["mask_source"] = np.full(len(polygons["masks"]), "polygon")
    np.savez_compressed(tmp_path / "polygons.npz", **polygons)
    seen.clear()
    assert box_masks.box_mask_figure(tmp_path / "polygons.npz", tmp_path / "none.png") == 0
    assert matplotlib.image.imread(tmp_path / "none.png").ndim == 3
    assert any("none" in t for t in seen) and any("no annotation is box-only" in t for t in seen)


def test_overlay_tints_only_the_mask():
    crop = np.full((4, 4, 3), 100, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 2] = 255
    out = box_masks.overlay(crop, mask)
    # 0.55 * 100 + 0.45 * (255, 40, 40), by hand.
    np.testing.assert_array_equal(out[1, 2], [170, 73, 73])
    assert (out[mask == 0] == 100).all()
