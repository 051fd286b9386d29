"""Cross-checks of a user's COCO export: every redundant fact against the others.

An export states many things twice: a character's box and its outline, a box and the image's
size, an image's `billet_id` and its annotated characters, two records' file names and the files
they resolve to, the train pool and the test pool. Where two facts disagree the import refuses,
naming both; where a repair is sound and unambiguous (an exact duplicate annotation, a
self-intersecting outline) it repairs with a WARNING saying what changed and how often. The
messages name the user's file and record and end in the fix (docs/data-format.md lists them).
"""

from __future__ import annotations

import logging
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from billetjax import coco as cc

log = logging.getLogger(__name__)

# Keys the pools add to an image record; a user's export carrying one is refused (ours would
# overwrite theirs, or theirs would pass for ours: a user's `source: camera3` is not `real`).
RESERVED_IMAGE_KEYS = ("source", "user_image_id", "user_file_name", "source_image_id", "repeat_of")
# A box and its outline's bounds may differ by this much on each side (tools round, or box the
# mask's pixels instead of the ring): max(px, share of the box's side).
BOX_POLYGON_TOLERANCE_PX = 2.0
BOX_POLYGON_TOLERANCE_SHARE = 0.2
# Two characters of one image overlapping this much (IoU) are one character drawn twice.
SAME_CHARACTER_IOU = 0.7
# Leak check (train vs test): the test image's nearest train images by perceptual hash are
# compared by high-pass normalised cross-correlation; at or above the threshold they are the same
# picture. Measured on tests/support/exports frames and on frames sharing one layout
# (tests/test_import_checks.py): distinct frames score at most about 0.35; the same frame
# re-encoded (JPEG 50-85), halved, brightened, or cropped by up to 10 % (resized back or not)
# at least about 0.6.
LEAK_CANDIDATES = 8
LEAK_NCC_THRESHOLD = 0.5
THUMBNAIL_PX = 192
# Within one pool only hashes this close are compared (re-encoded and resized copies: <= 4 bits).
NEAR_DUPLICATE_BITS = 8


class Repairs:
    """Counts of the repairs made to one export, reported as one WARNING per kind."""

    def __init__(self, path: Path):
        self.path, self.counts, self.examples = path, {}, {}

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.examples.setdefault(kind, where)

    def report(self) -> None:
        for kind, n in self.counts.items():
            log.warning("%s: %s: %d time%s (first: %s); to keep the export as drawn instead, fix it in the "
                        "tool and export again", self.path, kind, n, "s" * (n != 1), self.examples[kind])


# ----------------------------------------------------------------------------- names


def normalise_name(name: str, alphabet: str, billet_id: bool = False) -> str:
    """A category name (or billet ID) as compared: Unicode NFKC (full-width digits become
    digits), whitespace removed, and upper case where the glyph alphabet has the capital but not
    the small letter (the glyphs do not tell them apart); a category name of several characters
    keeps its case (billet_id: a string of characters, each folded)."""
    text = "".join(unicodedata.normalize("NFKC", str(name)).split())
    if len(text) > 1 and not billet_id:
        return text  # not one character: no glyph to compare its case with
    return "".join(c.upper() if c not in alphabet and c.upper() in alphabet else c for c in text)


def normalised_categories(raw: dict, used: set[int], alphabet: str, path: Path) -> dict[int, str]:
    """`{category id: normalised name}` of a file's categories; a name that changes is reported
    (WARNING), two used categories with one normalised name are refused, naming both."""
    out: dict[int, str] = {}
    by_name: dict[str, int] = {}
    for cat in raw["categories"]:
        name = normalise_name(cat["name"], alphabet)
        if not name:
            raise cc.CocoError(f"{path}: category id {cat['id']}: name {cat['name']!r} is only whitespace; "
                               "fix: name the category after its character")
        if name != cat["name"] and cat["id"] in used:
            log.warning("%s: category id %s: name %r read as %r (whitespace, Unicode width or case: compared "
                        "as normalised; fix, to silence this: rename the label in the tool)", path, cat["id"],
                        cat["name"], name)
        if cat["id"] in used and name in by_name:
            first = by_name[name]
            raise cc.CocoError(f"{path}: categories id {first} ({next(c['name'] for c in raw['categories'] if c['id'] == first)!r}) "
                               f"and id {cat['id']} ({cat['name']!r}) are the same character {name!r} after "
                               "normalising whitespace, width and case; fix: merge the two labels in the tool")
        if cat["id"] in used:
            by_name[name] = cat["id"]
        out[int(cat["id"])] = name
    return out


