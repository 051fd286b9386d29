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
from typing import Any, Callable, Iterable, NoReturn

import cv2
import numpy as np

from billetjax.files import atomic_write_bytes
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


# Deepest nesting a COCO file needs is 5 (file > annotations > annotation > segmentation >
# polygon); tools' extras add a few levels (Roboflow's images[].extra.user_tags). Deeper is not
# an annotation export, and Python's JSON reader would give up with a bare RecursionError.
MAX_JSON_DEPTH = 32


class _DuplicateKey(Exception):
    def __init__(self, key: str, pairs: list[tuple[str, Any]]):
        self.key, self.pairs = key, pairs

    def record(self) -> str:
        """The object named as a COCO record where its keys say which (image, annotation, ...)."""
        first = dict(reversed(self.pairs))  # the first value of each key
        kind = ("annotation" if "image_id" in first else "image" if "file_name" in first
                else "category" if "name" in first and "id" in first else None)
        if kind and "id" in first:
            extra = f" ({first['file_name']})" if kind == "image" else ""
            return f"{kind} id {json.dumps(first['id'])}{extra}"
        return f"an object with the keys {list(first)[:6]}"


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key, pairs)
        out[key] = value
    return out


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a number is depth 0)."""
    depth, level = 0, [value]
    while level:
        depth += 1
        nested = []
        for item in level:
            if isinstance(item, dict):
                nested.extend(v for v in item.values() if isinstance(v, (dict, list)))
            elif isinstance(item, list):
                nested.extend(v for v in item if isinstance(v, (dict, list)))
        level = nested
        if depth > MAX_JSON_DEPTH:
            break
    return depth if value is not None and isinstance(value, (dict, list)) else 0


def parse_json_text(text: str, path: str | os.PathLike) -> Any:
    """Parse JSON as a user's tool wrote it; refuse (naming the file) what Python's reader would
    take silently or fail on with a bare exception: NaN and Infinity, a key twice in one object
    (the reader would keep the last), nesting deeper than `MAX_JSON_DEPTH`."""

    seen: list[_NonFinite] = []

    def mark_constant(token: str) -> "_NonFinite":
        seen.append(_NonFinite(token))
        return seen[-1]

    try:
        data = json.loads(text, parse_constant=mark_constant, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as err:
        raise CocoError(f"{path}: not valid JSON ({err}); fix: export the file again, or repair it "
                        "at that line") from None
    except _DuplicateKey as dup:
        values = [json.dumps(v)[:40] for k, v in dup.pairs if k == dup.key]
        raise CocoError(f"{path}: {dup.record()}: the key {dup.key!r} appears twice ({' and '.join(values)}); "
                        "readers differ in which of the two values they keep; fix: keep the right one "
                        "in the file") from None
    except RecursionError:
        raise CocoError(f"{path}: lists or objects nest deeper than Python's JSON reader allows; "
                        "this is not an annotation export; fix: point data.coco at the COCO file") from None
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise CocoError(f"{path}: lists or objects nest more than {MAX_JSON_DEPTH} deep (a COCO file "
                        "needs 5); this is not an annotation export; fix: point data.coco at the COCO file")
    if seen:
        where = _locate(data, seen[0])
        raise CocoError(f"{path}: {where}: {seen[0].token} is not a JSON number ({len(seen)} such value"
                        f"{'s' * (len(seen) > 1)} in the file); fix: write finite numbers, or remove the record")
    return data


class _NonFinite:
    """NaN, Infinity or -Infinity as parsed, kept so that the record holding it can be named."""

    def __init__(self, token: str):
        self.token = token


def _locate(data: Any, target: _NonFinite) -> str:
    """The record holding `target` in a parsed COCO file, as messages name records."""
    stack = [(data, [])]
    while stack:
        value, path = stack.pop()
        if value is target:
            break
        if isinstance(value, dict):
            stack += [(v, path + [k]) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, path + [i]) for i, v in enumerate(value)]
    else:
        return "somewhere"
    where = "top level"
    if len(path) >= 2 and path[0] in ("images", "annotations", "categories") and isinstance(data, dict):
        record = data[path[0]][path[1]]
        if isinstance(record, dict) and "id" in record:
            kind = {"images": "image", "annotations": "annotation", "categories": "category"}[path[0]]
            where = f"{kind} id {json.dumps(record['id'], default=str)}"
            if kind == "image" and "file_name" in record:
                where += f" ({record['file_name']})"
        else:
            where = f"{path[0]}[{path[1]}]"
        rest = path[2:]
    else:
        rest = path
    return where + (f", '{rest[0]}'" + "".join(f"[{k!r}]" for k in rest[1:]) if rest else "")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, refused by name if it is missing, not UTF-8 (a BOM is accepted) or not JSON.

    NaN and Infinity (which Python's json module accepts but JSON does not), a key twice in one
    object and pathological nesting are refused too (`parse_json_text`).
    """
    path = Path(path)
    if not path.is_file():
        raise CocoError(f"{path}: annotation file not found; fix: check the path in data.coco")
    data = path.read_bytes()
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            raise CocoError(f"{path}: the file is {name}-encoded; fix: save it as UTF-8 (JSON's encoding)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CocoError(
            f"{path}: not UTF-8 (byte 0x{data[err.start]:02x} at offset {err.start} is invalid); "
            "fix: save the file as UTF-8 (for a latin-1 file: iconv -f latin1 -t utf-8)"
        ) from None
    return parse_json_text(text, path)


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
    check_bounds: bool = True,
) -> None:
    """Validate a COCO dict in place; see `load`. check_bounds: boxes inside their image (the
    importer checks that itself, after recognising boxes written in another convention)."""

    def fail(record: str, problem: str) -> NoReturn:
        raise CocoError(f"{path}: {record}: {problem}")

    _check_top_level(coco, fail)
    category_ids = _check_categories(coco["categories"], categories, fail)
    images: dict[int, dict] = {}
    for i, img in enumerate(coco["images"]):
        rec = _check_image(i, img, images, fail, require_extras=require_extras)
        if check_images:
            _check_image_file(rec, img, path, fail)
        images[img["id"]] = img
    annotation_ids: set[int] = set()
    for i, ann in enumerate(coco["annotations"]):
        rec = _check_annotation_ids(i, ann, annotation_ids, images, category_ids, fail)
        annotation_ids.add(ann["id"])
        _check_box(rec, ann["bbox"], images[ann["image_id"]], fail, check_bounds=check_bounds)
        _check_segmentation(rec, ann.get("segmentation", []), fail)


