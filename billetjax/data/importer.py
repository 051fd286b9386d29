"""Import of a user's annotated images (`data.source: coco`) into the real train and test pools.

A user's files come from annotation tools (CVAT's COCO 1.0, Label Studio's and Roboflow's COCO
exports, or any COCO writer): categories numbered from 0 or 1, super-categories without
annotations, rectangles without outlines, frames of any size, JPEGs with EXIF orientation, 16-bit
PNGs. This module turns them into the pools every later stage reads (docs/data-format.md):

- categories are matched **by name**; the pools keep the train file's ids and names (so every file
  a user reads carries them), a category without annotations is ignored with a log line, and the
  test file's categories are mapped onto the train file's by name;
- images are decoded completely (a truncated file is refused), brought to 8 bits by their bit
  depth, turned upright by their EXIF orientation, and resized to `image_size_px`² with their
  annotations transformed alike;
- annotations keep every polygon (united) or none (box-only: `segmentation: []`), and carry the
  user's ids (`user_annotation_id`; images: `user_image_id`, `user_file_name`);
- the same picture in both pools (a leak that inflates every number) is refused by pixel hash.

Every problem is refused with the user's file, image id, annotation id and the fix named.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import Image
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

from billetjax import coco as cc
from billetjax.config import glyph_requirement
from billetjax.data import testsets
from billetjax.glyphs import require_glyphs
from billetjax.utils import Progress

log = logging.getLogger(__name__)

# A character cut by a crop to less than this share of its area is dropped (logged).
MIN_VISIBLE_AFTER_CROP = 0.3
# Bit depths a camera's 16-bit container may hold; the smallest that fits an image's values is taken.
BIT_DEPTHS = (8, 10, 12, 14, 16)
# EXIF tag of the orientation (1-8).
EXIF_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ImportOptions:
    """How a user's frames become pool images (the `data.coco` section and `image_size_px`)."""

    size_px: int
    fit: str  # pad | crop
    orientation: str  # displayed | stored: which frame the annotations were drawn in
    bit_depth: int | None  # of 16-bit frames; None: the smallest of BIT_DEPTHS that holds the values
    max_pixels: int

    @classmethod
    def from_config(cls, config: dict) -> "ImportOptions":
        user = config["data"]["coco"]
        return cls(size_px=int(config["image_size_px"]), fit=user["fit"], orientation=user["orientation"],
                   bit_depth=user["bit_depth"], max_pixels=int(user["max_pixels"]))


# ----------------------------------------------------------------------------- files and pixels


def resolve_image_file(folder: Path, file_name: str) -> Path | None:
    """The file a record's `file_name` names inside `folder`, or None.

    Tools write `file_name` relative to the export's root (`images/x.png`), as an absolute path of
    their server (`/data/upload/1/x.png`) or with `../`: the name is tried with its leading parts
    dropped one at a time, always inside `folder`, never above it.
    """
    parts = [p for p in PurePosixPath(file_name.replace("\\", "/")).parts if p not in ("/", "", ".")]
    if ".." in parts:  # only what follows the last '..' can lie inside the folder
        parts = parts[len(parts) - parts[::-1].index(".."):]
    for k in range(len(parts)):
        candidate = folder.joinpath(*parts[k:])
        if candidate.is_file():
            return candidate
    return None


def exif_point_map(orientation: int, width: int, height: int) -> np.ndarray:
    """The 2x3 affine map from stored to upright pixel coordinates (pixel edges, COCO's convention)
    for an EXIF orientation 1-8 of a stored `width` x `height` image."""
    w, h = float(width), float(height)
    maps = {
        1: [[1, 0, 0], [0, 1, 0]],
        2: [[-1, 0, w], [0, 1, 0]],
        3: [[-1, 0, w], [0, -1, h]],
        4: [[1, 0, 0], [0, -1, h]],
        5: [[0, 1, 0], [1, 0, 0]],
        6: [[0, -1, h], [1, 0, 0]],
        7: [[0, -1, h], [-1, 0, w]],
        8: [[0, 1, 0], [-1, 0, w]],
    }
    return np.asarray(maps[orientation], dtype=np.float64)