# ----------------------------------------------------------------------------- box conventions


def box_convention(raw: dict) -> str | None:
    """The convention a file's boxes look written in when it is not COCO's pixel [x, y, w, h]:
    'normalised' (0-1), 'percent' (0-100 of the image), 'corners' ([x0, y0, x1, y1]); None when
    they look like COCO's. Judged on the statistics of all boxes (a few boxes prove nothing)."""
    sizes = {img["id"]: (img["width"], img["height"]) for img in raw["images"]}
    boxes = [(np.asarray(a["bbox"], float), sizes[a["image_id"]]) for a in raw["annotations"]
             if a.get("image_id") in sizes]
    if len(boxes) < 3:
        return None
    b = np.stack([x for x, _ in boxes])
    wh = np.asarray([s for _, s in boxes], float)
    if wh.min() > 4 and b.min() >= 0 and b.max() <= 1.0 and (b[:, :2] + b[:, 2:]).max() <= 1.0 + 1e-6:
        return "normalised"
    if (wh.min() >= 300 and b.min() >= 0 and (b[:, :2] + b[:, 2:]).max() <= 100 + 1e-6
            and (b[:, 2:] / wh).max() < 100 / wh.min()):
        return "percent"
    # Corners: the "size" exceeds the position for nearly every box (in pixels a character's
    # size is far below its distance from the left and top edges), and every box fits as corners.
    past = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    fits = (b[:, 2] <= wh[:, 0] + 1) & (b[:, 3] <= wh[:, 1] + 1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    if past.mean() >= 0.9 and fits.all() and np.median(b[:, 0]) > 0.05 * np.median(wh[:, 0]):
        return "corners"
    return None


CONVENTION_FIX = {
    "normalised": "they are fractions of the image size (0-1, as YOLO writes them)",
    "percent": "they are percentages of the image size (0-100, as Label Studio's own JSON keeps them)",
    "corners": "they are corner coordinates [x0, y0, x1, y1] (Pascal VOC's convention)",
    "centre": "they are centre coordinates [cx, cy, w, h]",
}


def fmt_box(bbox) -> str:
    """A box for a message: numbers to 0.1 px."""
    return "[" + ", ".join(f"{float(v):.1f}" for v in bbox) + "]"


def _as_convention(bbox, width: float, height: float) -> dict[str, np.ndarray]:
    """A box read in each known convention, as [x0, y0, x1, y1] pixels."""
    x, y, w, h = (float(v) for v in bbox)
    return {"corners": np.array([x, y, w, h]),
            "centre": np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2]),
            "normalised": np.array([x * width, y * height, (x + w) * width, (y + h) * height]),
            "percent": np.array([x, y, x + w, y + h]) * [width, height, width, height] / 100}


