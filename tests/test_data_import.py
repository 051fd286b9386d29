"""Bring-your-own-data: import of a user's COCO pools, test sets, image content, bad input."""

import errno
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from billetjax import coco as cc
from billetjax.config import glyph_requirement
from billetjax.data import importer
from billetjax.data.importer import (ImportOptions, apply_exif_orientation, decode_frame, exif_point_map,
                                     fit_square, import_user_pools, resolve_image_file)
from billetjax.data.stamps import crop_pair, inpaint_stamps, make_stamp_pairs, make_surfaces
from billetjax.data.testsets import make_test_sets, select_test_sets

SIZE = 96
FIVE_SETS = ["all", "well visible", "poorly or partially visible", "poorly visible", "partially visible"]


def camera_frame(rng, w=192, h=108):
    """A 16:9 'camera frame' with dark rectangles as stamps; returns image and their polygons."""
    image = (rng.random((h, w, 3)) * 40 + 150).astype(np.uint8)
    polygons = []
    for k in range(4):
        x, y = 20 + 40 * k, 40
        image[y:y + 24, x:x + 14] = 30
        polygons.append([x, y, x + 14, y, x + 14, y + 24, x, y + 24])
    return image, polygons


def write_user_pool(folder, name, visibilities, seed=0, w=192, h=108, first_category=1, box_only=False):
    """A user's export: categories "0".."3" numbered from `first_category`, images under images/."""
    rng = np.random.default_rng(seed)
    data = {"images": [], "annotations": [],
            "categories": [{"id": first_category + k, "name": str(k)} for k in range(4)]}
    (folder / name / "images").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for i, vis in enumerate(visibilities, 1):
        image, polygons = camera_frame(rng, w, h)
        cc.write_image(folder / name / "images" / f"{i}.png", image)
        record = {"id": 10 * i, "file_name": f"images/{i}.png", "width": w, "height": h, "site": "AB"[i % 2]}
        if vis is not None:
            record["visibility"] = vis
        data["images"].append(record)
        for k, poly in enumerate(polygons):
            xs, ys = poly[0::2], poly[1::2]
            data["annotations"].append({"id": ann_id, "image_id": 10 * i, "category_id": first_category + k,
                                        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                                        "segmentation": [] if box_only else [poly], "iscrowd": 0, "area": 14 * 24})
            ann_id += 1
    path = folder / name / "result.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def user(tmp_path, make_config):
    """A user's train and test exports and a function making the config that imports them."""
    train = write_user_pool(tmp_path / "user", "train", ["well"] * 6 + ["poor", "partial"])
    test = write_user_pool(tmp_path / "user", "test", ["well"] * 4 + ["poor"] * 2 + ["partial"] * 2, seed=1)

    def config(coco=None, **top):
        paths = {"train": str(train), "train_images": str(train.parent), "test": str(test),
                 "test_images": str(test.parent)}
        return make_config({"image_size_px": SIZE, "data": {"source": "coco", "coco": {**paths, **(coco or {})}},
                            **top})

    return {"train": train, "test": test, "config": config, "out": tmp_path / "results"}


def run_import(user, config=None):
    out = user["out"]
    config = config or user["config"]()
    import_user_pools(config, out / "train_pool.json", out / "test_pool.json", out / "train", out / "test",
                      glyph_requirement(config))
    return cc.load(out / "train_pool.json", check_images=True), cc.load(out / "test_pool.json", check_images=True)


# ----------------------------------------------------------------------------- the round trip


def test_fit_square_pad_and_crop_transform_points_alike():
    image = np.zeros((108, 192, 3), np.uint8)
    image[50:60, 100:110] = 255
    for mode in ("pad", "crop"):
        out, scale, dx, dy = fit_square(image, SIZE, mode)
        assert out.shape == (SIZE, SIZE, 3)
        ys, xs = np.nonzero(out[..., 0] > 127)
        # The white square's centre maps as the transform says, within a pixel.
        assert abs(xs.mean() - (105 * scale + dx)) < 1.0 and abs(ys.mean() - (55 * scale + dy)) < 1.0
    with pytest.raises(ValueError, match="pad' or 'crop"):
        fit_square(image, SIZE, "stretch")


