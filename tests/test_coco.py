"""COCO reading, writing and validation: every bad input is refused with file, record and problem."""

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from billetjax import coco as cc


def make_dataset(tmp_path, n_images=2, size=(64, 48)):
    """A small valid data set on disk: images of size (w, h), two characters each."""
    w, h = size
    data = cc.empty_dataset()
    folder = tmp_path / "images"
    for i in range(1, n_images + 1):
        file = folder / f"im{i}.png"
        cc.write_image(file, np.full((h, w, 3), 100 + i, np.uint8))
        data["images"].append({"id": i, "file_name": f"images/im{i}.png", "width": w, "height": h,
                               "site": "A", "visibility": "well", "billet_id": "12", "source": "real"})
        for k, (x, d) in enumerate(((5, 1), (30, 2))):
            data["annotations"].append({
                "id": 2 * i + k, "image_id": i, "category_id": d + 1, "iscrowd": 0,
                "bbox": [x, 10, 10, 20], "area": 200,
                "segmentation": [[x, 10, x + 10, 10, x + 10, 30, x, 30]],
            })
    path = tmp_path / "data.json"
    cc.save(path, data)
    return path, data


def test_round_trip_and_pycocotools(tmp_path):
    path, data = make_dataset(tmp_path)
    loaded = cc.load(path, check_images=True)
    assert loaded == data
    api = COCO(str(path))
    assert len(api.getImgIds()) == 2 and len(api.getAnnIds()) == 4
    assert sorted(api.getCatIds()) == list(range(1, 11))
    # Same content, same bytes.
    first = path.read_bytes()
    cc.save(path, loaded)
    assert path.read_bytes() == first


def test_image_path_is_relative_to_the_json(tmp_path):
    path, data = make_dataset(tmp_path)
    other = tmp_path / "deeper" / "sets" / "subset.json"
    sub = cc.subset(data, [2], json_from=path, json_to=other)
    assert sub["images"][0]["file_name"] == "../../images/im2.png"
    assert cc.image_path(other, sub["images"][0]) == (tmp_path / "images" / "im2.png").resolve()
    assert [a["image_id"] for a in sub["annotations"]] == [2, 2]


def test_read_write_image_keeps_rgb(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cc.write_image(tmp_path / "x.png", rgb)
    assert np.array_equal(cc.read_image(tmp_path / "x.png"), rgb)
    # OpenCV keeps BGR on disk readers' side: the red channel lands in the file's red channel.
    assert cv2.imread(str(tmp_path / "x.png"))[0, 0, 2] == 200


def break_and_load(tmp_path, mutate, **kwargs):
    path, data = make_dataset(tmp_path)
    mutate(data)
    path.write_text(json.dumps(data))
    return lambda: cc.load(path, **kwargs)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["annotations"][1].update(category_id=42), r"annotations\[1\].*unknown category_id 42"),
        (lambda d: d["annotations"][0].update(bbox=[60, 10, 10, 20]), r"annotations\[0\].*outside the image"),
        (lambda d: d["annotations"][2].update(bbox=[5, 10, 0, 20]), r"annotations\[2\].*zero or negative area"),
        (lambda d: d["annotations"][3].update(segmentation=[[1, 1, 5, 5]]), r"annotations\[3\].*fewer than 3 points"),
        (lambda d: d["annotations"][0].update(image_id=99), r"image_id 99 is not in images"),
        (lambda d: d["categories"].append({"id": 3, "name": "x"}), r"duplicate category id 3"),
        (lambda d: d["categories"][0].update(id=-1), r"categories\[0\].*non-negative integer"),
        (lambda d: d["categories"][0].update(id=True), r"categories\[0\].*non-negative integer"),
        (lambda d: d["annotations"][0].update(bbox=[5, 10, float("inf"), 20]), "Infinity is not a JSON number"),
        (lambda d: d["images"][1].update(visibility="great"), r"images\[1\].*'visibility'"),
        (lambda d: d["images"][0].update(site=3), r"images\[0\].*'site' must be a non-empty string"),
        (lambda d: d.pop("annotations"), r"'annotations' must be a list \(found missing\)"),
    ],
)
def test_bad_records_are_refused_by_name(tmp_path, mutate, message):
    load = break_and_load(tmp_path, mutate)
    with pytest.raises(cc.CocoError, match=message) as err:
        load()
    assert "data.json" in str(err.value)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(cc.CocoError, match="annotation file not found"):
        cc.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(cc.CocoError, match="not valid JSON"):
        cc.load(tmp_path / "bad.json")
    path, _ = make_dataset(tmp_path)
    (tmp_path / "images" / "im2.png").write_bytes(b"not a png")
    with pytest.raises(cc.CocoError, match=r"images\[1\].*does not decode"):
        cc.load(path, check_images=True)
    (tmp_path / "images" / "im1.png").unlink()
    with pytest.raises(cc.CocoError, match=r"images\[0\].*not found"):
        cc.load(path, check_images=True)


def test_non_finite_numbers_in_memory_are_refused(tmp_path):
    _, data = make_dataset(tmp_path)
    data["annotations"][1]["segmentation"] = [[1, 1, float("nan"), 5, 9, 9]]
    with pytest.raises(cc.CocoError, match=r"annotations\[1\] \(id 3, image 1\): polygon coordinates must be finite"):
        cc.validate(data, "mem.json")


def test_category_id_zero_and_box_only_annotations_are_valid(tmp_path):
    """Label Studio numbers categories from 0; CVAT and Label Studio write boxes as segmentation []."""
    path, data = make_dataset(tmp_path)
    data["categories"][0]["id"] = 0
    data["annotations"][0].update(category_id=0, segmentation=[])
    cc.save(path, data)
    assert cc.load(path)["annotations"][0]["segmentation"] == []
    assert 0 in COCO(str(path)).getCatIds()


def test_unknown_category_name(tmp_path):
    path, _ = make_dataset(tmp_path)
    with pytest.raises(cc.CocoError, match="unknown category '9'"):
        cc.load(path, categories=[str(d) for d in range(9)])

