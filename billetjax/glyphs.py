"""The stamp alphabet: each character defined once as a polygon with holes (paper §2.2.4).

The shapes live in `billetjax/data/glyph_polygons.json` as pairs of numbers: for every character
an exterior ring and its interior rings (the counters: one for 0, 4, 6, 9, A, D, O, P, Q, R, two
for 8 and B), in a unit box with x to the right, y downwards, height 1 and width 0.6. They imitate
the bold, round-ended characters of a hot-stamping die: they were designed as stroke centre-lines
of width 0.15 buffered with flat caps and round joins, then stored as plain coordinates, so no font
renderer is involved anywhere. The built-in set holds the digits 0-9 and the capital letters A-Z
(the letters' centre-lines are in `billetjax.glyph_design`, which regenerates the file).

A plant whose dies differ, or whose IDs use other characters, points `synth.glyphs` at a glyph
file of its own in the same format (docs/glyphs.md): `load_glyph_set` reads it over the built-in
set, validating every entry, and `require_glyphs` refuses category names without a glyph before
any long work.

Both the billet renderer (`billetjax.data.simulate`) and the synthesis stage use these shapes; they
must not share any stamp-drawing code beyond this module.

Coordinates in pixels follow COCO: pixel (row r, column c) covers [c, c+1) x [r, r+1), so its
centre is (c + 0.5, r + 0.5).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

GLYPH_FILE = "glyph_polygons.json"
# Width of the unit box (height 1): the aspect of a die character.
GLYPH_WIDTH = 0.6
# Stroke width of the built-in glyphs in the unit box (their centre-lines were buffered by half).
GLYPH_STROKE = 0.15
# Glyph coordinates may stray this far outside the unit box (rounding in a hand-made file).
BOX_TOLERANCE = 1e-3
# Fixed-point bits for cv2.fillPoly: 1/16 px vertex precision.
_SHIFT = 4

BUILTIN = f"billetjax/data/{GLYPH_FILE} (built in)"


@dataclass(frozen=True)
class GlyphSet:
    """Characters and their polygons (unit box, x right, y down), with the file they came from."""

    source: str                      # where the glyphs come from, for messages
    alphabet: str                    # every character of the set, in display order
    shapes: Mapping[str, Polygon] = field(repr=False)

    def __contains__(self, char: object) -> bool:
        return char in self.shapes

    def glyph(self, char: str) -> Polygon:
        """The polygon of one character; KeyError naming the set's source and alphabet."""
        try:
            return self.shapes[char]
        except KeyError:
            raise KeyError(f"no glyph for {char!r} in {self.source}; its alphabet is {self.alphabet!r}") from None

    def missing(self, names: Iterable[str]) -> list[str]:
        """The names (in the given order, once each) that have no glyph here."""
        return list(dict.fromkeys(str(n) for n in names if str(n) not in self.shapes))


class GlyphFileError(ValueError):
    """A glyph file that cannot be used; the message names the file and the character."""


def _ring(value, where: str) -> list[tuple[float, float]]:
    if not isinstance(value, list) or len(value) < 3:
        raise GlyphFileError(f"{where}: a ring is a list of at least 3 [x, y] points")
    points = []
    for point in value:
        if (not isinstance(point, list) or len(point) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                           for v in point)):
            raise GlyphFileError(f"{where}: {point!r} is not an [x, y] pair of finite numbers")
        points.append((float(point[0]), float(point[1])))
    return points


def _polygon(char: str, record, source: str) -> Polygon:
    """One glyph record as a valid polygon inside the unit box, or GlyphFileError."""
    where = f"{source}: glyph {char!r}"
    if not isinstance(record, dict) or "exterior" not in record:
        raise GlyphFileError(f"{where}: expected an object with 'exterior' (and 'holes')")
    unknown = sorted(set(record) - {"exterior", "holes"})
    if unknown:
        raise GlyphFileError(f"{where}: unknown keys {unknown}; a glyph has 'exterior' and 'holes'")
    holes = record.get("holes", [])
    if not isinstance(holes, list):
        raise GlyphFileError(f"{where}: 'holes' must be a list of rings")
    polygon = Polygon(_ring(record["exterior"], f"{where}, exterior"),
                      [_ring(h, f"{where}, hole {i}") for i, h in enumerate(holes)])
    if not polygon.is_valid:
        raise GlyphFileError(f"{where} is not a valid polygon: {shapely.is_valid_reason(polygon)}")
    if polygon.area <= 0:
        raise GlyphFileError(f"{where} has no area")
    x0, y0, x1, y1 = polygon.bounds
    if x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE or x1 > GLYPH_WIDTH + BOX_TOLERANCE or y1 > 1 + BOX_TOLERANCE:
        raise GlyphFileError(
            f"{where} reaches outside the unit box [0, {GLYPH_WIDTH}] x [0, 1] (x right, y down): "
            f"its bounds are x {x0:.4g}..{x1:.4g}, y {y0:.4g}..{y1:.4g}")
    return polygon