Fail = Callable[[str, str], NoReturn]  # raises CocoError naming the file, the record and the problem


def _check_top_level(coco: Any, fail: Fail) -> None:
    """A JSON object with the three lists."""
    if not isinstance(coco, dict):
        fail("top level", "expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            found = "null" if coco.get(key, 0) is None else ("missing" if key not in coco else type(coco[key]).__name__)
            fail("top level", f"'{key}' must be a list (found {found}); fix: export the file again with "
                              "images, annotations and categories")


def _check_categories(cats: list, categories: Iterable[str] | None, fail: Fail) -> set[int]:
    """At least one category, each with its own non-negative integer id and its own name (one of
    `categories` when given); returns the ids."""
    if not cats:
        fail("categories", "empty: at least one category is needed; fix: export the project's labels")
    seen_ids, seen_names = set(), set()
    allowed = set(categories) if categories is not None else None
    for i, cat in enumerate(cats):
        rec = f"categories[{i}]"
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            fail(rec, "needs 'id' and 'name'; fix: export the categories with both")
        if not is_integer(cat["id"]) or cat["id"] < 0:
            fail(rec, f"id {cat['id']!r} must be a non-negative integer; fix: write ids as numbers")
        if not isinstance(cat["name"], str) or not cat["name"]:
            fail(rec, f"name {cat['name']!r} must be a non-empty string; fix: name the category after its character")
        if cat["id"] in seen_ids:
            fail(rec, f"duplicate category id {cat['id']}; fix: give each category its own id")
        if cat["name"] in seen_names:
            fail(rec, f"duplicate category name {cat['name']!r}; fix: merge the two labels in the tool "
                      "and export again")
        if allowed is not None and cat["name"] not in allowed:
            fail(rec, f"unknown category {cat['name']!r}; expected one of {sorted(allowed)}")
        seen_ids.add(cat["id"])
        seen_names.add(cat["name"])
    return seen_ids


def _check_image(i: int, img: Any, images: dict[int, dict], fail: Fail, *, require_extras: bool) -> str:
    """Image record `i`: an id of its own (not yet in `images`), a file name, a positive size, and
    our keys (`site`, `visibility`, `billet_id`, `source`) well-formed where present or required;
    returns the record's name for messages."""
    rec = f"images[{i}]"
    if not isinstance(img, dict):
        fail(rec, f"not an object (found {json.dumps(img)[:40]}); fix: remove it or export the file again")
    for key in ("id", "file_name", "width", "height"):
        if key not in img:
            fail(rec, f"missing '{key}'; fix: every image record needs id, file_name, width and height")
    if not is_integer(img["id"]):
        fail(rec, f"image id {img['id']!r} must be an integer; fix: write ids as numbers, not strings")
    if not isinstance(img["file_name"], str) or not img["file_name"]:
        fail(rec, f"file_name {img['file_name']!r} must be a non-empty string; fix: name the image's file")
    rec = f"images[{i}] (id {img['id']}, {img['file_name']})"
    if img["id"] in images:
        fail(rec, f"duplicate image id {img['id']} (also {images[img['id']]['file_name']}); fix: give "
                  "each image its own id (export the project again rather than merging files by hand)")
    if not (is_integer(img["width"]) and is_integer(img["height"])) or min(img["width"], img["height"]) < 1:
        fail(rec, f"width/height must be positive integers, got {img['width']!r}x{img['height']!r}; "
                  "fix: write the image file's size in pixels")
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
    return rec


def _check_image_file(rec: str, img: dict, path: str | os.PathLike, fail: Fail) -> None:
    """The image's file (beside the COCO file at `path`) decodes and has the size its record declares."""
    try:
        pixels = read_image(image_path(path, img))
    except CocoError as err:
        fail(rec, str(err))
    if pixels.shape[:2] != (img["height"], img["width"]):
        fail(rec, f"image file is {pixels.shape[1]}x{pixels.shape[0]}, record says {img['width']}x{img['height']}")


def _check_annotation_ids(i: int, ann: Any, annotation_ids: set[int], images: dict[int, dict],
                          category_ids: set[int], fail: Fail) -> str:
    """Annotation record `i`: integer ids, its own id (not in `annotation_ids`), an image and a
    category the file defines, no crowd; returns the record's name for messages."""
    rec = f"annotations[{i}]"
    if not isinstance(ann, dict):
        fail(rec, f"not an object (found {json.dumps(ann)[:40]}); fix: remove it or export the file again")
    for key in ("id", "image_id", "category_id", "bbox"):
        if key not in ann:
            fail(rec, f"missing '{key}'; fix: every annotation needs id, image_id, category_id and bbox")
    for key in ("id", "image_id", "category_id"):
        if not is_integer(ann[key]):
            fail(rec, f"{key} {ann[key]!r} must be an integer; fix: write ids as numbers, not strings")
    rec = f"annotations[{i}] (id {ann['id']}, image {ann['image_id']})"
    if ann["id"] in annotation_ids:
        fail(rec, f"duplicate annotation id {ann['id']}; fix: give each annotation its own id "
                  "(export the project again rather than merging files by hand)")
    if ann["image_id"] not in images:
        fail(rec, f"image_id {ann['image_id']} is not in images[]; fix: add the image record or "
                  "remove the annotation")
    if ann["category_id"] not in category_ids:
        fail(rec, f"unknown category_id {ann['category_id']}; the file defines {sorted(category_ids)}; fix: "
                  "add the category or correct the annotation's category_id")
    if ann.get("iscrowd", 0) not in (0, False):
        fail(rec, "iscrowd annotations (RLE masks of groups) are not characters; export each character "
                  "as a box or polygon")
    return rec


def _check_box(rec: str, bbox: Any, img: dict, fail: Fail, *, check_bounds: bool) -> None:
    """[x, y, w, h] finite numbers of positive area, inside the image (to a pixel) with `check_bounds`."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
        fail(rec, f"bbox must be [x, y, w, h] finite numbers, got {bbox!r}; fix: export boxes as four "
                  "numbers in pixels")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        fail(rec, f"bbox {bbox} has zero or negative area; fix: redraw the box or remove the annotation")
    tol = 1.0  # a pixel of rounding at the border is not an error
    if check_bounds and (x < -tol or y < -tol or x + w > img["width"] + tol or y + h > img["height"] + tol):
        fail(rec, f"bbox {bbox} lies outside the image ({img['width']}x{img['height']}); fix: redraw "
                  "the box inside the image, or correct the image's width/height")


def _check_segmentation(rec: str, seg: Any, fail: Fail) -> None:
    """A list of polygons of at least 3 points of finite numbers ([] for a box-only character)."""
    if isinstance(seg, dict):
        fail(rec, "segmentation is an RLE mask; export polygons or boxes (CVAT: draw polygons or "
                  "rectangles, not masks)")
    if not isinstance(seg, list):
        fail(rec, f"segmentation must be a list of polygons [x1, y1, x2, y2, ...] (or [] for a box), got {str(seg)[:80]}")
    for poly in seg:
        if not isinstance(poly, list) or not all(is_number(v) for v in poly):
            fail(rec, f"polygon coordinates must be finite numbers: {str(poly)[:80]}; fix: export "
                      "numbers, not strings")
        if len(poly) < 6 or len(poly) % 2:
            fail(rec, f"polygon with fewer than 3 points (or an odd number of coordinates): {str(poly)[:80]}; "
                      "fix: redraw the outline, or use segmentation [] for a box-only character")


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