def apply_exif_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixel array turned upright, as a viewer shows it (the same map as `exif_point_map`)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a[::-1].swapaxes(0, 1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: a[:, ::-1].swapaxes(0, 1),
    }
    return np.ascontiguousarray(ops[orientation](pixels))


@dataclass
class Frame:
    """A user's image decoded: upright 8-bit RGB pixels and what was done to get them."""

    pixels: np.ndarray  # uint8[H, W, 3], upright
    stored_size: tuple[int, int]  # (width, height) of the pixel rows as stored in the file
    orientation: int  # EXIF orientation applied (1 = none)
    bit_depth: int  # of the stored samples


def decode_frame(path: Path, opts: ImportOptions) -> Frame:
    """Decode a user's image file completely; raise `CocoError` naming the file and the problem."""
    data = path.read_bytes()
    # Pillow's own limit would refuse a large frame at open() with a message about bombs; the
    # header's size is checked against data.coco.max_pixels below instead.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > opts.max_pixels:
                raise cc.CocoError(
                    f"{path}: {width}x{height} = {width * height / 1e6:.0f} MP exceeds data.coco.max_pixels "
                    f"({opts.max_pixels / 1e6:.0f} MP); downscale the frames or raise the limit"
                )
            orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            im.load()  # a full decode: a truncated or corrupt file raises here
    except cc.CocoError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... by format
        raise cc.CocoError(f"{path}: the image does not decode completely (truncated or corrupt: {err})") from None
    if orientation not in range(1, 9):
        log.warning("%s: EXIF orientation %d is not 1-8; taken as 1", path, orientation)
        orientation = 1
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise cc.CocoError(f"{path}: OpenCV could not decode the image ({cc.cv2_message(err)})") from None
    if raw is None:
        raise cc.CocoError(f"{path}: OpenCV could not decode the image (format not supported)")
    if raw.dtype not in (np.uint8, np.uint16):
        raise cc.CocoError(f"{path}: {raw.dtype} samples are not supported; export 8- or 16-bit images")
    bits = 8
    if raw.dtype == np.uint16:
        peak = int(raw.max())
        if opts.bit_depth is None:
            bits = next(d for d in BIT_DEPTHS if peak < 2 ** d)
        else:
            bits = opts.bit_depth
            if peak >= 2 ** bits:
                raise cc.CocoError(f"{path}: sample value {peak} does not fit data.coco.bit_depth = {bits}")
        raw = np.minimum(raw >> (bits - 8), 255).astype(np.uint8) if bits > 8 else raw.astype(np.uint8)
    try:
        if raw.ndim == 2:
            rgb = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
        elif raw.shape[2] == 4:
            rgb = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)
        elif raw.shape[2] == 3:
            rgb = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
        else:
            raise cc.CocoError(f"{path}: {raw.shape[2]} channels; expected grey, RGB or RGBA")
    except cv2.error as err:
        raise cc.CocoError(f"{path}: OpenCV could not convert the image ({cc.cv2_message(err)})") from None
    stored = (rgb.shape[1], rgb.shape[0])
    return Frame(apply_exif_orientation(rgb, orientation), stored, orientation, bits)