def test_import_user_pools_and_test_sets(user):
    train, test = run_import(user)
    assert len(train["images"]) == 8 and len(train["annotations"]) == 32
    assert all(img["width"] == SIZE and img["source"] == "real" for img in train["images"])
    # The user's ids and file names ride along, for messages and for the user's own look-ups.
    assert [img["user_image_id"] for img in train["images"]] == [10 * i for i in range(1, 9)]
    assert train["images"][0]["user_file_name"] == "images/1.png"
    assert train["annotations"][5]["user_annotation_id"] == 6
    # 192x108 padded to 96²: scale 0.5, dy = (96 - 54) // 2 = 21; the first stamp at (20, 40) 14x24.
    assert train["annotations"][0]["bbox"] == pytest.approx([10, 41, 7, 12], abs=0.01)
    COCO(str(user["out"] / "train_pool.json"))
    # Ids go on across the pools, so an id names one billet in either.
    assert min(img["id"] for img in test["images"]) == 9
    out = user["out"]
    sets = make_test_sets(out / "test_pool.json", [out / f"testset{k}.json" for k in range(1, 6)],
                          [{"name": n, "where": w} for n, w in zip(FIVE_SETS, [
                              {}, {"visibility": "well"}, {"visibility": ["poor", "partial"]},
                              {"visibility": "poor"}, {"visibility": "partial"}])])
    assert [len(s["images"]) for s in sets] == [8, 4, 4, 2, 2]
    ids = [{img["id"] for img in s["images"]} for s in sets]
    assert ids[0] == ids[1] | ids[2] and ids[2] == ids[3] | ids[4] and not ids[3] & ids[4]
    assert sets[1]["info"]["description"] == "test set 2: well visible"
    for k in range(1, 6):
        cc.load(out / f"testset{k}.json", check_images=True)


def test_category_ids_from_zero_and_a_super_category_without_annotations(user, caplog):
    """Label Studio numbers from 0; Roboflow adds a super-category 0 with no annotations."""
    train = json.loads(user["train"].read_text())
    for ann in train["annotations"]:
        ann["category_id"] -= 1  # "0".."3" -> ids 0..3
    for cat in train["categories"]:
        cat["id"] -= 1
    user["train"].write_text(json.dumps(train))
    test = json.loads(user["test"].read_text())
    test["categories"].append({"id": 0, "name": "billets", "supercategory": "none"})
    user["test"].write_text(json.dumps(test))
    caplog.set_level("INFO")
    train_pool, test_pool = run_import(user)
    # The train file's ids and names are kept; the test file's mapped onto them by name.
    assert train_pool["categories"] == train["categories"]
    assert test_pool["categories"] == train["categories"]
    names_by_user_ann = {a["id"]: a["category_id"] for a in test["annotations"]}
    for ann in test_pool["annotations"]:
        assert ann["category_id"] == names_by_user_ann[ann["user_annotation_id"]] - 1
    assert "without annotations ignored: 0 ('billets')" in caplog.text
    assert "mapped by name" in caplog.text


def test_test_category_unknown_to_training_is_refused(user):
    test = json.loads(user["test"].read_text())
    test["categories"].append({"id": 9, "name": "Z"})
    test["annotations"][0]["category_id"] = 9
    user["test"].write_text(json.dumps(test))
    with pytest.raises(cc.CocoError, match=r"categories \['Z'\] do not occur in the train pool"):
        run_import(user)


