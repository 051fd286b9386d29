"""Stamped-ID camera frames from an independent renderer, written as real annotation tools export them.

Test support, not product code. It shares nothing with billetjax's simulator or glyphs (OpenCV's
fonts: Hershey in OpenCV 4, the embedded sans in OpenCV 5; its own geometry), so a workflow tuned
to its own simulator fails here.

- `render_frame` / `render_set`: 16:9 frames of a billet end face with each character's outline
  (traced from the rendered mask, holes bridged into the ring), tight box and raster mask.
- `write_cvat`, `write_labelstudio`, `write_roboflow`: layout, ids and JSON as CVAT "COCO 1.0",
  Label Studio "COCO" and Roboflow "COCO JSON" export them (see each writer).
- `encode`: JPEG with an EXIF Orientation tag, 16-bit PNG (or 12-bit data in it); `corrupt`.

CLI (a train and a test export of one format):
    python tests/support/exports.py --format cvat --images 300 --out DIR [--letters] [--box-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

DIGITS = "0123456789"
LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"     # no I, O, Q: ID schemes leave them out (1, 0 look alike)
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
VISIBILITIES = ("well", "poor", "partial")
OPENCV5 = int(cv2.__version__.split(".")[0]) >= 5
SS = 4                                   # supersampling of glyph outlines and masks
DATE = "2024-05-13T09:30:00+00:00"       # fixed export date: same seed, same bytes
TRAIN_MIX = {"well": 0.76, "poor": 0.10, "partial": 0.14}
TEST_MIX = {"well": 0.50, "poor": 0.20, "partial": 0.30}
# Per-site look (a site name not listed looks like "B"); per-visibility stamp relief and optics.
SITE_LOOK = {"A": dict(level=(0.50, 0.66), tint=(0.80, 0.93, 1.12), scale=0.35, scratches=(4, 12)),
             "B": dict(level=(0.38, 0.54), tint=(1.00, 1.00, 1.02), scale=0.55, scratches=(10, 30))}
VIS_LOOK = {"well": dict(relief=(0.8, 1.3), dark=(0.1, 0.22), blur=(0, 0.6), noise=0.012, contrast=(0.9, 1.1)),
            "poor": dict(relief=(0.45, 0.8), dark=(0.04, 0.1), blur=(0.8, 1.5), noise=0.03, contrast=(0.6, 0.85)),
            "partial": dict(relief=(0.6, 1.1), dark=(0.08, 0.2), blur=(0, 0.8), noise=0.015, contrast=(0.85, 1.05))}


@dataclass
class Char:
    """One stamped character. Coordinates are frame pixels; pixel (i, j) spans [i, i+1) x [j, j+1)."""
    name: str
    polygons: list[np.ndarray]           # float (N, 2) rings, holes bridged in; one per piece
    bbox: tuple[float, float, float, float]   # tight x, y, w, h of the rings
    mask: np.ndarray                     # bool crop: pixels more than half covered
    origin: tuple[int, int]              # (x, y) of the crop's top-left pixel
    coverage: np.ndarray = field(repr=False, default=None)  # float crop in [0, 1]
    occluded: bool = False               # partly covered by scale or dirt

    def full_mask(self, height: int, width: int) -> np.ndarray:
        out = np.zeros((height, width), bool)
        x, y = self.origin
        out[y:y + self.mask.shape[0], x:x + self.mask.shape[1]] = self.mask
        return out


@dataclass
class Frame:
    name: str
    image: np.ndarray                    # float32 [H, W] grey in [0, 1]
    tint: np.ndarray                     # BGR gains of the 8-bit colour image
    chars: list[Char]
    billet_id: str                       # stamped string in reading order (rows concatenated)
    site: str | None
    visibility: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    def pixels(self, bit_depth: int | str = 8) -> np.ndarray:
        """uint8 BGR (8), or uint16 grey: full range (16) or 0..4095 ("12-in-16")."""
        if bit_depth == 8:
            return np.clip(np.round(self.image[..., None] * self.tint * 255), 0, 255).astype(np.uint8)
        top = {16: 65535, "12-in-16": 4095}[bit_depth]
        return np.round(np.clip(self.image, 0, 1) * top).astype(np.uint16)


# ---------------------------------------------------------------- glyph outlines
def _bridge(ring: np.ndarray, other: np.ndarray) -> np.ndarray:
    """One ring from two, joined by a zero-width cut at their closest points (a keyhole)."""
    d = ((ring[:, None, :] - other[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(d.argmin(), d.shape)
    return np.concatenate([ring[:i + 1], np.roll(other, -j, 0), other[j:j + 1], ring[i:]])


def one_ring(rings: list[np.ndarray]) -> np.ndarray:
    """All pieces of a character as one ring, as a person tracing it with a polygon tool would."""
    out = rings[0]
    for r in rings[1:]:
        out = _bridge(out, r)
    return out


def _glyph(ch: str, font: int, scale: float, weight: int, grow: int, worn=None) -> list[np.ndarray]:
    """Outline rings of one glyph in pixels, centred on its box (drawn at SS x, then traced).
    `worn` (a random generator) nicks the punch: a thin break across part of the glyph."""
    (tw, th), base = cv2.getTextSize(ch, font, scale * SS, weight)
    pad = weight + abs(grow) + 8
    canvas = np.zeros((th + base + 2 * pad, tw + 2 * pad), np.uint8)
    cv2.putText(canvas, ch, (pad, pad + th), font, scale * SS, 255, weight, cv2.LINE_8)
    if grow:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(grow) + 1,) * 2)
        canvas = (cv2.dilate if grow > 0 else cv2.erode)(canvas, k)
    if worn is not None and worn.random() < 0.5:
        ys, xs = np.nonzero(canvas)
        y = int(ys.min() + worn.uniform(0.3, 0.7) * np.ptp(ys))
        x = int(xs.min() + worn.uniform(0, 0.5) * np.ptp(xs))
        canvas[y:y + SS, x:x + np.ptp(xs) // 2] = 0
    contours, hier = cv2.findContours(canvas, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    rings = []
    for i, c in enumerate(contours):
        if hier[0][i][3] != -1 or cv2.contourArea(c) < 2 * SS * SS:
            continue                     # holes join their outer ring below; specks dropped
        ring = cv2.approxPolyDP(c, 1.0, True)[:, 0].astype(np.float64)
        child = hier[0][i][2]
        while child != -1:
            if cv2.contourArea(contours[child]) >= SS * SS:
                ring = _bridge(ring, cv2.approxPolyDP(contours[child], 1.0, True)[:, 0].astype(np.float64))
            child = hier[0][child][0]
        rings.append((ring + 0.5) / SS)
    pts = np.concatenate(rings)
    centre = (pts.min(0) + pts.max(0)) / 2
    return [r - centre for r in rings if len(r) >= 3]


def _raster(rings: list[np.ndarray], width: int, height: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Coverage crop of rings (area fraction of each pixel) and its origin."""
    pts = np.concatenate(rings)
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 1, (width, height))
    k = 2 * SS                           # fillPoly adds its boundary pixels: keep them small
    big = np.zeros(((y1 - y0) * k, (x1 - x0) * k), np.uint8)
    fixed = [np.round(((r - (x0, y0)) * k - 0.5) * 16).astype(np.int32) for r in rings]
    cv2.fillPoly(big, fixed, 255, cv2.LINE_8, shift=4)
    cov = cv2.resize(big.astype(np.float32) / 255, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return cov, (int(x0), int(y0))


def _stamp_id(rng, width, height, centre, angle, side, letters) -> tuple[list[Char], list[str]]:
    """Lay out 1-3 rows of 15-40 px characters on the face and trace each one."""
    alphabet = DIGITS + LETTERS if letters else DIGITS
    n_rows = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.20]))
    lengths = rng.integers(3, 8, n_rows)
    font = int(rng.choice(FONTS)) | (cv2.FONT_ITALIC if rng.random() < 0.15 else 0)
    line, stretch = rng.uniform(1.3, 1.6), rng.uniform(0.8, 1.15)
    pitch = 0.7 * stretch * rng.uniform(1.1, 1.35)              # cell width / height, first guess
    room_w, room_h = min(0.8 * side, 0.9 * width), min(0.75 * side, 0.85 * height)
    # Cap height 16-33.5 px keeps the boxes of turned characters 15-40 px tall.
    while (h_max := min(33.5, room_w / (lengths.max() * pitch), room_h / (n_rows * line))) < 16:
        if len(lengths) == 1 and lengths[0] <= 2:
            raise ValueError(f"a {width}x{height} frame is too small for 15 px characters")
        lengths = np.maximum(lengths - 1, 2) if lengths.max() > 3 else lengths[:-1]
        n_rows = len(lengths)
    h = rng.uniform(16, h_max)
    rows = ["".join(rng.choice(list(alphabet), n)) for n in lengths]
    if letters and not any(c in LETTERS for c in "".join(rows)):
        rows[-1] = rows[-1][:-1] + str(rng.choice(list(LETTERS)))
    # OpenCV 5 draws its sans font with thickness as a weight (1-8); OpenCV 4 strokes Hershey fonts.
    weight = int(rng.integers(2, 7)) if OPENCV5 else int(round(h * SS * rng.uniform(0.08, 0.13)))
    grow = int(round(h * SS * rng.uniform(-0.015, 0.03)))
    scale = h / cv2.getTextSize("0", font, 1.0, weight)[0][1]
    scale *= h / np.ptp(np.concatenate(_glyph("0", font, scale, weight, grow))[:, 1])   # cap height = h
    shape = np.array([[stretch, -rng.uniform(-0.08, 0.08)], [0, 1]])               # width and slant
    worn = rng.random() < 0.12
    glyphs = [[[(shape @ g.T).T for g in _glyph(c, font, scale, weight, grow, rng if worn else None)] for c in row]
              for row in rows]
    widest = max(np.ptp(np.concatenate(g)[:, 0]) for row in glyphs for g in row)
    pitch = max(pitch * h, 1.12 * widest + 0.06 * h)
    block = np.deg2rad(angle + rng.uniform(-3, 3))
    rot = lambda a: np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    placed = []
    for r, row in enumerate(rows):
        for j, c in enumerate(row):
            off = ((j - (len(row) - 1) / 2) * pitch, (r - (n_rows - 1) / 2) * line * h) + rng.normal(0, 0.04 * h, 2)
            turn = rot(block + np.deg2rad(rng.normal(0, 2)))            # hand-held punches
            placed.append((c, [(turn @ g.T).T + rot(block) @ off for g in glyphs[r][j]]))
    pts = np.concatenate([np.concatenate(rs) for _, rs in placed])
    shift = np.asarray(centre) + rng.uniform(-0.06, 0.06, 2) * side
    lo, hi = pts.min(0) + shift, pts.max(0) + shift
    shift += np.maximum(3 - lo, 0) - np.maximum(hi - (width - 3, height - 3), 0)   # inside the frame
    chars = []
    for name, rings in placed:
        rings = [rg + shift for rg in rings]
        allp = np.concatenate(rings)
        cov, origin = _raster(rings, width, height)
        box = tuple(float(v) for v in (*allp.min(0), *np.ptp(allp, 0)))
        chars.append(Char(name, rings, box, cov > 0.5, origin, cov))
    return chars, rows