def pixel_hash(pixels: np.ndarray) -> str:
    """A hash of an image's content (shape and pixels), blind to the file's format and name."""
    digest = hashlib.sha256(str(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def fit_square(image: np.ndarray, size_px: int, mode: str) -> tuple[np.ndarray, float, float, float]:
    """Bring an image to size_px² by resize and pad ('pad') or resize and centre crop ('crop').

    Returns the image and the transform (scale, dx, dy): x' = x * scale + dx.
    """
    h, w = image.shape[:2]
    if mode == "pad":
        scale = size_px / max(h, w)
    elif mode == "crop":
        scale = size_px / min(h, w)
    else:
        raise ValueError(f"data.coco.fit must be 'pad' or 'crop', got {mode!r}")
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    dx, dy = (size_px - nw) // 2, (size_px - nh) // 2
    out = np.zeros((size_px, size_px, 3), np.uint8)
    if mode == "pad":
        # Pad with the image's border colour rather than black, so padding does not look like an edge.
        out[:] = np.median(np.concatenate([resized[0], resized[-1], resized[:, 0], resized[:, -1]]), axis=0)
        out[dy:dy + nh, dx:dx + nw] = resized
    else:
        out[:] = resized[-dy:-dy + size_px, -dx:-dx + size_px]
    return out, scale, float(dx), float(dy)


# ----------------------------------------------------------------------------- categories


def used_categories(raw: dict, path: Path) -> dict[int, str]:
    """`{id: name}` of the categories that have annotations; the others are logged and ignored
    (Roboflow's super-category, a label nobody used)."""
    counts: dict[int, int] = {}
    for ann in raw["annotations"]:
        counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
    names = cc.category_names(raw)
    unused = [f"{cid} ({names[cid]!r})" for cid in sorted(names) if cid not in counts]
    if unused:
        log.info("%s: categories without annotations ignored: %s", path, ", ".join(unused))
    return {cid: names[cid] for cid in sorted(names) if cid in counts}


def check_glyphs(names: list[str], requirement: dict, path: Path) -> None:
    """Every category needs a glyph when the study synthesises stamps (`glyph_requirement`)."""
    if not requirement["needed"]:
        return
    try:
        require_glyphs(names, requirement["glyph_file"], where=f"{path} (data.coco)")
    except ValueError as err:
        raise cc.CocoError(str(err)) from None


# ----------------------------------------------------------------------------- the import


@dataclass
class ImportedPool:
    """A pool as written, with the pixel hashes of its images (for the leak check)."""

    coco: dict
    hashes: dict[str, str]  # pixel hash -> the user's file


def _transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _outlines(geometry) -> list[np.ndarray]:
    """The exterior rings of a (multi)polygon, largest first."""
    parts = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon) and g.area > 0]
    parts.sort(key=lambda g: -g.area)
    return [np.asarray(g.exterior.coords)[:-1] for g in parts]