def _agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Two [x0, y0, x1, y1] boxes within the tolerance of each other on every side."""
    size = np.maximum(a[2:] - a[:2], b[2:] - b[:2])
    tol = np.maximum(BOX_POLYGON_TOLERANCE_PX, BOX_POLYGON_TOLERANCE_SHARE * size)
    return bool((np.abs(a - b) <= np.concatenate([tol, tol])).all())


def check_box_and_outline(ann: dict, width: int, height: int, where: str) -> None:
    """An annotation's box against the image's bounds and against its outline's bounds."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    tol = 1.0
    seg = ann.get("segmentation") or []
    points = np.concatenate([np.asarray(p, float).reshape(-1, 2) for p in seg]) if seg else None
    if points is not None:
        lo, hi = points.min(axis=0), points.max(axis=0)
        if lo[0] < -tol or lo[1] < -tol or hi[0] > width + tol or hi[1] > height + tol:
            raise cc.CocoError(
                f"{where}: the outline spans x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, outside the "
                f"{width}x{height} image (the box {fmt_box(ann['bbox'])} says otherwise); fix: redraw the outline "
                "on the image, or correct the image's width/height")
        outline = np.concatenate([lo, hi])
        stated = np.array([x, y, x + w, y + h])
        if not _agree(stated, outline):
            named = [k for k, v in _as_convention(ann["bbox"], width, height).items() if _agree(v, outline)]
            if named:
                fix = (f"the box fits the outline if {CONVENTION_FIX[named[0]]}: export COCO boxes, "
                       "[x, y, width, height] in pixels, or convert the file")
            else:
                fix = "redraw whichever of the two is wrong (or drop the outline: segmentation [])"
            raise cc.CocoError(
                f"{where}: the box {fmt_box(ann['bbox'])} (x, y, w, h) and the outline's bounds "
                f"{fmt_box([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])} disagree by more than "
                f"{BOX_POLYGON_TOLERANCE_PX:g} px or {BOX_POLYGON_TOLERANCE_SHARE:.0%} of a side; fix: {fix}")
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise cc.CocoError(f"{where}: bbox {fmt_box(ann['bbox'])} lies outside the image ({width}x{height}); fix: redraw "
                           "the box inside the image, or correct the image's width/height")


# ----------------------------------------------------------------------------- records against records


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def deduplicate_annotations(anns: list[dict], names: dict[int, str], where: str, repairs: Repairs) -> list[dict]:
    """An image's annotations without exact repeats (same character, box and outline: dropped,
    counted in `repairs`); two overlapping characters that are not exact repeats are refused."""
    kept: list[dict] = []
    corners: list[np.ndarray] = []
    for ann in anns:
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = np.array([x, y, x + w, y + h])
        for other, other_box in zip(kept, corners):
            same_geometry = (np.allclose(box, other_box, atol=1e-6)
                             and (ann.get("segmentation") or []) == (other.get("segmentation") or []))
            if same_geometry and names[ann["category_id"]] == names[other["category_id"]]:
                repairs.add("exact duplicate annotations dropped (same character, box and outline)",
                            f"{where}, annotation id {ann['id']} = id {other['id']}")
                break
            overlap = _iou(box, other_box)
            if overlap >= SAME_CHARACTER_IOU:
                raise cc.CocoError(
                    f"{where}: annotations id {other['id']} ({names[other['category_id']]!r}, bbox {fmt_box(other['bbox'])}) "
                    f"and id {ann['id']} ({names[ann['category_id']]!r}, bbox {fmt_box(ann['bbox'])}) overlap with IoU "
                    f"{overlap:.2f}: one stamped character drawn twice; fix: delete the wrong one")
        else:
            kept.append(ann)
            corners.append(box)
    return kept


def check_billet_id(img: dict, anns: list[dict], names: dict[int, str], alphabet: str, where: str,
                    hidden: list[str]) -> None:
    """An image's `billet_id` against its annotated characters: each annotated character must be
    in the ID as often as annotated; an ID with characters nobody annotated is refused unless the
    image is `partial` (characters hidden), which is collected in `hidden` for one WARNING."""
    billet_id = img.get("billet_id")
    if not billet_id:
        return
    stated = normalise_name(billet_id, alphabet, billet_id=True)
    in_id, annotated = Counter(stated), Counter(names[a["category_id"]] for a in anns)
    extra = annotated - in_id
    missing = in_id - annotated
    if extra or (missing and img.get("visibility") != "partial"):
        problem = []
        if extra:
            problem.append(f"annotated {sorted(extra.elements())} not in the ID")
        if missing:
            problem.append(f"ID characters {sorted(missing.elements())} not annotated")
        raise cc.CocoError(
            f"{where}: billet_id {billet_id!r} and the image's {sum(annotated.values())} annotated characters "
            f"({''.join(sorted(annotated.elements()))}) disagree: {'; '.join(problem)}; fix: correct the "
            "billet_id or the annotations' labels (or set billet_id to \"\" when it is not known; "
            "only a visibility: partial image may have characters nobody could box)")
    if missing:
        hidden.append(where)


# ----------------------------------------------------------------------------- the same picture


@dataclass
class Thumb:
    """A small grey copy of an image for the leak check, with its perceptual hash."""

    pixels: np.ndarray  # uint8, longer side THUMBNAIL_PX
    phash: np.uint64  # 63 bits
    where: str
    side_px: int  # the longer side of the image it was made from