# ---------------------------------------------------------------- frames
def _noise(rng, height, width, cell) -> np.ndarray:
    """Smooth noise in about [-1, 1] with features of `cell` pixels."""
    g = rng.uniform(-1, 1, (height // cell + 3, width // cell + 3)).astype(np.float32)
    return cv2.resize(g, (width, height), interpolation=cv2.INTER_CUBIC)


def _poly_mask(points: np.ndarray, height: int, width: int, soft: float) -> np.ndarray:
    m = np.zeros((height, width), np.float32)
    cv2.fillPoly(m, [np.round((points - 0.5) * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
    return cv2.GaussianBlur(m, (0, 0), soft) if soft else m


def render_frame(seed: int = 0, index: int = 0, *, size: tuple[int, int] = (640, 360), letters: bool = True,
                 site: str | None = "A", visibility: str = "well") -> Frame:
    """One camera frame: a billet end face (a rotated square) with an ID stamped in, seeded by (seed, index)."""
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility must be one of {VISIBILITIES}, got {visibility!r}")
    rng = np.random.default_rng([seed, index])
    W, H = size
    look, vis = SITE_LOOK.get(site, SITE_LOOK["B"]), VIS_LOOK[visibility]
    img = 0.13 + 0.05 * _noise(rng, H, W, 60) + 0.02 * _noise(rng, H, W, 5)
    side = min(W, H) * rng.uniform(0.8, 1.15)
    centre = np.array([W / 2, H / 2]) + rng.uniform(-0.08, 0.08, 2) * (W, H)
    angle = rng.uniform(-12, 12)
    corners = cv2.boxPoints((tuple(centre), (side * rng.uniform(0.95, 1.05), side), angle))
    face = _poly_mask(corners, H, W, 1.2)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    g = rng.normal(size=2)
    g /= np.linalg.norm(g)
    surf = (rng.uniform(*look["level"]) + 0.15 * ((xx - centre[0]) * g[0] + (yy - centre[1]) * g[1]) / side
            + 0.06 * _noise(rng, H, W, 40) + 0.04 * _noise(rng, H, W, 10) + 0.03 * rng.standard_normal((H, W)))
    surf -= 0.08 * np.clip((_noise(rng, H, W, 24) - look["scale"]) * 2.5, 0, 1)        # oxide scale
    scratches = np.zeros((H, W), np.float32)
    for _ in range(rng.integers(*look["scratches"])):
        p = centre + rng.uniform(-0.5, 0.5, 2) * side
        q = p + rng.normal(size=2) * rng.uniform(10, side / 3)
        cv2.line(scratches, tuple(int(v) for v in np.round(p * 16)), tuple(int(v) for v in np.round(q * 16)),
                 float(rng.choice([-1, 1]) * rng.uniform(0.03, 0.1)), 1, cv2.LINE_AA, shift=4)
    surf += cv2.GaussianBlur(scratches, (0, 0), 0.6)
    chars, rows = _stamp_id(rng, W, H, centre, angle, side, letters)
    cov = np.zeros((H, W), np.float32)
    for c in chars:
        (x, y), (ch, cw) = c.origin, c.coverage.shape
        np.maximum(cov[y:y + ch, x:x + cw], c.coverage, out=cov[y:y + ch, x:x + cw])
    depth = cv2.GaussianBlur(cov, (0, 0), rng.uniform(0.7, 1.3))                    # engraved relief
    light = np.deg2rad(rng.uniform(0, 360))
    slope = np.cos(light) * cv2.Sobel(depth, cv2.CV_32F, 1, 0) + np.sin(light) * cv2.Sobel(depth, cv2.CV_32F, 0, 1)
    surf += rng.uniform(*vis["relief"]) / 8 * slope - rng.uniform(*vis["dark"]) * cv2.GaussianBlur(cov, (0, 0), 1.0)
    img = img * (1 - face) + surf * face
    if visibility == "partial":                                                      # flakes over characters
        for k in rng.choice(len(chars), size=min(len(chars), int(rng.integers(1, 3))), replace=False):
            x, y, w, h = chars[k].bbox
            t = np.sort(rng.uniform(0, 2 * np.pi, 9))
            rad = h * rng.uniform(0.3, 0.55) * rng.uniform(0.6, 1.2, 9)
            mid = (x, y) + rng.uniform(0.2, 0.8, 2) * (w, h)
            m = _poly_mask(mid + rad[:, None] * np.stack([np.cos(t), np.sin(t)], 1), H, W, 0.8)
            tone = rng.uniform(0.06, 0.2) if rng.random() < 0.6 else rng.uniform(0.65, 0.85)     # scale or dust
            tone += 0.05 * _noise(rng, H, W, 4)
            img = img * (1 - m) + tone * m
            chars[k].occluded = True
    mean = float(img.mean())
    img = mean + (img - mean) * rng.uniform(*vis["contrast"])
    if (blur := rng.uniform(*vis["blur"])) > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    r2 = ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / (W * W / 4 + H * H / 4)
    img = img * (1 - rng.uniform(0.1, 0.3) * r2) + vis["noise"] * rng.standard_normal((H, W))
    tint = np.array(look["tint"]) * rng.uniform(0.97, 1.03, 3)
    img = np.clip(img, 0, 1).astype(np.float32)
    return Frame(f"billet_{index:05d}", img, tint, chars, "".join(rows), site, visibility)


def plan(n: int, mix: dict[str, float], sites: tuple[str, ...] | None = ("A", "B"), seed: int = 0) -> list[tuple]:
    """(site, visibility) for n frames: the visibility mix exactly (rounded), sites alternating, shuffled."""
    counts = {v: int(round(n * f)) for v, f in mix.items()}
    counts["well"] += n - sum(counts.values())
    vis = [v for v, k in counts.items() for _ in range(k)]
    out = [(sites[i % len(sites)] if sites else None, v) for i, v in enumerate(vis)]
    order = np.random.default_rng([seed, 7]).permutation(n)
    return [out[i] for i in order]


def render_set(n: int, seed: int = 0, *, mix: dict[str, float] = TRAIN_MIX, sites=("A", "B"), start: int = 0,
               **kw) -> Iterator[Frame]:
    """n frames (a generator: nothing is kept), indices start..start+n-1."""
    for i, (site, vis) in enumerate(plan(n, mix, sites, seed + start)):
        yield render_frame(seed, start + i, site=site, visibility=vis, **kw)


# ---------------------------------------------------------------- image files
def exif_orientation_segment(orientation: int) -> bytes:
    """A minimal APP1 Exif segment holding only the Orientation tag (0x0112, SHORT)."""
    tiff = b"MM\x00\x2a" + struct.pack(">IH", 8, 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\0" * 4
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


# How to store upright pixels so that a reader applying Orientation k shows them upright.
_STORE = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
          5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, 1), 7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
          8: lambda a: np.rot90(a, -1)}


def encode(frame: Frame, *, jpeg: bool = False, exif_orientation: int | None = None,
           bit_depth: int | str = 8, quality: int = 92) -> tuple[bytes, str]:
    """File bytes and extension. With exif_orientation the pixels are stored turned and tagged so
    that an EXIF-aware reader (cv2.imread, browsers, annotation tools) shows the upright frame."""
    if bit_depth != 8 and jpeg:
        raise ValueError("JPEG holds 8 bits; write bit_depth 16 or '12-in-16' as PNG")
    if exif_orientation is not None and (not jpeg or exif_orientation not in _STORE):
        raise ValueError("exif_orientation needs jpeg=True and a value 1-8")
    px = np.ascontiguousarray(_STORE[exif_orientation or 1](frame.pixels(bit_depth)))
    ext = ".jpg" if jpeg else ".png"
    ok, buf = cv2.imencode(ext, px, [cv2.IMWRITE_JPEG_QUALITY, quality] if jpeg else [cv2.IMWRITE_PNG_COMPRESSION, 6])
    data = buf.tobytes()
    if exif_orientation is not None:
        data = data[:2] + exif_orientation_segment(exif_orientation) + data[2:]
    return data, ext


def corrupt(path, how: str = "truncate", keep: float = 0.5) -> None:
    """Break an image file: 'truncate' (keep a fraction; a cut JPEG may still decode partly),
    'header' (zero the first 64 bytes: never decodes) or 'empty' (0 bytes)."""
    data = Path(path).read_bytes()
    broken = {"truncate": data[:int(len(data) * keep)], "header": b"\0" * 64 + data[64:], "empty": b""}[how]
    Path(path).write_bytes(broken)


# ---------------------------------------------------------------- tool exports
def _attrs(frame: Frame, image_attrs: str, where: str) -> dict:
    """site, visibility, billet_id: as keys on images[] (where="keys") for image_attrs "keys" or
    "both"; in the tool's own carrier (where="native", see each writer) for "native" or "both"."""
    if image_attrs not in ("keys", "native", "both", "none"):
        raise ValueError(f"image_attrs: keys, native, both or none, got {image_attrs!r}")
    if image_attrs not in (where, "both"):
        return {}
    out = {"site": frame.site, "visibility": frame.visibility, "billet_id": frame.billet_id}
    return {k: v for k, v in out.items() if v is not None}


def _files(frames: Iterable[Frame], folder: Path, name, enc: dict):
    """Encode and write each frame; yields (index, frame, file name)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        data, ext = encode(f, **enc)
        fname = name(f, ext, data)
        (folder / fname).write_bytes(data)
        yield i, f, fname


_r = lambda v, nd=2: round(float(v), nd)


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def write_cvat(frames: Iterable[Frame], out, *, labels: str = DIGITS + LETTERS, box_only: bool = False,
               image_attrs: str = "keys", subset: str = "default", jpeg: bool = False, **enc) -> Path:
    """CVAT "COCO 1.0" (Datumaro's coco_instances): annotations/instances_<subset>.json (one line)
    and images/<subset>/<file_name>; `file_name` is relative to images/<subset>/. Ids from 1 in
    label order; rectangles `segmentation: []` with attributes occluded + rotation; polygons with
    2-decimal points and the mask area. native attributes: CVAT keeps per-shape attributes only."""
    from pycocotools import mask as mask_utils
    out = Path(out)
    cat = {n: i + 1 for i, n in enumerate(labels)}
    images, anns = [], []
    name = lambda f, ext, data: f.name + ext
    for i, f, fname in _files(frames, out / "images" / subset, name, dict(jpeg=jpeg, **enc)):
        W, H = f.size
        images.append({"id": i + 1, "width": W, "height": H, "file_name": fname, "license": 0, "flickr_url": "",
                       "coco_url": "", "date_captured": 0, **_attrs(f, image_attrs, "keys")})
        for c in f.chars:
            attrs = {"occluded": c.occluded}
            if box_only:
                x, y, w, h = (_r(v) for v in c.bbox)
                seg, area, box = [], w * h, [x, y, w, h]
                attrs["rotation"] = 0.0
            else:
                seg = [[_r(v) for v in ring.ravel()] for ring in c.polygons]
                area = float(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(seg, H, W))))
                pts = np.concatenate([np.reshape(s, (-1, 2)) for s in seg])
                box = [_r(v) for v in (*pts.min(0), *np.ptp(pts, 0))]
            attrs.update(_attrs(f, image_attrs, "native"))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat[c.name], "segmentation": seg,
                         "area": area, "bbox": box, "iscrowd": 0, "attributes": attrs})
    doc = {"licenses": [{"name": "", "id": 0, "url": ""}],
           "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
           "categories": [{"id": cat[n], "name": n, "supercategory": ""} for n in labels],
           "images": images, "annotations": anns}
    path = out / "annotations" / f"instances_{subset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path


def write_labelstudio(frames: Iterable[Frame], out, *, labels: str = DIGITS + LETTERS, box_only: bool = False,
                      image_attrs: str = "keys", jpeg: bool = False, **enc) -> Path:
    """Label Studio "COCO": result.json (indent 2) + images/; `file_name` "images/<8 hex>-<upload
    name>" (relative to the JSON); categories {id, name} from 0 in sorted label order; image and
    annotation ids from 0; coordinates round-tripped through Label Studio's percentages; one ring
    per polygon; `ignore: 0`. native: Label Studio's COCO export drops per-image choices."""
    out = Path(out)
    names = sorted(labels)
    cat = {n: i for i, n in enumerate(names)}
    images, anns = [], []
    name = lambda f, ext, data: f"{hashlib.md5(data).hexdigest()[:8]}-{f.name}{ext}"
    for i, f, fname in _files(frames, out / "images", name, dict(jpeg=jpeg, **enc)):
        W, H = f.size
        images.append({"width": W, "height": H, "id": i, "file_name": f"images/{fname}",
                       **_attrs(f, image_attrs, "keys")})
        for c in f.chars:
            # Label Studio keeps percentages of the image size; its converter scales them back.
            if box_only:
                box = [float(v) for v in np.array(c.bbox) / (W, H, W, H) * 100 * (W, H, W, H) / 100]
                seg, area = [], box[2] * box[3]
            else:
                ring = one_ring(c.polygons) / (W, H) * 100 / 100 * (W, H)
                seg = [[float(v) for v in ring.ravel()]]
                box, area = [float(v) for v in (*ring.min(0), *np.ptp(ring, 0))], _shoelace(ring)
            anns.append({"id": len(anns), "image_id": i, "category_id": cat[c.name], "segmentation": seg,
                         "bbox": box, "ignore": 0, "iscrowd": 0, "area": area})
    doc = {"images": images, "categories": [{"id": cat[n], "name": n} for n in names], "annotations": anns,
           "info": {"year": 2024, "version": "1.0", "description": "", "contributor": "Label Studio", "url": "",
                    "date_created": "2024-05-13 09:30:00.000000"}}
    path = out / "result.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def write_roboflow(frames: Iterable[Frame], out, *, split: str = "train", project: str = "billets",
                   labels: str = DIGITS + LETTERS, box_only: bool = False, image_attrs: str = "keys",
                   jpeg: bool = True, **enc) -> Path:
    """Roboflow "COCO JSON": <split>/_annotations.coco.json (one line) with the images beside it,
    named "<stem>_<ext>.rf.<32 hex>.jpg"; category 0 = the project (supercategory "none", no
    annotations), classes from 1 in sorted order with supercategory = project; ids from 0;
    images carry license, date_captured and extra.name (the upload name). native: Roboflow's
    image tags, exported as images[].extra.user_tags."""
    out = Path(out)
    names = sorted(labels)
    cat = {n: i + 1 for i, n in enumerate(names)}
    images, anns = [], []
    name = lambda f, ext, data: f"{f.name}_png.rf.{hashlib.md5(data).hexdigest()}{ext}"
    for i, f, fname in _files(frames, out / split, name, dict(jpeg=jpeg, **enc)):
        W, H = f.size
        extra = {"name": f"{f.name}.png"}
        if tags := [f"{k}:{v}" for k, v in _attrs(f, image_attrs, "native").items()]:
            extra["user_tags"] = tags
        images.append({"id": i, "license": 1, "file_name": fname, "height": H, "width": W, "date_captured": DATE,
                       "extra": extra, **_attrs(f, image_attrs, "keys")})
        for c in f.chars:
            if box_only:
                seg, box = [], [_r(v, 1) for v in c.bbox]
                area = _r(box[2] * box[3], 3)
            else:
                ring = np.round(one_ring(c.polygons), 3)
                seg = [[float(v) for v in ring.ravel()]]
                box, area = [_r(v, 3) for v in (*ring.min(0), *np.ptp(ring, 0))], _r(_shoelace(ring), 3)
            anns.append({"id": len(anns), "image_id": i, "category_id": cat[c.name], "bbox": box, "area": area,
                         "segmentation": seg, "iscrowd": 0})
    doc = {"info": {"year": "2024", "version": "1", "description": "Exported from roboflow.com", "contributor": "",
                    "url": "https://public.roboflow.com/object-detection/undefined", "date_created": DATE},
           "licenses": [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}],
           "categories": [{"id": 0, "name": project, "supercategory": "none"}]
           + [{"id": cat[n], "name": n, "supercategory": project} for n in names],
           "images": images, "annotations": anns}
    path = out / split / "_annotations.coco.json"
    path.write_text(json.dumps(doc, separators=(",", ":")))
    (out / "README.roboflow.txt").write_text(f"{project} - v1\n\nThis dataset was exported via roboflow.com\n")
    return path


WRITERS = {"cvat": write_cvat, "labelstudio": write_labelstudio, "roboflow": write_roboflow}


def image_folder(fmt: str, json_path: Path) -> Path:
    """The folder a format's `file_name`s resolve against."""
    json_path = Path(json_path)
    if fmt == "cvat":
        return json_path.parent.parent / "images" / json_path.stem.removeprefix("instances_")
    return json_path.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", required=True, choices=sorted(WRITERS))
    p.add_argument("--images", type=int, required=True, help="train pool size")
    p.add_argument("--test-images", type=int, default=None, help="test pool size (default: half, at least 120)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--box-only", action="store_true", help="rectangles only (no polygons)")
    p.add_argument("--letters", action="store_true", help="IDs of digits and capital letters")
    p.add_argument("--jpeg", action="store_true", help="JPEG images (Roboflow always writes JPEG)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="640x360", help="frame WIDTHxHEIGHT")
    a = p.parse_args(argv)
    size = tuple(int(v) for v in a.size.lower().split("x"))
    n_test = a.test_images or max(120, a.images // 2)
    labels = DIGITS + LETTERS if a.letters else DIGITS
    kw = dict(labels=labels, box_only=a.box_only)
    if a.format != "roboflow":
        kw["jpeg"] = a.jpeg
    paths = {}
    for split, n, mix, start in (("train", a.images, TRAIN_MIX, 0), ("test", n_test, TEST_MIX, 1_000_000)):
        frames = render_set(n, a.seed, mix=mix, start=start, size=size, letters=a.letters)
        if a.format == "roboflow":
            paths[split] = write_roboflow(frames, a.out, split=split, **kw)
        else:
            paths[split] = WRITERS[a.format](frames, a.out / split, **kw)
    print("data:\n  source: coco\n  coco:")
    for split, path in paths.items():
        print(f"    {split}: {path.resolve()}\n    {split}_images: {image_folder(a.format, path).resolve()}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
