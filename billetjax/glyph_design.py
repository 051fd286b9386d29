"""How the capital letters of the stamp alphabet were designed; regenerates `glyph_polygons.json`.

Every letter is a handful of stroke centre-lines (polylines, elliptical arcs, closed loops) in the
glyph's unit box (x right, y down, height 1, width `GLYPH_WIDTH` = 0.6). Each centre-line is
buffered to the stroke width 0.15 with flat caps and round joins, the strokes are united and
clipped to the rows 0 <= y <= 1 (so slanted legs stand flat on the base line), and the result is
centred horizontally. That is how the digits were made: flat stroke ends, outer corners rounded by
the join, inner corners sharp.

The digits in the file are kept exactly as they are stored (their centre-lines are not part of
this module): regenerating adds or replaces letters only, so the default study, whose IDs are
digits, keeps its bytes. Run `python -m billetjax.glyph_design` to rewrite the file after editing
a letter here; `tests/test_glyphs.py` checks that the file matches this module.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import shapely
from shapely.geometry import LinearRing, LineString, Polygon, box
from shapely.geometry.polygon import orient

from billetjax.glyphs import GLYPH_STROKE, GLYPH_WIDTH
from billetjax.vocabulary import LETTERS

HALF = GLYPH_STROKE / 2
# Decimals stored in the file (1e-4 glyph heights: far below a pixel at any image size).
DECIMALS = 4
# Vertices per quarter circle of a round join, and the simplification after the union: together
# they give outlines of a few dozen vertices, as the digits have.
QUAD_SEGS = 6
SIMPLIFY = 0.0015
# Arcs are sampled every this many degrees.
ARC_STEP_DEG = 7.5

# Frequent centre-line coordinates: the left and right stroke axes of a full-width letter, the
# axes of the top and bottom bars, and the middle.
L, R, C = HALF, GLYPH_WIDTH - HALF, GLYPH_WIDTH / 2
T, B = HALF, 1.0 - HALF


def arc(cx: float, cy: float, rx: float, ry: float, start_deg: float, end_deg: float) -> list[tuple[float, float]]:
    """Points of an elliptical arc from `start_deg` to `end_deg` (either direction).

    Angles as on the screen with y down: 0 = right, 90 = down, -90 = up.
    """
    steps = max(int(math.ceil(abs(end_deg - start_deg) / ARC_STEP_DEG)), 1)
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in (start_deg + (end_deg - start_deg) * i / steps for i in range(steps + 1))]


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]]:
    return arc(cx, cy, rx, ry, 0.0, 360.0)[:-1]


# Centre-lines per letter: ("line", points) is an open polyline, ("loop", points) a closed one.
# Legs that end slanted run past the box and are cut flat at y = 0 or y = 1.
def _centre_lines() -> dict[str, list[tuple[str, list[tuple[float, float]]]]]:
    # Bowls of B, P, R: a straight run from the spine, then a half ellipse back to the spine.
    def bowl(top: float, bottom: float, straight_to: float, right: float) -> list[tuple[float, float]]:
        ry = (bottom - top) / 2
        return [(L, top), (straight_to, top), *arc(straight_to, top + ry, right - straight_to, ry, -90, 90),
                (straight_to, bottom), (L, bottom)]

    o_rx, o_ry = R - C, 0.5 - T  # the O and its kin: an ellipse touching the box on all sides
    mid = 0.49                   # axis of the middle bars (a little above half, as dies cut them)
    return {
        "A": [("line", [(0.043, 1.2), (0.24, T), (0.36, T), (0.557, 1.2)]),
              ("line", [(0.1, 0.68), (0.5, 0.68)])],
        "B": [("line", [(L, 1.0), (L, 0.0)]),
              ("line", bowl(T, mid, 0.32, 0.49)),
              ("line", bowl(mid, B, 0.32, R))],
        "C": [("line", arc(C, 0.5, o_rx, o_ry, -38, -322))],
        "D": [("line", [(L, 1.0), (L, 0.0)]),
              ("line", [(L, T), (0.25, T), *arc(0.25, T + 0.275, R - 0.25, 0.275, -90, 0),
                        *arc(0.25, B - 0.275, R - 0.25, 0.275, 0, 90), (0.25, B), (L, B)])],
        "E": [("line", [(0.56, T), (L, T), (L, B), (0.56, B)]),
              ("line", [(L, mid), (0.47, mid)])],
        "F": [("line", [(0.56, T), (L, T), (L, 1.0)]),
              ("line", [(L, mid + 0.02), (0.47, mid + 0.02)])],
        "G": [("line", [*arc(C, 0.5, o_rx, o_ry, -50, -360), (R, 0.7)]),
              ("line", [(R, 0.56), (0.28, 0.56)])],
        "H": [("line", [(L, 0.0), (L, 1.0)]),
              ("line", [(R, 0.0), (R, 1.0)]),
              ("line", [(L, mid), (R, mid)])],
        "I": [("line", [(C, T), (C, B)]),
              ("line", [(0.12, T), (0.48, T)]),
              ("line", [(0.12, B), (0.48, B)])],
        "J": [("line", [(0.15, T), (0.5, T)]),
              ("line", [(0.44, T), (0.44, 0.7), *arc(0.26, 0.7, 0.18, 0.225, 0, 180), (0.08, 0.63)])],
        "K": [("line", [(L, 0.0), (L, 1.0)]),
              ("line", [(0.575, -0.1), (L, 0.62)]),
              ("line", [(0.25, 0.43), (0.5515, 1.1)])],
        "L": [("line", [(L, 0.0), (L, B), (0.56, B)])],
        "M": [("line", [(L, 1.0), (L, T), (C, 0.66), (R, T), (R, 1.0)])],
        "N": [("line", [(L, 1.0), (L, T), (R, B), (R, 0.0)])],
        "O": [("loop", _ellipse(C, 0.5, o_rx, o_ry))],
        "P": [("line", [(L, 1.0), (L, 0.0)]),
              ("line", bowl(T, 0.56, 0.3, R))],
        # A smaller ring than the O's, so that the tail can reach the base line.
        "Q": [("loop", _ellipse(C, 0.46, o_rx, 0.385)),
              ("line", [(0.3, 0.6), (0.53, 1.1)])],
        "R": [("line", [(L, 1.0), (L, 0.0)]),
              ("line", bowl(T, 0.54, 0.3, R)),
              ("line", [(0.27, 0.54), (0.55, 1.1)])],
        "S": [("line", [*arc(C, 0.29, 0.21, 0.215, -25, -270), *arc(C, 0.71, R - C, 0.215, -90, 160)])],
        "T": [("line", [(0.0, T), (GLYPH_WIDTH, T)]),
              ("line", [(C, T), (C, 1.0)])],
        "U": [("line", [(L, 0.0), (L, 0.7), *arc(C, 0.7, R - C, B - 0.7, 180, 0), (R, 0.0)])],
        "V": [("line", [(0.055, -0.1), (C, B), (0.545, -0.1)])],
        "W": [("line", [(0.08, -0.06), (0.175, B), (C, 0.42), (0.425, B), (0.52, -0.06)])],
        "X": [("line", [(0.066, -0.06), (0.534, 1.06)]),
              ("line", [(0.534, -0.06), (0.066, 1.06)])],
        "Y": [("line", [(0.06, -0.08), (C, 0.52), (0.54, -0.08)]),
              ("line", [(C, 0.52), (C, 1.0)])],
        "Z": [("line", [(0.06, T), (R, T), (L, B), (0.54, B)])],
    }


def design_letter(char: str) -> Polygon:
    """The polygon (with counters) of one capital letter, before rounding to the file's decimals."""
    strokes = _centre_lines()[char]
    shapes = []
    for kind, points in strokes:
        line = LinearRing(points) if kind == "loop" else LineString(points)
        shapes.append(line.buffer(HALF, quad_segs=QUAD_SEGS, cap_style="flat", join_style="round"))
    letter = shapely.union_all(shapes).intersection(box(-1.0, 0.0, 2.0, 1.0))
    letter = letter.simplify(SIMPLIFY, preserve_topology=True)
    if letter.geom_type != "Polygon":
        raise ValueError(f"letter {char!r}: strokes do not join into one polygon ({letter.geom_type})")
    x0, _, x1, _ = letter.bounds
    return shapely.affinity.translate(letter, GLYPH_WIDTH / 2 - (x0 + x1) / 2, 0.0)