def thumbnail(rgb: np.ndarray, where: str) -> Thumb:
    """The thumbnail and DCT perceptual hash (8 x 8 low frequencies of 32 x 32, DC left out) of
    an upright image."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = THUMBNAIL_PX / max(grey.shape)
    small = cv2.resize(grey, (max(8, round(grey.shape[1] * scale)), max(8, round(grey.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    dct = cv2.dct(cv2.resize(grey.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA))[:8, :8]
    flat = dct.ravel()[1:]
    bits = np.packbits(np.concatenate([[False], flat > np.median(flat)]))
    return Thumb(small, bits.view(">u8")[0].astype(np.uint64), where, int(max(grey.shape)))


def _texture(grey: np.ndarray) -> np.ndarray:
    """High-pass detail with its local contrast normalised: every region counts alike, so two
    frames that share a layout (the same edges) but not their surface do not correlate."""
    g = grey.astype(np.float32)
    detail = g - cv2.GaussianBlur(g, (0, 0), 2)
    return detail / np.sqrt(cv2.GaussianBlur(detail * detail, (0, 0), 6) + 4.0)


def same_picture_score(a: Thumb, b: Thumb) -> float:
    """How well b (its centre 80 %) matches somewhere in a, high-pass normalised cross-correlation
    at the scales a resize or a small crop of a leaves (1 = the same pixels)."""
    reference = _texture(a.pixels)
    # Thumbnails share their longer side: a resized copy matches at 1; a crop at the ratio of the
    # two images' sizes (the same pixel scale); a crop resized back in between.
    crop = b.side_px / a.side_px
    best = -1.0
    for scale in sorted({1.0, round(crop, 3), 0.95, 0.9}):
        h, w = (round(b.pixels.shape[0] * scale), round(b.pixels.shape[1] * scale))
        if min(h, w) < 16:
            continue
        moving = _texture(cv2.resize(b.pixels, (w, h), interpolation=cv2.INTER_AREA))
        template = moving[h // 10:h - h // 10, w // 10:w - w // 10]
        if template.shape[0] > reference.shape[0] or template.shape[1] > reference.shape[1]:
            continue
        if float(template.std()) < 1e-3:
            continue
        best = max(best, float(cv2.matchTemplate(reference, template, cv2.TM_CCOEFF_NORMED).max()))
    return best


def find_leaks(train: list[Thumb], test: list[Thumb]) -> list[tuple[Thumb, Thumb, float]]:
    """(test, train, score) for every test image that is a train image's picture (re-encoded,
    resized or slightly cropped): its nearest train images by hash, confirmed by correlation."""
    if not train or not test:
        return []
    hashes = np.array([t.phash for t in train], np.uint64)
    leaks = []
    for item in test:
        distance = np.bitwise_count(hashes ^ item.phash)
        for k in np.argsort(distance, kind="stable")[:LEAK_CANDIDATES]:
            score = max(same_picture_score(train[k], item), same_picture_score(item, train[k]))
            if score >= LEAK_NCC_THRESHOLD:
                leaks.append((item, train[k], score))
                break
    return leaks


def find_near_duplicates(thumbs: list[Thumb]) -> list[tuple[Thumb, Thumb, float]]:
    """Pairs of one pool that are the same picture: each later image against its earlier ones
    whose hash is within `NEAR_DUPLICATE_BITS` (re-encoded or resized copies; cheap on a large
    pool, where the leak check's nearest-neighbour search is not)."""
    out = []
    hashes = np.array([t.phash for t in thumbs], np.uint64)
    for i in range(1, len(thumbs)):
        distance = np.bitwise_count(hashes[:i] ^ hashes[i])
        close = np.flatnonzero(distance <= NEAR_DUPLICATE_BITS)
        for k in close[np.argsort(distance[close], kind="stable")][:LEAK_CANDIDATES]:
            score = max(same_picture_score(thumbs[k], thumbs[i]), same_picture_score(thumbs[i], thumbs[k]))
            if score >= LEAK_NCC_THRESHOLD:
                out.append((thumbs[i], thumbs[k], score))
                break
    return out
