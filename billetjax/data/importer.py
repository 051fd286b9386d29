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
- every redundant fact is checked against the others (`billetjax.data.checks`): box and outline,
  box and image, `billet_id` and the annotated characters, two records and their files, the train
  and the test pool (the same picture after re-encoding, resizing or a small crop is a leak);
- 16-bit frames share one bit depth per data set (`data.coco.bit_depth`, or the smallest that
  holds every frame's values), so a dark frame stays dark.

Every problem is refused with the user's file, image id, annotation id and the fix named; every
repair (an exact duplicate annotation, a self-intersecting outline) is a WARNING with its count.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import Image
from shapely.geometry import Polygon, box
from shapely.ops import unary_union
from shapely.validation import make_valid

from billetjax import coco as cc
from billetjax.data import checks, testsets
from billetjax.glyphs import builtin_glyphs, load_glyph_set, require_glyphs
from billetjax.runtime import Progress
from billetjax.sections import typed

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
    bit_depth: int | None  # of 16-bit frames; None: the smallest of BIT_DEPTHS that holds the data set's values
    max_pixels: int

    @classmethod
    def from_config(cls, config: dict) -> "ImportOptions":
        """From a validated config: its `data.coco` section and `image_size_px`."""
        return typed(cls, config["data"]["coco"], "data.coco", size_px=int(config["image_size_px"]))


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


class FrameError(cc.CocoError):
    """A frame that cannot be decoded; `reason` says why in one word (`FRAME_PROBLEMS`)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# Why a frame cannot be decoded: the `reason` of a FrameError.
FRAME_PROBLEMS = {
    "empty": "the file has 0 bytes",
    "too_large": "more pixels than data.coco.max_pixels",
    "corrupt": "truncated, damaged or not an image",
    "unsupported": "an image, but of a kind we cannot use (sample type, channels, bit depth)",
}


@dataclass
class Frame:
    """A user's image decoded: upright 8-bit RGB pixels and what was done to get them."""

    pixels: np.ndarray  # uint8[H, W, 3], upright
    stored_size: tuple[int, int]  # (width, height) of the pixel rows as stored in the file
    orientation: int  # EXIF orientation applied (1 = none)
    bit_depth: int  # of the stored samples


def stored_bit_depth(path: Path) -> int:
    """Bits per sample a PNG or TIFF file stores (16 for a 16-bit container), read from its
    header without decoding; 8 for every other format."""
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) > 24:
        return int(head[24])
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        try:
            with Image.open(path) as im:
                bits = im.tag_v2.get(258, (8,))
            return int(max(bits if isinstance(bits, tuple) else (bits,)))
        except Exception:  # the full decode names the problem
            return 8
    return 8


def data_set_bit_depth(files: list[Path], opts: ImportOptions) -> int | None:
    """The one bit depth of a data set's 16-bit frames: `data.coco.bit_depth`, or the smallest of
    BIT_DEPTHS that holds the largest value of all of them (a dark frame of a 12-bit camera is
    still shifted by 4); None when no frame has 16-bit samples."""
    sixteen = [f for f in files if stored_bit_depth(f) == 16]
    if not sixteen:
        return None
    if opts.bit_depth is not None:
        return opts.bit_depth
    peak, where = 0, None
    for file in sixteen:
        raw = cv2.imdecode(np.fromfile(file, np.uint8), cv2.IMREAD_UNCHANGED)
        if raw is not None and raw.dtype == np.uint16 and int(raw.max()) >= peak:
            peak, where = int(raw.max()), file
    bits = next(d for d in BIT_DEPTHS if peak < 2 ** d)
    log.info("16-bit frames: %d of them, largest value %d (%s): all brought to 8 bits as %d-bit data "
             "(set data.coco.bit_depth to choose)", len(sixteen), peak, where, bits)
    return bits