def import_pool(src_json: str | os.PathLike, src_images: str | os.PathLike, dst_json: str | os.PathLike,
                image_dir: str | os.PathLike, opts: ImportOptions, categories: list[dict] | None = None,
                first_id: int = 1) -> ImportedPool:
    """Validate one of the user's COCO files and write it as a pool of size_px² PNG images.

    categories: the pool's categories (the train pool's, for the test pool); the file's are mapped
    onto them by name. By default the file's own categories that have annotations.
    """
    src_json, src_images, image_dir = Path(src_json), Path(src_images), Path(image_dir)
    if not src_images.is_dir():
        raise cc.CocoError(f"{src_images}: image folder not found (data.coco.*_images)")
    raw = cc.read_json(src_json)
    cc.validate(raw, src_json, require_extras=False)
    if not raw["images"]:
        raise cc.CocoError(f"{src_json}: no images")
    used = used_categories(raw, src_json)
    if categories is None:
        categories = [dict(c) for c in sorted(raw["categories"], key=lambda c: c["id"]) if c["id"] in used]
        if not categories:
            raise cc.CocoError(f"{src_json}: no annotations; the train pool needs annotated characters")
    target = {c["name"]: c["id"] for c in categories}
    unknown = sorted(set(used.values()) - set(target))
    if unknown:
        raise cc.CocoError(f"{src_json}: categories {unknown} do not occur in the train pool "
                           f"(its categories: {sorted(target)}); the detector could never predict them")
    to_pool = {cid: target[name] for cid, name in used.items()}
    renumbered = {f"{cid}->{to_pool[cid]}" for cid in used if to_pool[cid] != cid}
    if renumbered:
        log.info("%s: category ids mapped by name onto the train pool's: %s", src_json, ", ".join(sorted(renumbered)))

    image_dir.mkdir(parents=True, exist_ok=True)
    grouped = cc.annotations_by_image(raw)
    out = {k: v for k, v in raw.items() if k not in ("images", "annotations", "categories")}
    out.update(images=[], annotations=[], categories=[dict(c) for c in categories])
    frame = box(0, 0, opts.size_px, opts.size_px)
    hashes: dict[str, str] = {}
    ann_id = 1
    progress = Progress(len(raw["images"]), f"imported {src_json.name} images", log)
    for n, img in enumerate(raw["images"], 1):
        where = f"{src_json}: image id {img['id']} ({img['file_name']})"
        file = resolve_image_file(src_images, img["file_name"])
        if file is None:
            raise cc.CocoError(f"{where}: no such file inside {src_images} (tried the name and its "
                               "trailing parts; data.coco.*_images must be the folder the images are in)")
        decoded = decode_frame(file, opts)
        upright = (decoded.pixels.shape[1], decoded.pixels.shape[0])
        declared = (img["width"], img["height"])
        expected = upright if opts.orientation == "displayed" else decoded.stored_size
        if declared != expected:
            hint = ""
            other = decoded.stored_size if opts.orientation == "displayed" else upright
            if declared == other:
                hint = (f"; the file's EXIF orientation is {decoded.orientation}: set data.coco.orientation: "
                        f"{'stored' if opts.orientation == 'displayed' else 'displayed'} if the annotations "
                        "were drawn on the image as stored")
            raise cc.CocoError(f"{where}: the file is {expected[0]}x{expected[1]} but the record says "
                               f"{declared[0]}x{declared[1]}{hint}")
        if decoded.bit_depth > 8:
            log.info("%s: %d-bit samples brought to 8 bits", file, decoded.bit_depth)
        digest = pixel_hash(decoded.pixels)
        if digest in hashes:
            log.warning("%s: the same picture as %s, twice in one pool", where, hashes[digest])
        hashes[digest] = str(file)

        # Annotations: stored -> upright (only where they were drawn on the stored rows) -> square.
        to_upright = (exif_point_map(decoded.orientation, *decoded.stored_size)
                      if opts.orientation == "stored" else exif_point_map(1, *upright))
        try:
            square, scale, dx, dy = fit_square(decoded.pixels, opts.size_px, opts.fit)
        except cv2.error as err:
            raise cc.CocoError(f"{where}: OpenCV could not resize the image ({cc.cv2_message(err)})") from None
        to_square = np.array([[scale, 0, dx], [0, scale, dy]]) @ np.vstack([to_upright, [0, 0, 1]])
        image_id = first_id + n - 1
        dst_file = image_dir / f"{image_id:06d}.png"
        cc.write_image(dst_file, square)
        rec = {k: v for k, v in img.items() if k not in ("id", "file_name", "width", "height")}
        rec.setdefault("source", "real")
        rec.setdefault("billet_id", "")
        out["images"].append({**rec, "id": image_id, "file_name": cc.relative_file_name(dst_json, dst_file),
                              "width": opts.size_px, "height": opts.size_px, "user_image_id": img["id"],
                              "user_file_name": img["file_name"]})
        for ann in grouped[int(img["id"])]:
            record = _import_annotation(ann, to_square, frame, f"{where}, annotation id {ann['id']}", opts.fit)
            if record is None:
                continue
            out["annotations"].append({"id": ann_id, "image_id": image_id,
                                       "category_id": to_pool[ann["category_id"]], "iscrowd": 0,
                                       "user_annotation_id": ann["id"], **record})
            ann_id += 1
        progress.update(n)
    cc.validate(out, dst_json)
    cc.save(dst_json, out)
    log.info("%s: %d images, %d characters, %d of them box-only", dst_json, len(out["images"]),
             len(out["annotations"]), sum(not a["segmentation"] for a in out["annotations"]))
    return ImportedPool(out, hashes)


