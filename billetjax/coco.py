"""COCO JSON annotations as every stage reads and writes them (docs/data-format.md).

`load` validates a file and refuses bad input with a message naming the file, the record and the
problem; `save` writes stable bytes. `images[].file_name` is relative to the folder holding the JSON,
so a results tree can be moved whole.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from billetjax.utils import atomic_write_bytes
from billetjax.vocabulary import DIGIT_CATEGORIES, VISIBILITY

SOURCES = ("real", "synthetic")


class CocoError(ValueError):
    """A COCO file that cannot be used; the message names the file, the record and the fix."""


def image_path(json_path: str | os.PathLike, image: dict) -> Path:
    """The image file of an `images[]` record, resolved against the JSON file's folder."""
    return (Path(json_path).parent / image["file_name"]).resolve()


def relative_file_name(json_path: str | os.PathLike, image_file: str | os.PathLike) -> str:
    """`file_name` for an image so that it resolves from the JSON file at `json_path`."""
    return os.path.relpath(Path(image_file).resolve(), Path(json_path).resolve().parent)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file of ours as uint8[H, W, 3] RGB; a clear error if it is missing or does not decode."""
    path = Path(path)
    if not path.is_file():
        raise CocoError(f"{path}: image file not found")
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise CocoError(f"{path}: OpenCV could not read the image ({cv2_message(err)})") from None
    if bgr is None:
        raise CocoError(f"{path}: the file does not decode as an image (corrupt or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write uint8[H, W, 3] RGB as PNG (lossless; same array, same bytes), atomically.

    Encoded in memory and written through `atomic_write_bytes`: `cv2.imwrite` reports success on a
    full disk, a short write here raises.
    """
    path = Path(path)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: expected uint8[H, W, 3], got {rgb.dtype}{list(rgb.shape)}")
    try:
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    except cv2.error as err:
        raise OSError(f"{path}: OpenCV could not encode the image ({cv2_message(err)})") from None
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image")
    atomic_write_bytes(path, encoded.tobytes())