def test_box_only_and_several_polygons(user):
    train = json.loads(user["train"].read_text())
    train["annotations"][0]["segmentation"] = []  # a rectangle drawn in CVAT or Label Studio
    # Two polygons of one character: the left and right halves of the second stamp (x 60..74).
    train["annotations"][1]["segmentation"] = [[60, 40, 67, 40, 67, 64, 60, 64], [67, 40, 74, 40, 74, 64, 67, 64]]
    user["train"].write_text(json.dumps(train))
    pool, _ = run_import(user)
    first, second = pool["annotations"][:2]
    assert first["segmentation"] == [] and first["bbox"] == pytest.approx([10, 41, 7, 12], abs=0.01)
    assert first["area"] == pytest.approx(7 * 12, abs=0.01)
    # United: one outline of the whole 14x24 stamp, at half scale.
    assert len(second["segmentation"]) == 1 and second["area"] == pytest.approx(7 * 12, abs=0.01)
    assert second["bbox"] == pytest.approx([30, 41, 7, 12], abs=0.01)


def test_crop_mode_drops_characters_cut_away(user, caplog):
    pool, _ = run_import(user, user["config"]({"fit": "crop"}))
    # Centre crop of 108 rows x 108 cols out of 192: x from 42 to 150; stamps at x 20 and 140-154 are cut.
    assert 0 < len(pool["annotations"]) < 32
    assert "annotation id 1: less than 30 % of it stays in the frame (data.coco.fit: crop); dropped" in caplog.text


def test_missing_site_and_visibility_allowed_when_no_test_set_needs_them(user):
    for path in (user["train"], user["test"]):
        data = json.loads(path.read_text())
        for img in data["images"]:
            del img["site"], img["visibility"]
        path.write_text(json.dumps(data))
    with pytest.raises(cc.CocoError, match=r"testset2\) filters on 'visibility', which 8 of 8 test images lack"):
        run_import(user)
    config = user["config"]()
    config["data"]["test_sets"] = [{"name": "all", "where": {}}]  # as the schema fills it in
    train, test = run_import(user, config)
    assert "site" not in train["images"][0] and len(test["images"]) == 8


def test_stamp_pairs_and_inpainted_surfaces(user):
    run_import(user)
    out = user["out"]
    make_stamp_pairs(out / "train_pool.json", out / "train.npz", out / "val.npz", 32, 8, 4, 0.15, seed=3)
    train, val = np.load(out / "train.npz"), np.load(out / "val.npz")
    assert train["images"].shape == (8, 32, 32, 3) and train["masks"].shape == (8, 32, 32)
    assert val["images"].shape == (4, 32, 32, 3)
    assert not set(train["image_ids"]) & set(val["image_ids"])  # different billets
    # Stamps are dark in the image: inside the mask darker than outside.
    assert train["images"][train["masks"] > 0].mean() < train["images"][train["masks"] == 0].mean() - 50
    index = make_surfaces(user["config"](), out / "train_pool.json", out / "surfaces")
    assert len(index) == 8 and (out / "surfaces" / "index.json").is_file()
    blank = cc.read_image(out / "surfaces" / index[0]["file_name"])
    first = cc.load(out / "train_pool.json")["annotations"][0]
    x, y, w, h = (int(round(v)) for v in first["bbox"])
    # The stamp is gone: its box is now about as bright as the surface around it.
    assert blank[y:y + h, x:x + w].mean() > 120


def test_crop_pair_mask_matches_polygon():
    image = np.zeros((50, 50, 3), np.uint8)
    crop, mask = crop_pair(image, np.array([[10, 10], [20, 10], [20, 30], [10, 30]]), 32, margin=0.0)
    # Margin 0: the box's longer side (20) spans the crop; the 10-wide box covers half the width.
    assert mask.shape == (32, 32) and abs((mask > 0).sum() - 32 * 16) <= 40


def test_inpaint_removes_a_dark_blob():
    image = np.full((40, 40, 3), 180, np.uint8)
    image[10:30, 15:25] = 20
    clean = inpaint_stamps(image, [np.array([[15, 10], [25, 10], [25, 30], [15, 30]])])
    assert clean[10:30, 15:25].mean() > 150


# ----------------------------------------------------------------------------- test sets