def _import_annotation(ann: dict, to_square: np.ndarray, frame, where: str, fit: str) -> dict | None:
    """One user annotation in square-image pixels: bbox, area and its united polygons (or [])."""
    x, y, w, h = ann["bbox"]
    corners = _transform_points(np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], float), to_square)
    whole_box = box(*corners.min(axis=0), *corners.max(axis=0))
    polygons = []
    for k, flat in enumerate(ann.get("segmentation") or []):
        shape = Polygon(_transform_points(cc.coco_to_polygon(flat).astype(np.float64), to_square)).buffer(0)
        if shape.area <= 0:
            raise cc.CocoError(f"{where}: polygon {k} encloses no area (its points lie on a line)")
        polygons.append(shape)
    whole = unary_union(polygons) if polygons else whole_box
    visible = whole.intersection(frame)
    if visible.area < MIN_VISIBLE_AFTER_CROP * whole.area:
        log.warning("%s: less than %d %% of it stays in the frame (data.coco.fit: %s); dropped",
                    where, round(100 * MIN_VISIBLE_AFTER_CROP), fit)
        return None
    if polygons:
        outlines = _outlines(visible)
        (x0, y0), (x1, y1) = (np.min([o.min(axis=0) for o in outlines], axis=0),
                              np.max([o.max(axis=0) for o in outlines], axis=0))
        # The user's box, where it holds the outline, else the outline's: boxes are what is scored.
        bx0, by0, bx1, by1 = whole_box.intersection(frame).bounds
        bx0, by0, bx1, by1 = min(bx0, x0), min(by0, y0), max(bx1, x1), max(by1, y1)
        segmentation = [cc.polygon_to_coco(o) for o in outlines]
        area = visible.area
    else:
        bx0, by0, bx1, by1 = visible.bounds
        segmentation, area = [], visible.area
    bbox = [round(float(bx0), 2), round(float(by0), 2), round(float(bx1 - bx0), 2), round(float(by1 - by0), 2)]
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise cc.CocoError(f"{where}: box {ann['bbox']} has no area at {frame.bounds[2]:.0f} px")
    return {"bbox": bbox, "area": round(float(area), 2), "segmentation": segmentation}


def import_user_pools(config: dict, train_json: str | os.PathLike, test_json: str | os.PathLike,
                      train_images: str | os.PathLike, test_images: str | os.PathLike,
                      glyphs: dict | None = None) -> None:
    """`data.source: coco`: validate and import the user's train and test pools, refuse leaks
    between them, and check that the test sets can be cut (the first job fails, not a later one).

    glyphs: `billetjax.config.glyph_requirement` of the whole config (the data stage's params carry
    only the data section); by default computed from `config`.
    """
    user = config["data"]["coco"]
    for key in ("train", "train_images", "test", "test_images"):
        if not user[key]:
            raise cc.CocoError(f"config data.coco.{key} is not set; data.source: coco needs all four paths")
    opts = ImportOptions.from_config(config)
    train = import_pool(user["train"], user["train_images"], train_json, train_images, opts)
    check_glyphs([c["name"] for c in train.coco["categories"]], glyphs or glyph_requirement(config),
                 Path(user["train"]))
    test = import_pool(user["test"], user["test_images"], test_json, test_images, opts,
                       categories=train.coco["categories"], first_id=len(train.coco["images"]) + 1)
    leaks = [(test_file, train.hashes[h]) for h, test_file in test.hashes.items() if h in train.hashes]
    if leaks:
        listed = "; ".join(f"{a} = {b}" for a, b in leaks[:5])
        raise cc.CocoError(
            f"{user['test']}: {len(leaks)} test image(s) are also in the train pool {user['train']} "
            f"(same pixels): {listed}{' ...' if len(leaks) > 5 else ''}. A test image seen in training "
            "inflates every number: remove them from one of the two files"
        )
    testsets.select_test_sets(test.coco, config["data"]["test_sets"], Path(user["test"]))