def decode_frame(path: Path, opts: ImportOptions, data_set_bits: int | None = None) -> Frame:
    """Decode a user's image file completely; raise `CocoError` naming the file and the problem.

    data_set_bits: the bit depth of the data set's 16-bit frames (`data_set_bit_depth`); without
    it, `data.coco.bit_depth`, else the smallest that holds this frame's values.
    """
    data = path.read_bytes()
    if not data:
        raise FrameError(f"{path}: the file is empty (0 bytes); fix: copy or export the image again", "empty")
    # Pillow's own limit would refuse a large frame at open() with a message about bombs; the
    # header's size is checked against data.coco.max_pixels below instead.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > opts.max_pixels:
                raise FrameError(
                    f"{path}: {width}x{height} = {width * height / 1e6:.0f} MP exceeds data.coco.max_pixels "
                    f"({opts.max_pixels / 1e6:.0f} MP); fix: downscale the frames or raise the limit",
                    "too_large")
            orientation = int(im.getexif().get(EXIF_ORIENTATION_TAG, 1) or 1)
            im.load()  # a full decode: a truncated or corrupt file raises here
    except FrameError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... by format
        raise FrameError(f"{path}: the image does not decode completely (truncated or corrupt: {err}); fix: "
                         "copy or export the image again", "corrupt") from None
    if orientation not in range(1, 9):
        log.warning("%s: EXIF orientation %d is not 1-8; taken as 1", path, orientation)
        orientation = 1
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise FrameError(f"{path}: OpenCV could not decode the image ({cc.cv2_message(err)}); fix: export "
                         "it as PNG or JPEG", "unsupported") from None
    if raw is None:
        raise FrameError(f"{path}: OpenCV could not decode the image (format not supported); fix: export it "
                         "as PNG or JPEG", "unsupported")
    if raw.dtype not in (np.uint8, np.uint16):
        raise FrameError(f"{path}: {raw.dtype} samples are not supported; fix: export 8- or 16-bit images",
                         "unsupported")
    bits = 8
    if raw.dtype == np.uint16:
        peak = int(raw.max())
        if data_set_bits is not None:
            bits = data_set_bits
        elif opts.bit_depth is None:
            bits = next(d for d in BIT_DEPTHS if peak < 2 ** d)
        else:
            bits = opts.bit_depth
        if peak >= 2 ** bits:
            raise FrameError(f"{path}: sample value {peak} does not fit data.coco.bit_depth = {bits}; fix: "
                             "raise data.coco.bit_depth (or set it to null to take it from the frames)", "unsupported")
        raw = np.minimum(raw >> (bits - 8), 255).astype(np.uint8) if bits > 8 else raw.astype(np.uint8)
    try:
        if raw.ndim == 2:
            rgb = cv2.cvtColor(raw, cv2.COLOR_GRAY2RGB)
        elif raw.shape[2] == 4:
            rgb = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB)
        elif raw.shape[2] == 3:
            rgb = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
        else:
            raise FrameError(f"{path}: {raw.shape[2]} channels; fix: export grey, RGB or RGBA images", "unsupported")
    except cv2.error as err:
        raise FrameError(f"{path}: OpenCV could not convert the image ({cc.cv2_message(err)})", "unsupported") from None
    stored = (rgb.shape[1], rgb.shape[0])
    return Frame(apply_exif_orientation(rgb, orientation), stored, orientation, bits)


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


def used_categories(raw: dict, path: Path) -> set[int]:
    """Ids of the categories that have annotations; the others are logged and ignored
    (Roboflow's super-category, a label nobody used)."""
    used = {ann["category_id"] for ann in raw["annotations"]}
    names = cc.category_names(raw)
    unused = [f"{cid} ({names[cid]!r})" for cid in sorted(names) if cid not in used]
    if unused:
        log.info("%s: categories without annotations ignored: %s", path, ", ".join(unused))
    return used


def check_glyphs(names: list[str], requirement: dict, path: Path) -> None:
    """Every category needs a glyph when the study synthesises stamps (`glyph_requirement`)."""
    if not requirement["needed"]:
        return
    try:
        require_glyphs(names, requirement["glyph_file"], where=f"{path} (data.coco)")
    except ValueError as err:
        raise cc.CocoError(f"{err}; fix: one of the two above") from None