def test_test_sets_are_filters_over_any_attribute(tmp_path, make_config):
    pool = {"images": [{"id": i, "visibility": v, "rust": r} for i, (v, r) in
                       enumerate([("well", True), ("poor", False), ("well", False), ("partial", 1)], 1)]}
    sets = make_config({"data": {"test_sets": [{"name": "all"}, {"name": "rusty", "where": {"rust": True}},
                                               {"name": "hard", "where": {"visibility": ["poor", "partial"]}}]}})
    # JSON's true is not 1: image 4's rust: 1 is not rusty.
    assert select_test_sets(pool, sets["data"]["test_sets"], "pool.json") == [[1, 2, 3, 4], [1], [2, 4]]
    with pytest.raises(cc.CocoError, match=r"\('none', testset1\) selects no test image"):
        select_test_sets(pool, [{"name": "none", "where": {"rust": "yes"}}], "pool.json")


# ----------------------------------------------------------------------------- image content


def test_exif_point_map_matches_how_opencv_applies_the_orientation(tmp_path):
    """Every EXIF orientation 1-8: a marked pixel lands where OpenCV (which applies the tag) puts it,
    for the point map and for the pixel transform alike."""
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[5, 10] = 255  # the pixel covering [10, 11) x [5, 6)
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.jpg"
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored).save(path, exif=exif, quality=100)
        shown = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(np.argwhere(shown > 127).mean(axis=0).round(),
                              np.argwhere(apply_exif_orientation(stored[..., 0], orientation) > 127)[0])
        x, y = exif_point_map(orientation, 60, 40) @ np.array([10.5, 5.5, 1.0])  # the pixel's centre
        row, col = np.argwhere(shown > 127).mean(axis=0)
        assert (x - 0.5, y - 0.5) == pytest.approx((col, row), abs=0.6), orientation


def _exif_jpeg(path, pixels, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=98)


@pytest.mark.parametrize("mode", ["displayed", "stored"])
def test_exif_rotated_square_image_boxes_follow_the_setting(user, mode):
    """A square JPEG tagged 'rotate 90° clockwise' (6) with one dark stamp at the top left of the
    stored rows: upright, it lies at the top right. With `stored` the box is turned with the pixels;
    with `displayed` the box was drawn on the upright image and stays."""
    stored = np.full((100, 100, 3), 200, np.uint8)
    stored[10:30, 5:15] = 20
    train = json.loads(user["train"].read_text())
    _exif_jpeg(user["train"].parent / "images" / "exif.jpg", stored, 6)
    train["images"].append({"id": 999, "file_name": "images/exif.jpg", "width": 100, "height": 100,
                            "site": "A", "visibility": "well"})
    upright_box = [70, 5, 20, 10]  # stored [5, 10, 10, 20] turned 90° clockwise: x' = 100 - y, y' = x
    train["annotations"].append({"id": 999, "image_id": 999, "category_id": 1, "segmentation": [],
                                 "bbox": upright_box if mode == "displayed" else [5, 10, 10, 20]})
    user["train"].write_text(json.dumps(train))
    pool, _ = run_import(user, user["config"]({"orientation": mode}))
    ann = next(a for a in pool["annotations"] if a["user_annotation_id"] == 999)
    image = cc.read_image(user["out"] / next(i["file_name"] for i in pool["images"] if i["user_image_id"] == 999))
    x, y, w, h = (int(round(v)) for v in ann["bbox"])
    assert ann["bbox"] == pytest.approx([v * SIZE / 100 for v in upright_box], abs=0.01)
    # The box holds the dark stamp in the written pixels.
    assert image[y + 1:y + h - 1, x + 1:x + w - 1].mean() < 60 < image.mean()


def test_exif_rotated_frame_declared_in_the_other_frame_is_refused_with_the_fix(user):
    stored = np.full((60, 100, 3), 200, np.uint8)
    train = json.loads(user["train"].read_text())
    _exif_jpeg(user["train"].parent / "images" / "exif.jpg", stored, 6)
    train["images"].append({"id": 999, "file_name": "images/exif.jpg", "width": 100, "height": 60})
    user["train"].write_text(json.dumps(train))
    with pytest.raises(cc.CocoError, match=r"image id 999 .*60x100 but the record says 100x60.*"
                                           r"orientation is 6: set data.coco.orientation: stored"):
        run_import(user)