def cv2_message(err: Exception) -> str:
    """The useful last line of an OpenCV error."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, refused by name if it is missing, not UTF-8 (a BOM is accepted) or not JSON.

    NaN and Infinity, which Python's json module accepts but JSON does not, are refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise CocoError(f"{path}: annotation file not found")
    data = path.read_bytes()
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            raise CocoError(f"{path}: the file is {name}-encoded; save it as UTF-8 (JSON's encoding)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CocoError(
            f"{path}: not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start} is invalid); "
            "save the file as UTF-8 (for a latin-1 file: iconv -f latin1 -t utf-8)"
        ) from None

    def refuse_constant(token: str):
        raise CocoError(f"{path}: {token} is not a JSON number; every number must be finite")

    try:
        return json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as err:
        raise CocoError(f"{path}: not valid JSON ({err})") from None


def category_names(coco: dict) -> dict[int, str]:
    """`{category id: name}` as the file defines them."""
    return {int(c["id"]): str(c["name"]) for c in coco["categories"]}


def annotations_by_image(coco: dict) -> dict[int, list[dict]]:
    """Annotations grouped by image id, in file order; every image present (maybe empty)."""
    grouped: dict[int, list[dict]] = {int(img["id"]): [] for img in coco["images"]}
    for ann in coco["annotations"]:
        grouped[int(ann["image_id"])].append(ann)
    return grouped


def save(path: str | os.PathLike, coco: dict) -> None:
    """Write a COCO dict with stable formatting (same content, same bytes), atomically."""
    text = json.dumps(coco, sort_keys=True, separators=(",", ":")) + "\n"
    atomic_write_bytes(path, text.encode())


def load(
    path: str | os.PathLike,
    *,
    check_images: bool = False,
    require_extras: bool = True,
    categories: Iterable[str] | None = None,
) -> dict:
    """Read and validate a COCO file (docs/data-format.md); raise `CocoError` naming file, record and problem.

    check_images: also check every image file exists and has the declared size (decodes it).
    require_extras: require our keys `billet_id` and `source` on images (`site` and `visibility`
        are optional everywhere, and checked where present).
    categories: if given, every category name must be one of these.
    """
    coco = read_json(path)
    validate(coco, path, check_images=check_images, require_extras=require_extras, categories=categories)
    return coco


def is_integer(value: Any) -> bool:
    """An integer id (JSON's bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not bool, not a string, not NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(
    coco: Any,
    path: str | os.PathLike = "<memory>",
    *,
    check_images: bool = False,
    require_extras: bool = True,
    categories: Iterable[str] | None = None,
) -> None:
    """Validate a COCO dict in place; see `load`."""

    def fail(record: str, problem: str) -> None:
        raise CocoError(f"{path}: {record}: {problem}")

    if not isinstance(coco, dict):
        fail("top level", "expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            fail("top level", f"missing list '{key}'")

    cats = coco["categories"]
    if not cats:
        fail("categories", "empty: at least one category is needed")
    seen_ids, seen_names = set(), set()
    allowed = set(categories) if categories is not None else None
    for i, cat in enumerate(cats):
        rec = f"categories[{i}]"
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            fail(rec, "needs 'id' and 'name'")
        if not is_integer(cat["id"]) or cat["id"] < 0:
            fail(rec, f"id {cat['id']!r} must be a non-negative integer")
        if not isinstance(cat["name"], str) or not cat["name"]:
            fail(rec, f"name {cat['name']!r} must be a non-empty string")
        if cat["id"] in seen_ids:
            fail(rec, f"duplicate category id {cat['id']}")
        if cat["name"] in seen_names:
            fail(rec, f"duplicate category name {cat['name']!r}")
        if allowed is not None and cat["name"] not in allowed:
            fail(rec, f"unknown category {cat['name']!r}; expected one of {sorted(allowed)}")
        seen_ids.add(cat["id"])
        seen_names.add(cat["name"])

    images: dict[int, dict] = {}
    for i, img in enumerate(coco["images"]):
        rec = f"images[{i}]"
        if not isinstance(img, dict):
            fail(rec, "not an object")
        for key in ("id", "file_name", "width", "height"):
            if key not in img:
                fail(rec, f"missing '{key}'")
        if not is_integer(img["id"]):
            fail(rec, f"image id {img['id']!r} must be an integer")
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            fail(rec, f"file_name {img['file_name']!r} must be a non-empty string")
        rec = f"images[{i}] (id {img['id']}, {img['file_name']})"
        if img["id"] in images:
            fail(rec, f"duplicate image id {img['id']}")
        if not (is_integer(img["width"]) and is_integer(img["height"])) or min(img["width"], img["height"]) < 1:
            fail(rec, f"width/height must be positive integers, got {img['width']!r}x{img['height']!r}")
        if "site" in img and (not isinstance(img["site"], str) or not img["site"]):
            fail(rec, f"'site' must be a non-empty string, got {img['site']!r}")
        if "visibility" in img and img["visibility"] not in VISIBILITY:
            fail(rec, f"'visibility' must be one of {VISIBILITY}, got {img['visibility']!r}")
        if "billet_id" in img and not isinstance(img["billet_id"], str):
            fail(rec, f"'billet_id' must be a string, got {img['billet_id']!r}")
        if require_extras:
            if not isinstance(img.get("billet_id"), str):
                fail(rec, f"'billet_id' must be a string, got {img.get('billet_id')!r}")
            if img.get("source") not in SOURCES:
                fail(rec, f"'source' must be one of {SOURCES}, got {img.get('source')!r}")
        if check_images:
            try:
                pixels = read_image(image_path(path, img))
            except CocoError as err:
                fail(rec, str(err))
            if pixels.shape[:2] != (img["height"], img["width"]):
                fail(rec, f"image file is {pixels.shape[1]}x{pixels.shape[0]}, record says {img['width']}x{img['height']}")
        images[img["id"]] = img

    ann_ids = set()
    for i, ann in enumerate(coco["annotations"]):
        rec = f"annotations[{i}]"
        if not isinstance(ann, dict):
            fail(rec, "not an object")
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                fail(rec, f"missing '{key}'")
        for key in ("id", "image_id", "category_id"):
            if not is_integer(ann[key]):
                fail(rec, f"{key} {ann[key]!r} must be an integer")
        rec = f"annotations[{i}] (id {ann['id']}, image {ann['image_id']})"
        if ann["id"] in ann_ids:
            fail(rec, f"duplicate annotation id {ann['id']}")
        ann_ids.add(ann["id"])
        img = images.get(ann["image_id"])
        if img is None:
            fail(rec, f"image_id {ann['image_id']} is not in images[]")
        if ann["category_id"] not in seen_ids:
            fail(rec, f"unknown category_id {ann['category_id']}; the file defines {sorted(seen_ids)}")
        if ann.get("iscrowd", 0) not in (0, False):
            fail(rec, "iscrowd annotations (RLE masks of groups) are not characters; export each character "
                      "as a box or polygon")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            fail(rec, f"bbox must be [x, y, w, h] finite numbers, got {bbox!r}")
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            fail(rec, f"bbox {bbox} has zero or negative area")
        tol = 1.0  # a pixel of rounding at the border is not an error
        if x < -tol or y < -tol or x + w > img["width"] + tol or y + h > img["height"] + tol:
            fail(rec, f"bbox {bbox} lies outside the image ({img['width']}x{img['height']})")
        seg = ann.get("segmentation", [])
        if isinstance(seg, dict):
            fail(rec, "segmentation is an RLE mask; export polygons or boxes (CVAT: draw polygons or "
                      "rectangles, not masks)")
        if not isinstance(seg, list):
            fail(rec, f"segmentation must be a list of polygons [x1, y1, x2, y2, ...] (or [] for a box), got {str(seg)[:80]}")
        for poly in seg:
            if not isinstance(poly, list) or not all(is_number(v) for v in poly):
                fail(rec, f"polygon coordinates must be finite numbers: {str(poly)[:80]}")
            if len(poly) < 6 or len(poly) % 2:
                fail(rec, f"polygon with fewer than 3 points (or an odd number of coordinates): {str(poly)[:80]}")


def split_counts(coco: dict, key: str) -> Counter:
    """How many images have each value of an image key (e.g. 'site', 'visibility')."""
    return Counter(img.get(key) for img in coco["images"])


def polygon_to_coco(polygon: np.ndarray) -> list[float]:
    """A float[K, 2] outline as a COCO polygon [x1, y1, x2, y2, ...] rounded to 0.01 px."""
    return [round(float(v), 2) for v in np.asarray(polygon, dtype=np.float64).reshape(-1)]


def coco_to_polygon(flat: list[float]) -> np.ndarray:
    """A COCO polygon as float32[K, 2]."""
    return np.asarray(flat, dtype=np.float32).reshape(-1, 2)


def empty_dataset(categories: list[dict] | None = None, description: str = "") -> dict:
    """A COCO dict with no images, with the digit categories unless others are given."""
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": [],
        "annotations": [],
        "categories": [dict(c) for c in (categories or DIGIT_CATEGORIES)],
    }


def subset(coco: dict, image_ids: Iterable[int], json_from: str | os.PathLike | None = None,
           json_to: str | os.PathLike | None = None) -> dict:
    """The images with these ids (in the given order) and their annotations.

    With `json_from`/`json_to`, `file_name`s are rewritten to resolve from the new file's folder.
    """
    order = [int(i) for i in image_ids]
    by_id = {int(img["id"]): img for img in coco["images"]}
    missing = [i for i in order if i not in by_id]
    if missing:
        raise KeyError(f"image ids not in the data set: {missing[:5]}")
    keep = set(order)
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    images = []
    for i in order:
        img = dict(by_id[i])
        if json_from is not None and json_to is not None:
            img["file_name"] = relative_file_name(json_to, image_path(json_from, img))
        images.append(img)
    out["images"] = images
    out["annotations"] = [dict(a) for a in coco["annotations"] if int(a["image_id"]) in keep]
    return out