def glyph_alphabet(glyph_file: str | None) -> str:
    """The characters category names are compared against (case folding): the study's glyphs."""
    try:
        return load_glyph_set(glyph_file).alphabet
    except (OSError, ValueError):  # the glyph check names a broken file where synthesis needs it
        return builtin_glyphs().alphabet


# ----------------------------------------------------------------------------- reading an export


@dataclass
class Export:
    """A user's export read and cross-checked as a whole, before any image is decoded."""

    path: Path
    images_dir: Path
    raw: dict
    names: dict[int, str]  # the user's category id -> its name, normalised
    used: set[int]  # ids of the categories that have annotations
    files: list[Path]  # the file of each images[] record


def read_export(src_json: str | os.PathLike, src_images: str | os.PathLike, alphabet: str,
                images_key: str = "data.coco.*_images") -> Export:
    """Read one of the user's COCO files and check what can be checked without pixels: the
    format, `null`s, our reserved keys, the boxes' convention, category names, and that every
    record has a file of its own."""
    src_json, src_images = Path(src_json), Path(src_images)
    if not src_images.is_dir():
        raise cc.CocoError(f"{src_images}: image folder not found ({images_key}); fix: set {images_key} to the "
                           "folder the export's images are in")
    raw = cc.read_json(src_json)
    if isinstance(raw, dict):
        for key, empty in (("info", {}), ("licenses", [])):
            if key in raw and raw[key] is None:
                log.warning("%s: '%s' is null; taken as empty (fix, to silence this: write %s or leave the key "
                            "out)", src_json, key, json.dumps(empty))
                raw[key] = empty
    cc.validate(raw, src_json, require_extras=False, check_bounds=False)
    if not raw["images"]:
        raise cc.CocoError(f"{src_json}: no images; fix: export the project with its images")
    for img in raw["images"]:
        taken = [k for k in checks.RESERVED_IMAGE_KEYS if k in img]
        if taken:
            raise cc.CocoError(
                f"{src_json}: image id {img['id']} ({img['file_name']}): the key{'s' * (len(taken) > 1)} "
                f"{taken} {'are' if len(taken) > 1 else 'is'} the pools' own ({', '.join(checks.RESERVED_IMAGE_KEYS)}) "
                f"and would be overwritten or taken for ours; fix: rename {'them' if len(taken) > 1 else 'it'} in "
                "your export (e.g. 'camera' for a source camera); a test set can filter on the new name")
    convention = checks.box_convention(raw)
    if convention:
        raise cc.CocoError(
            f"{src_json}: the boxes are not COCO's [x, y, width, height] in pixels: {checks.CONVENTION_FIX[convention]} "
            f"(e.g. annotation id {raw['annotations'][0]['id']}: bbox {raw['annotations'][0]['bbox']}); fix: export "
            "COCO boxes (pixels, top-left corner and size), or convert the file")
    used = used_categories(raw, src_json)
    names = checks.normalised_categories(raw, used, alphabet, src_json)
    files, owner = [], {}
    for img in raw["images"]:
        file = resolve_image_file(src_images, img["file_name"])
        if file is None:
            raise cc.CocoError(f"{src_json}: image id {img['id']} ({img['file_name']}): no such file inside "
                               f"{src_images} (tried the name and its trailing parts); fix: data.coco.*_images "
                               "must be the folder the images are in")
        real = file.resolve()
        if real in owner:
            first = owner[real]
            raise cc.CocoError(
                f"{src_json}: image id {first['id']} ({first['file_name']}) and image id {img['id']} "
                f"({img['file_name']}) are the same file {real}; one picture annotated twice would count "
                "twice; fix: merge the two records (or point the second at its own file)")
        owner[real] = img
        files.append(file)
    return Export(src_json, src_images, raw, names, used, files)


# ----------------------------------------------------------------------------- the import