def test_sixteen_bit_frames_by_their_bit_depth(tmp_path):
    twelve_bit = np.full((8, 8), 4000, np.uint16)  # a bright frame of a 12-bit camera
    cv2.imwrite(str(tmp_path / "f.png"), twelve_bit)
    auto = ImportOptions(SIZE, "pad", "displayed", None, 10**6)
    frame = decode_frame(tmp_path / "f.png", auto)
    assert frame.bit_depth == 12 and frame.pixels.dtype == np.uint8 and frame.pixels.max() == 4000 >> 4
    sixteen = decode_frame(tmp_path / "f.png", ImportOptions(SIZE, "pad", "displayed", 16, 10**6))
    assert sixteen.pixels.max() == 4000 >> 8
    with pytest.raises(cc.CocoError, match="value 4000 does not fit data.coco.bit_depth = 10"):
        decode_frame(tmp_path / "f.png", ImportOptions(SIZE, "pad", "displayed", 10, 10**6))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_image_is_refused(tmp_path, suffix):
    rng = np.random.default_rng(0)
    path = tmp_path / f"f{suffix}"
    cv2.imwrite(str(path), (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(cc.CocoError, match="does not decode completely"):
        decode_frame(path, ImportOptions(SIZE, "pad", "displayed", None, 10**6))


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(cc.CocoError, match=r"400x300 .* exceeds data.coco.max_pixels"):
        decode_frame(tmp_path / "big.png", ImportOptions(SIZE, "pad", "displayed", None, 100_000))
    # 20000² (2.4 GB as RGB), past Pillow's own limit too: our message, before any decoding.
    cv2.imwrite(str(tmp_path / "huge.png"), np.zeros((20000, 20000), np.uint8))
    with pytest.raises(cc.CocoError, match=r"20000x20000 = 400 MP exceeds data.coco.max_pixels \(64 MP\)"):
        decode_frame(tmp_path / "huge.png", ImportOptions(SIZE, "pad", "displayed", None, 64_000_000))


def test_opencv_errors_name_the_file_and_record(user, monkeypatch):
    def broken(*args, **kwargs):
        raise cv2.error("OpenCV(4.x) resize.cpp:1: error: (-215:Assertion failed) !dsize.empty()")

    monkeypatch.setattr(importer.cv2, "resize", broken)
    with pytest.raises(cc.CocoError, match=r"result.json: image id 10 \(images/1.png\): OpenCV could not resize"):
        run_import(user)


def test_a_failed_image_write_is_noticed_and_leaves_no_file(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match=r"out.png: could not write the file \(No space left on device\)"):
        cc.write_image(tmp_path / "out.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- files and records


def test_file_names_resolve_inside_the_image_folder_only(tmp_path):
    folder = tmp_path / "export" / "images"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"x")
    (tmp_path / "export" / "secret.png").write_bytes(b"x")
    assert resolve_image_file(folder, "a.png") == folder / "a.png"
    assert resolve_image_file(folder, "images/a.png") == folder / "a.png"  # Label Studio's prefix
    assert resolve_image_file(folder, "/data/upload/3/a.png") == folder / "a.png"  # a server's path
    assert resolve_image_file(folder, "../secret.png") is None  # never above the folder
    assert resolve_image_file(folder, str(tmp_path / "export" / "secret.png")) is None


def test_leak_between_train_and_test_is_refused(user):
    (user["test"].parent / "images" / "3.png").write_bytes((user["train"].parent / "images" / "5.png").read_bytes())
    with pytest.raises(cc.CocoError, match=r"1 test image\(s\) are also in the train pool .*test image id 30 "
                                           r"\(images/3.png\) is train image id 50 \(images/5.png\)"):
        run_import(user)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["annotations"][2]["bbox"].__setitem__(0, float("nan")), "NaN is not a JSON number"),
        (lambda d: d["annotations"][2].__setitem__("segmentation", [["20", "40", "34", "40", "34", "64"]]),
         r"annotations\[2\] \(id 3, image 10\): polygon coordinates must be finite numbers"),
        (lambda d: d["images"][1].__setitem__("id", "20"), r"images\[1\]: image id '20' must be an integer"),
        (lambda d: d["annotations"][0].__setitem__("image_id", True), r"annotations\[0\]: image_id True must be"),
        (lambda d: d["annotations"][2].__setitem__("segmentation", {"counts": "abc", "size": [108, 192]}),
         "segmentation is an RLE mask"),
        (lambda d: d["annotations"][2].__setitem__("segmentation", [[100, 40, 107, 52, 114, 64]]),
         r"result.json: image id 10 \(images/1.png\), annotation id 3: polygon 0 encloses no area"),
        (lambda d: d["images"][0].__setitem__("file_name", "images/missing.png"),
         r"image id 10 \(images/missing.png\): no such file inside"),
    ],
)
def test_bad_records_are_refused_with_file_record_and_problem(user, edit, message):
    data = json.loads(user["train"].read_text())
    edit(data)
    user["train"].write_text(json.dumps(data))
    with pytest.raises(cc.CocoError, match=message):
        run_import(user)


