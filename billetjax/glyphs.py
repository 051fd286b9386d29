"""The stamp alphabet: each character defined once as a polygon with holes (paper §2.2.4).

The shapes live in `billetjax/data/glyph_polygons.json` as pairs of numbers: for every character
an exterior ring and its interior rings (the counters: one for 0, 4, 6, 9, two for 8), in a unit
box with x to the right, y downwards, height 1 and width 0.6. They imitate the bold, round-ended
digits of a hot-stamping die: they were designed as stroke centre-lines of width 0.15 buffered
with round joins, then stored as plain coordinates, so no font renderer is involved anywhere.
To add letters, add entries to the file's `glyphs` and `alphabet`; nothing here is digit-specific.

Both the billet renderer (`billetjax.data.simulate`) and the synthesis stage use these shapes; they
must not share any stamp-drawing code beyond this module.

Coordinates in pixels follow COCO: pixel (row r, column c) covers [c, c+1) x [r, r+1), so its
centre is (c + 0.5, r + 0.5).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

GLYPH_FILE = "glyph_polygons.json"
# Width of the unit box (height 1): the aspect of a die character.
GLYPH_WIDTH = 0.6
# Fixed-point bits for cv2.fillPoly: 1/16 px vertex precision.
_SHIFT = 4


@lru_cache(maxsize=1)
def _table() -> dict:
    text = resources.files("billetjax.data").joinpath(GLYPH_FILE).read_text()
    table = json.loads(text)
    missing = [c for c in table["alphabet"] if c not in table["glyphs"]]
    if missing:
        raise ValueError(f"{GLYPH_FILE}: alphabet characters without a polygon: {missing}")
    return table


ALPHABET: str = _table()["alphabet"]


@lru_cache(maxsize=None)
def glyph(char: str) -> Polygon:
    """The polygon (with holes) of one character in the unit box: x right, y down, height 1."""
    record = _table()["glyphs"].get(char)
    if record is None:
        raise KeyError(f"no glyph for {char!r} in {GLYPH_FILE}; alphabet is {ALPHABET!r}")
    polygon = Polygon(record["exterior"], record["holes"])
    if not polygon.is_valid:
        raise ValueError(f"{GLYPH_FILE}: glyph {char!r} is not a valid polygon: "
                         f"{shapely.is_valid_reason(polygon)}")
    return polygon


def fit_to_square(polygon: Polygon | MultiPolygon, size_px: int, margin: float = 0.15
                  ) -> Polygon | MultiPolygon:
    """Scale and centre a geometry into a `size_px` square, leaving `margin` (fraction) each side.

    Keeps the aspect ratio: the longer side of the bounding box spans `(1 - 2 margin) size_px`.
    """
    x0, y0, x1, y1 = polygon.bounds
    span = max(x1 - x0, y1 - y0, 1e-9)
    scale = (1.0 - 2.0 * margin) * size_px / span
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    return shapely.affinity.affine_transform(
        polygon, [scale, 0.0, 0.0, scale, size_px / 2.0 - scale * cx, size_px / 2.0 - scale * cy])


def polygon_rings(geometry: Polygon | MultiPolygon) -> list[np.ndarray]:
    """All rings (exteriors and holes) of a polygon or multipolygon as float64 [K, 2] arrays."""
    parts = getattr(geometry, "geoms", [geometry])
    rings: list[np.ndarray] = []
    for part in parts:
        if part.is_empty:
            continue
        rings.append(np.asarray(part.exterior.coords)[:-1])
        rings.extend(np.asarray(ring.coords)[:-1] for ring in part.interiors)
    return rings


def rasterise(polygon: Polygon | MultiPolygon, size_px: int | tuple[int, int], *,
              antialiased: bool = False, value: int = 255, supersample: int = 4) -> np.ndarray:
    """Fill a polygon given in pixel coordinates into a uint8 mask of `size_px` (int or (H, W)).

    Holes stay empty (all rings go to one even-odd `cv2.fillPoly` call). The polygon is filled at
    `supersample` times the resolution and averaged down, inside its bounding box only, so the
    mask's area matches the polygon's (OpenCV alone grows shapes by half a pixel).
    `antialiased` keeps the graded coverage (0..value); else a pixel is `value` where at least
    half of it is covered. Use `fit_to_square` first to bring a unit-box glyph to pixels.
    """
    height, width = (size_px, size_px) if np.isscalar(size_px) else size_px
    height, width = int(height), int(width)
    mask = np.zeros((height, width), np.uint8)
    rings = polygon_rings(polygon)
    if not rings:
        return mask
    x0, y0, x1, y1 = polygon.bounds
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    if c1 <= c0 or r1 <= r0:
        return mask
    factor = max(int(supersample), 1)
    fine = np.zeros(((r1 - r0) * factor, (c1 - c0) * factor), np.uint8)
    # Fine pixel centres sit at +0.5 (COCO); OpenCV puts them at integer coordinates.
    origin = np.array([c0, r0], np.float64)
    fixed = [np.round(((ring - origin) * factor - 0.5) * (1 << _SHIFT)).astype(np.int32)
             for ring in rings]
    cv2.fillPoly(fine, fixed, 255, lineType=cv2.LINE_8, shift=_SHIFT)
    coverage = fine.reshape(r1 - r0, factor, c1 - c0, factor).mean(axis=(1, 3)) / 255.0
    if antialiased:
        window = np.round(coverage * value)
    else:
        window = np.where(coverage >= 0.5, value, 0)
    mask[r0:r1, c0:c1] = window.astype(np.uint8)
    return mask