@dataclass
class ImportedPool:
    """A pool as written, with a thumbnail of every image (for the leak check)."""

    coco: dict
    thumbs: list = field(default_factory=list)  # checks.Thumb per image


def _transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _outlines(geometry) -> list[np.ndarray]:
    """The exterior rings of a (multi)polygon, largest first."""
    parts = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon) and g.area > 0]
    parts.sort(key=lambda g: -g.area)
    return [np.asarray(g.exterior.coords)[:-1] for g in parts]


def import_pool(export: Export, dst_json: str | os.PathLike, image_dir: str | os.PathLike, opts: ImportOptions,
                alphabet: str, data_set_bits: int | None = None, categories: list[dict] | None = None,
                first_id: int = 1, role: str = "train") -> ImportedPool:
    """Check one of the user's exports against its images and write it as a pool of size_px² PNGs.

    categories: the pool's categories (the train pool's, for the test pool); the file's are mapped
    onto them by normalised name. By default the file's own categories that have annotations.
    """
    raw, src_json, image_dir = export.raw, export.path, Path(image_dir)
    if categories is None:
        categories = [{**c, "name": export.names[c["id"]]} for c in sorted(raw["categories"], key=lambda c: c["id"])
                      if c["id"] in export.used]
    if not raw["annotations"]:
        need = ("the train pool needs annotated characters" if role == "train"
                else "the test sets need ground truth: every number would be computed against nothing")
        raise cc.CocoError(f"{src_json}: no annotations ({len(raw['images'])} images, 0 characters); {need}; fix: "
                           "export the annotations with the images")
    target = {c["name"]: c["id"] for c in categories}
    used = {cid: export.names[cid] for cid in export.used}
    unknown = sorted(set(used.values()) - set(target))
    if unknown:
        raise cc.CocoError(f"{src_json}: categories {unknown} do not occur in the train pool "
                           f"(its categories: {sorted(target)}); the detector could never predict them; fix: "
                           "annotate them in the train export too, or correct their names")
    to_pool = {cid: target[name] for cid, name in used.items()}
    renumbered = {f"{cid}->{to_pool[cid]}" for cid in used if to_pool[cid] != cid}
    if renumbered:
        log.info("%s: category ids mapped by name onto the train pool's: %s", src_json, ", ".join(sorted(renumbered)))

    image_dir.mkdir(parents=True, exist_ok=True)
    grouped = cc.annotations_by_image(raw)
    out = {k: v for k, v in raw.items() if k not in ("images", "annotations", "categories")}
    out.update(images=[], annotations=[], categories=[dict(c) for c in categories])
    frame = box(0, 0, opts.size_px, opts.size_px)
    thumbs, hidden, unannotated = [], [], []
    repairs = checks.Repairs(src_json)
    ann_id = 1
    progress = Progress(len(raw["images"]), f"imported {src_json.name} images", log)
    for n, (img, file) in enumerate(zip(raw["images"], export.files), 1):
        where = f"{src_json}: image id {img['id']} ({img['file_name']})"
        try:
            decoded = decode_frame(file, opts, data_set_bits)
        except cc.CocoError as err:
            raise cc.CocoError(f"{where}: {err}") from None
        upright = (decoded.pixels.shape[1], decoded.pixels.shape[0])
        declared = (img["width"], img["height"])
        expected = upright if opts.orientation == "displayed" else decoded.stored_size
        if declared != expected:
            other = decoded.stored_size if opts.orientation == "displayed" else upright
            if declared == other:
                fix = (f"the file's EXIF orientation is {decoded.orientation}: set data.coco.orientation: "
                       f"{'stored' if opts.orientation == 'displayed' else 'displayed'} if the annotations "
                       "were drawn on the image as stored")
            else:
                fix = ("write the file's size in the record if the annotations were drawn on this file, "
                       "else put back the file that was annotated")
            raise cc.CocoError(f"{where}: the file {file} is {expected[0]}x{expected[1]} but the record says "
                               f"{declared[0]}x{declared[1]}; fix: {fix}")

        anns = grouped[int(img["id"])]
        for ann in anns:
            checks.check_box_and_outline(ann, img["width"], img["height"], f"{where}, annotation id {ann['id']}")
        anns = checks.deduplicate_annotations(anns, export.names, where, repairs)
        checks.check_billet_id(img, anns, export.names, alphabet, where, hidden)
        if not anns:
            unannotated.append(where)

        # Annotations: stored -> upright (only where they were drawn on the stored rows) -> square.
        to_upright = (exif_point_map(decoded.orientation, *decoded.stored_size)
                      if opts.orientation == "stored" else exif_point_map(1, *upright))
        try:
            square, scale, dx, dy = fit_square(decoded.pixels, opts.size_px, opts.fit)
        except cv2.error as err:
            raise cc.CocoError(f"{where}: OpenCV could not resize the image ({cc.cv2_message(err)})") from None
        to_square = np.array([[scale, 0, dx], [0, scale, dy]]) @ np.vstack([to_upright, [0, 0, 1]])
        thumbs.append(checks.thumbnail(decoded.pixels, f"image id {img['id']} ({img['file_name']})"))
        image_id = first_id + n - 1
        dst_file = image_dir / f"{image_id:06d}.png"
        cc.write_image(dst_file, square)
        rec = {k: v for k, v in img.items() if k not in ("id", "file_name", "width", "height")}
        if rec.get("billet_id"):
            rec["billet_id"] = checks.normalise_name(rec["billet_id"], alphabet, billet_id=True)
        rec.setdefault("billet_id", "")
        out["images"].append({**rec, "source": "real", "id": image_id,
                              "file_name": cc.relative_file_name(dst_json, dst_file),
                              "width": opts.size_px, "height": opts.size_px, "user_image_id": img["id"],
                              "user_file_name": img["file_name"]})
        for ann in anns:
            record = _import_annotation(ann, to_square, frame, f"{where}, annotation id {ann['id']}", opts.fit,
                                        repairs)
            if record is None:
                continue
            out["annotations"].append({"id": ann_id, "image_id": image_id,
                                       "category_id": to_pool[ann["category_id"]], "iscrowd": 0,
                                       "user_annotation_id": ann["id"], **record})
            ann_id += 1
        progress.update(n)
    repairs.report()
    if hidden:
        log.warning("%s: %d partial image(s) have billet IDs with characters nobody annotated (hidden); "
                    "their IDs are scored as stamped (first: %s)", src_json, len(hidden), hidden[0])
    if unannotated:
        log.warning("%s: %d of %d images have no annotated character (first: %s); they are kept as billets "
                    "without characters", src_json, len(unannotated), len(raw["images"]), unannotated[0])
    for later, earlier, score in checks.find_near_duplicates(thumbs):
        log.warning("%s: %s and %s are the same picture (correlation %.2f), twice in one pool", src_json,
                    later.where, earlier.where, score)
    cc.validate(out, dst_json)
    cc.save(dst_json, out)
    log.info("%s: %d images, %d characters, %d of them box-only", dst_json, len(out["images"]),
             len(out["annotations"]), sum(not a["segmentation"] for a in out["annotations"]))
    return ImportedPool(out, thumbs)