@pytest.mark.parametrize(
    "encode, message",
    [
        (lambda text: text.encode("utf-8-sig"), None),  # a BOM is fine
        (lambda text: text.replace('"0"', '"Ä"').encode("latin-1"), r"not UTF-8 \(byte 0xc4"),
        (lambda text: text.encode("utf-16"), "UTF-16-encoded; fix: save it as UTF-8"),
    ],
)
def test_json_encodings(user, encode, message):
    user["train"].write_bytes(encode(user["train"].read_text()))
    if message is None:
        run_import(user)
    else:
        with pytest.raises(cc.CocoError, match=message):
            run_import(user)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train_images": "/nonexistent/folder"}, "image folder not found"),
        ({"test": "/nonexistent/test.json"}, "annotation file not found"),
        ({"train": None}, "data.coco.train is not set"),
    ],
)
def test_bad_user_config(user, change, message):
    with pytest.raises(cc.CocoError, match=message):
        run_import(user, user["config"](change))


def test_undecodable_user_image(user):
    (user["train"].parent / "images" / "3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(cc.CocoError, match=r"3.png: the image does not decode completely"):
        run_import(user)


def test_size_mismatch_is_refused(user):
    cc.write_image(user["test"].parent / "images" / "2.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(cc.CocoError, match=r"image id 20 .*10x10 but the record says 192x108"):
        run_import(user)


def test_a_category_without_a_glyph_is_refused_at_import_unless_synthesis_is_off(user):
    train = json.loads(user["train"].read_text())
    train["categories"][3]["name"] = "#"
    user["train"].write_text(json.dumps(train))
    test = json.loads(user["test"].read_text())
    test["categories"][3]["name"] = "#"
    user["test"].write_text(json.dumps(test))
    with pytest.raises(cc.CocoError, match=r"result.json \(data.coco\).*'#'"):
        run_import(user)
    real_only = user["config"](experiments={"sets": [{"synthetic_pct": 0}]})
    train_pool, _ = run_import(user, real_only)
    assert "#" in {c["name"] for c in train_pool["categories"]}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_written_by_hand_in_a_camera_frame_is_turned_upright(tmp_path, orientation):
    """The second way of writing EXIF: a bare APP1 segment with only the Orientation tag (as
    cameras and tests/support write it), over a 16:9 frame stored turned. Decoded upright."""
    from support.exports import encode, render_frame

    frame = render_frame(seed=1, size=(256, 144), letters=True)
    data, ext = encode(frame, jpeg=True, exif_orientation=orientation, quality=98)
    path = tmp_path / f"frame{ext}"
    path.write_bytes(data)
    decoded = decode_frame(path, ImportOptions(SIZE, "pad", "displayed", None, 10**6))
    assert decoded.orientation == orientation and decoded.pixels.shape == (144, 256, 3)
    upright = cv2.cvtColor(frame.pixels(8), cv2.COLOR_BGR2RGB).astype(int)
    assert np.abs(decoded.pixels.astype(int) - upright).mean() < 4  # JPEG's error only
