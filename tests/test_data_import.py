"""Bring-your-own-data: import of a user's COCO pools, test sets, stamp pairs, surfaces, bad input."""

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from billetjax import coco as cc
from billetjax.data.pools import fit_square, import_user_pools
from billetjax.data.stamps import crop_pair, inpaint_stamps, make_stamp_pairs, make_surfaces
from billetjax.data.testsets import make_test_sets

SIZE = 96


def camera_frame(rng, w=192, h=108):
    """A 16:9 'camera frame' with dark rectangles as stamps; returns image and their polygons."""
    image = (rng.random((h, w, 3)) * 40 + 150).astype(np.uint8)
    polygons, labels = [], []
    for k in range(4):
        x, y = 20 + 40 * k, 40
        image[y:y + 24, x:x + 14] = 30
        polygons.append([x, y, x + 14, y, x + 14, y + 24, x, y + 24])
        labels.append(k + 1)
    return image, polygons, labels


def write_user_pool(folder, name, visibilities, seed=0, w=192, h=108):
    rng = np.random.default_rng(seed)
    data = cc.empty_dataset()
    (folder / name).mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for i, vis in enumerate(visibilities, 1):
        image, polygons, labels = camera_frame(rng, w, h)
        cc.write_image(folder / name / f"{i}.png", image)
        data["images"].append({"id": 10 * i, "file_name": f"{i}.png", "width": w, "height": h,
                               "site": "AB"[i % 2], "visibility": vis})
        for poly, label in zip(polygons, labels):
            xs, ys = poly[0::2], poly[1::2]
            data["annotations"].append({"id": ann_id, "image_id": 10 * i, "category_id": label + 1,
                                        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                                        "segmentation": [poly], "iscrowd": 0, "area": 14 * 24})
            ann_id += 1
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def user_config(tmp_path, **coco):
    train = write_user_pool(tmp_path / "user", "train", ["well"] * 6 + ["poor", "partial"])
    test = write_user_pool(tmp_path / "user", "test", ["well"] * 4 + ["poor"] * 2 + ["partial"] * 2, seed=1)
    user = {"train": str(train), "train_images": str(tmp_path / "user/train"), "test": str(test),
            "test_images": str(tmp_path / "user/test"), "surfaces": None, "fit": "pad"}
    user.update(coco)
    return {"seed": 1, "image_size_px": SIZE, "data": {"source": "coco", "coco": user}}


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


def test_import_user_pools_and_test_sets(tmp_path):
    config = user_config(tmp_path)
    out = tmp_path / "results"
    import_user_pools(config, out / "train_pool.json", out / "test_pool.json")
    train = cc.load(out / "train_pool.json", check_images=True)
    assert len(train["images"]) == 8 and len(train["annotations"]) == 32
    assert all(img["width"] == SIZE and img["source"] == "real" for img in train["images"])
    # 192x108 padded to 96²: scale 0.5, dy = (96 - 54) // 2 = 21; the first stamp at (20, 40) 14x24.
    first = train["annotations"][0]
    assert first["bbox"] == pytest.approx([10, 41, 7, 12], abs=0.01)
    COCO(str(out / "train_pool.json"))
    sets = make_test_sets(out / "test_pool.json", {k: out / f"testset{k}.json" for k in range(1, 6)},
                          well=2, poor=1, partial=1, seed=0)
    assert [len(sets[k]["images"]) for k in range(1, 6)] == [4, 2, 2, 1, 1]
    assert {img["site"] for img in sets[2]["images"]} == {"A", "B"}  # balanced by site
    ids = {k: {img["id"] for img in sets[k]["images"]} for k in sets}
    assert ids[1] == ids[2] | ids[3] and ids[3] == ids[4] | ids[5] and not ids[4] & ids[5]
    assert not ids[1] & {img["id"] for img in train["images"]}  # disjoint from training
    for k in range(1, 6):
        cc.load(out / f"testset{k}.json", check_images=True)