def _valid_outline(points: np.ndarray, where: str, k: int, repairs: checks.Repairs):
    """A polygon from a user's ring; a self-intersecting ring is made valid (every enclosed part
    kept), which is reported where it changes the enclosed area."""
    shape = Polygon(points)
    if shape.is_valid:
        return shape
    fixed = make_valid(shape)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type in ("Polygon", "MultiPolygon")]
    fixed = unary_union(parts) if parts else Polygon()
    if fixed.area > 0 and abs(fixed.area - abs(shape.area)) > max(0.5, 0.01 * fixed.area):
        repairs.add("self-intersecting outlines made valid (every enclosed part kept)", f"{where}, polygon {k}")
    return fixed


def _import_annotation(ann: dict, to_square: np.ndarray, frame, where: str, fit: str,
                       repairs: checks.Repairs) -> dict | None:
    """One user annotation in square-image pixels: bbox, area and its united polygons (or [])."""
    x, y, w, h = ann["bbox"]
    corners = _transform_points(np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], float), to_square)
    whole_box = box(*corners.min(axis=0), *corners.max(axis=0))
    polygons = []
    for k, flat in enumerate(ann.get("segmentation") or []):
        shape = _valid_outline(_transform_points(cc.coco_to_polygon(flat).astype(np.float64), to_square),
                               where, k, repairs)
        if shape.area <= 0:
            raise cc.CocoError(f"{where}: polygon {k} encloses no area (its points lie on a line); fix: redraw "
                               "the outline, or use segmentation [] for a box-only character")
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
        # The user's box, where it holds the outline, else the outline's: boxes are what is scored
        # (the two agree within checks.BOX_POLYGON_TOLERANCE_*, checked before).
        bx0, by0, bx1, by1 = whole_box.intersection(frame).bounds
        bx0, by0, bx1, by1 = min(bx0, x0), min(by0, y0), max(bx1, x1), max(by1, y1)
        segmentation = [cc.polygon_to_coco(o) for o in outlines]
        area = visible.area
    else:
        bx0, by0, bx1, by1 = visible.bounds
        segmentation, area = [], visible.area
    bbox = [round(float(bx0), 2), round(float(by0), 2), round(float(bx1 - bx0), 2), round(float(by1 - by0), 2)]
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise cc.CocoError(f"{where}: box {ann['bbox']} has no area at {frame.bounds[2]:.0f} px; fix: redraw "
                           "the box larger, or raise image_size_px")
    return {"bbox": bbox, "area": round(float(area), 2), "segmentation": segmentation}