def _ring_coords(ring) -> list[list[float]]:
    # Rings are stored open (no repeated first point), as the digits are.
    return [[round(x, DECIMALS), round(y, DECIMALS)] for x, y in list(ring.coords)[:-1]]


def letter_record(char: str) -> dict:
    """One letter as the file stores it: exterior counter-clockwise in stored coordinates, holes
    clockwise (the digits' orientation), coordinates rounded to `DECIMALS`."""
    polygon = orient(design_letter(char), sign=1.0)
    return {"exterior": _ring_coords(polygon.exterior), "holes": [_ring_coords(h) for h in polygon.interiors]}


def build_table(current: dict) -> dict:
    """The glyph table with every letter from this module and the other characters of `current`
    (the digits) untouched; the alphabet lists the old characters first, then the letters."""
    glyphs = {c: g for c, g in current["glyphs"].items() if c not in LETTERS}
    glyphs.update({c: letter_record(c) for c in LETTERS})
    alphabet = "".join(c for c in current["alphabet"] if c not in LETTERS) + LETTERS
    table = dict(current)
    table.update(alphabet=alphabet, glyphs=glyphs,
                 note="Bold die-stamp digits and capital letters, designed as stroke centre-lines buffered "
                      "by shapely (letters: billetjax/glyph_design.py) and stored here; x right, y down, "
                      "unit height.")
    return table


def dumps(table: dict) -> str:
    """The file's text: compact JSON, no trailing newline (as the file was first written)."""
    return json.dumps(table, separators=(",", ":"), ensure_ascii=False)


def main(path: str | None = None) -> None:
    """Rewrite the package's glyph file (or `path`) with the letters of this module."""
    target = Path(path) if path else Path(__file__).with_name("data") / "glyph_polygons.json"
    table = build_table(json.loads(target.read_text()))
    target.write_text(dumps(table))
    print(f"{target}: {len(table['alphabet'])} characters")


if __name__ == "__main__":
    main(*sys.argv[1:2])