def test_crop_mode_drops_characters_cut_away(tmp_path, caplog):
    config = user_config(tmp_path, fit="crop")
    out = tmp_path / "results"
    import_user_pools(config, out / "train_pool.json", out / "test_pool.json")
    train = cc.load(out / "train_pool.json")
    # Centre crop of 108 rows x 108 cols out of 192: x from 42 to 150; stamps at x 20 and 140-154 are cut.
    assert 0 < len(train["annotations"]) < 32
    assert "dropped" in caplog.text


def test_stamp_pairs_and_inpainted_surfaces(tmp_path):
    config = user_config(tmp_path)
    out = tmp_path / "results"
    import_user_pools(config, out / "train_pool.json", out / "test_pool.json")
    make_stamp_pairs(out / "train_pool.json", out / "train.npz", out / "val.npz", 32, 8, 4, 0.15, seed=3)
    train, val = np.load(out / "train.npz"), np.load(out / "val.npz")
    assert train["images"].shape == (8, 32, 32, 3) and train["masks"].shape == (8, 32, 32)
    assert val["images"].shape == (4, 32, 32, 3)
    assert set(np.unique(train["masks"])) <= {0, 255}
    assert not set(train["image_ids"]) & set(val["image_ids"])  # different billets
    # Stamps are dark in the image: inside the mask darker than outside.
    inside = train["images"][train["masks"] > 0].mean()
    outside = train["images"][train["masks"] == 0].mean()
    assert inside < outside - 50
    index = make_surfaces(config, out / "train_pool.json", out / "surfaces")
    assert len(index) == 8 and (out / "surfaces" / "index.json").is_file()
    blank = cc.read_image(out / "surfaces" / index[0]["file_name"])
    pool = cc.load(out / "train_pool.json")
    first = pool["annotations"][0]
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


@pytest.mark.parametrize(
    "change, message",
    [
        ({"train_images": "/nonexistent/folder"}, "image folder not found"),
        ({"test": "/nonexistent/test.json"}, "annotation file not found"),
        ({"train": None}, "data.coco.train is not set"),
    ],
)
def test_bad_user_config(tmp_path, change, message):
    config = user_config(tmp_path, **change)
    with pytest.raises(cc.CocoError, match=message):
        import_user_pools(config, tmp_path / "o/train_pool.json", tmp_path / "o/test_pool.json")


def test_undecodable_user_image(tmp_path):
    config = user_config(tmp_path)
    (tmp_path / "user/train/3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(cc.CocoError, match=r"train.json: image id 30: .*does not decode"):
        import_user_pools(config, tmp_path / "o/train_pool.json", tmp_path / "o/test_pool.json")


def test_size_mismatch_is_refused(tmp_path):
    config = user_config(tmp_path)
    cc.write_image(tmp_path / "user/test/2.png", np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(cc.CocoError, match=r"image id 20 .*10x10 but the record says 192x108"):
        import_user_pools(config, tmp_path / "o/train_pool.json", tmp_path / "o/test_pool.json")


def test_test_pool_without_poor_or_partial(tmp_path):
    write_user_pool(tmp_path, "pool", ["well"] * 4)
    data = json.loads((tmp_path / "pool.json").read_text())
    for img in data["images"]:
        img.update(billet_id="", source="real")
    cc.save(tmp_path / "pool.json", data)
    with pytest.raises(cc.CocoError, match="no 'poor' or 'partial' image"):
        make_test_sets(tmp_path / "pool.json", {1: tmp_path / "t1.json"}, 2, 1, 1, seed=0)


def test_too_few_test_images(tmp_path):
    config = user_config(tmp_path)
    out = tmp_path / "results"
    import_user_pools(config, out / "train_pool.json", out / "test_pool.json")
    with pytest.raises(cc.CocoError, match="has 2 poor images, the config asks for 3"):
        make_test_sets(out / "test_pool.json", {1: out / "t1.json"}, 2, 3, 1, seed=0)