def parse_glyph_table(table, source: str) -> GlyphSet:
    """Validate a glyph table (the JSON format of docs/glyphs.md) and build its polygons.

    Refuses, naming `source` and the character: a missing or malformed `glyphs` object, a key
    that is not one character, an `alphabet` character without an entry (or an entry missing from
    `alphabet`), a ring that is not a list of [x, y] pairs, an invalid polygon (self-crossing, a
    hole outside its exterior, ...) and a glyph outside the unit box.
    """
    if not isinstance(table, dict) or not isinstance(table.get("glyphs"), dict) or not table["glyphs"]:
        raise GlyphFileError(f"{source}: expected a JSON object with a non-empty 'glyphs' object "
                             "(one entry per character)")
    glyphs = table["glyphs"]
    bad_keys = [k for k in glyphs if len(k) != 1 or k.isspace()]
    if bad_keys:
        raise GlyphFileError(f"{source}: glyph names {bad_keys} are not single characters; each entry "
                             "of 'glyphs' is one character of a billet ID")
    alphabet = table.get("alphabet", "".join(glyphs))
    if not isinstance(alphabet, str) or len(set(alphabet)) != len(alphabet):
        raise GlyphFileError(f"{source}: 'alphabet' must be a string listing each character once")
    missing = [c for c in alphabet if c not in glyphs]
    if missing:
        raise GlyphFileError(f"{source}: alphabet characters {missing} have no entry in 'glyphs'")
    unlisted = [c for c in glyphs if c not in alphabet]
    if unlisted:
        raise GlyphFileError(f"{source}: glyphs {unlisted} are missing from 'alphabet'; list every "
                             "character there (or leave 'alphabet' out)")
    box = table.get("box")
    if box is not None and box != {"width": GLYPH_WIDTH, "height": 1.0}:
        raise GlyphFileError(f"{source}: 'box' is {box!r}; glyphs are drawn in the unit box "
                             f"{{'width': {GLYPH_WIDTH}, 'height': 1.0}}")
    shapes = {c: _polygon(c, glyphs[c], source) for c in alphabet}
    return GlyphSet(source=source, alphabet=alphabet, shapes=MappingProxyType(shapes))


@lru_cache(maxsize=1)
def builtin_glyphs() -> GlyphSet:
    """The built-in glyph set: the digits 0-9 and the capital letters A-Z."""
    text = resources.files("billetjax.data").joinpath(GLYPH_FILE).read_text()
    return parse_glyph_table(json.loads(text), BUILTIN)


@lru_cache(maxsize=8)
def _glyph_file(path: str, mtime_ns: int, size: int) -> GlyphSet:
    # Keyed by modification time and size: an edited file is read again.
    try:
        table = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise GlyphFileError(f"{path}: not valid JSON ({err})") from None
    own = parse_glyph_table(table, path)
    base = builtin_glyphs()
    alphabet = base.alphabet + "".join(c for c in own.alphabet if c not in base)
    return GlyphSet(source=f"{path} over the built-in glyphs", alphabet=alphabet,
                    shapes=MappingProxyType({**base.shapes, **own.shapes}))


def load_glyph_set(glyph_file: str | os.PathLike | None = None) -> GlyphSet:
    """The glyphs synthesis draws from: the built-in set, or `glyph_file` (`synth.glyphs`) over it.

    A plant's file adds characters to the built-in digits and letters, and replaces those it
    redefines. Refuses a missing file and every problem `parse_glyph_table` names.
    """
    if glyph_file is None:
        return builtin_glyphs()
    path = Path(glyph_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: glyph file not found (synth.glyphs)")
    stat = path.stat()
    return _glyph_file(str(path), stat.st_mtime_ns, stat.st_size)


def require_glyphs(category_names: Iterable[str], glyph_file: str | os.PathLike | None = None,
                   where: str = "categories") -> GlyphSet:
    """The glyph set, after checking that every category name has a glyph in it.

    Synthesis makes every category's stamps from its glyph, so a category without one cannot be
    synthesised. Raises ValueError naming every such category, `where` they come from (e.g. the
    COCO file) and the two ways out: add the characters to a glyph file of your own set as
    `synth.glyphs`, or rename the categories.
    """
    glyphs = load_glyph_set(glyph_file)
    missing = glyphs.missing(category_names)
    if missing:
        longer = [n for n in missing if len(n) != 1]
        note = (f" ({longer} are not single characters: a category is one stamped character)"
                if longer else "")
        raise ValueError(
            f"{where}: categories {missing} have no glyph in {glyphs.source}{note}. Synthesis draws every "
            f"category's stamps from its glyph: add {'them' if len(missing) > 1 else 'it'} to a glyph file "
            "of your own (format: docs/glyphs.md) and set synth.glyphs to that file, or rename the "
            f"categories to characters that have glyphs ({glyphs.alphabet})")
    return glyphs


def glyph(char: str) -> Polygon:
    """The built-in polygon (with holes) of one character in the unit box: x right, y down, height 1."""
    return builtin_glyphs().glyph(char)


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