def import_user_pools(config: dict, train_json: str | os.PathLike, test_json: str | os.PathLike,
                      train_images: str | os.PathLike, test_images: str | os.PathLike,
                      glyphs: dict) -> None:
    """`data.source: coco`: validate and import the user's train and test pools, refuse leaks
    between them, and check that the test sets can be cut (the first job fails, not a later one).

    glyphs: whether the study synthesises stamps and from which glyph file, as the config check
    derives it from the whole config (`billetjax.config.glyph_requirement`; the data stage's params
    carry only the data section, and the importer does not look up to the config check).
    """
    user = config["data"]["coco"]
    for key in ("train", "train_images", "test", "test_images"):
        if not user[key]:
            raise cc.CocoError(f"config data.coco.{key} is not set; data.source: coco needs all four paths; "
                               f"fix: set data.coco.{key}")
    requirement = glyphs
    alphabet = glyph_alphabet(requirement["glyph_file"])
    opts = ImportOptions.from_config(config)
    train_export = read_export(user["train"], user["train_images"], alphabet, "data.coco.train_images")
    test_export = read_export(user["test"], user["test_images"], alphabet, "data.coco.test_images")
    bits = data_set_bit_depth(train_export.files + test_export.files, opts)
    train = import_pool(train_export, train_json, train_images, opts, alphabet, bits, role="train")
    check_glyphs([c["name"] for c in train.coco["categories"]], requirement, Path(user["train"]))
    test = import_pool(test_export, test_json, test_images, opts, alphabet, bits,
                       categories=train.coco["categories"], first_id=len(train.coco["images"]) + 1, role="test")
    leaks = checks.find_leaks(train.thumbs, test.thumbs)
    if leaks:
        listed = "; ".join(f"test {a.where} is train {b.where} (correlation {score:.2f})" for a, b, score in leaks[:5])
        raise cc.CocoError(
            f"{user['test']}: {len(leaks)} test image(s) are also in the train pool {user['train']} "
            f"(the same picture, maybe re-encoded, resized or cropped): {listed}{' ...' if len(leaks) > 5 else ''}. "
            "A test image seen in training inflates every number; fix: remove them from one of the two files")
    testsets.select_test_sets(test.coco, config["data"]["test_sets"], Path(user["test"]))
