"""The stamp alphabet: valid, distinct polygons with the counters a reader expects."""

import itertools

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from billetjax.glyphs import ALPHABET, GLYPH_WIDTH, fit_to_square, glyph, rasterise

# Counters (enclosed holes) of bold die digits, as a person counts them.
EXPECTED_HOLES = {"0": 1, "1": 0, "2": 0, "3": 0, "4": 1, "5": 0, "6": 1, "7": 0, "8": 2, "9": 1}


def test_alphabet_is_the_ten_digits():
    assert ALPHABET == "0123456789"


@pytest.mark.parametrize("char", list(ALPHABET))
def test_glyph_valid_in_unit_box_with_expected_holes(char):
    polygon = glyph(char)
    assert isinstance(polygon, Polygon)
    assert polygon.is_valid and not polygon.is_empty
    x0, y0, x1, y1 = polygon.bounds
    assert -1e-6 <= x0 and x1 <= GLYPH_WIDTH + 1e-6
    assert y0 == pytest.approx(0.0, abs=1e-3) and y1 == pytest.approx(1.0, abs=1e-3)
    assert len(polygon.interiors) == EXPECTED_HOLES[char]
    # A bold stroke: ink covers a fair part of the box, but it is no blob.
    assert 0.15 < polygon.area / (GLYPH_WIDTH * 1.0) < 0.7


def test_digits_are_distinct():
    for a, b in itertools.combinations(ALPHABET, 2):
        pa, pb = glyph(a), glyph(b)
        iou = pa.intersection(pb).area / pa.union(pb).area
        assert iou < 0.8, (a, b, iou)


def test_unknown_character_is_refused_with_its_name():
    with pytest.raises(KeyError, match="'Z'"):
        glyph("Z")


def test_rasterise_keeps_holes_and_matches_area():
    size = 128
    polygon = fit_to_square(glyph("8"), size, margin=0.1)
    mask = rasterise(polygon, size)
    assert mask.dtype == np.uint8 and mask.shape == (size, size)
    assert set(np.unique(mask)) <= {0, 255}
    # Pixel count equals the polygon area (pixels are unit squares) to within the outline.
    assert abs((mask > 0).sum() - polygon.area) < 0.05 * polygon.area
    # The centres of both counters of the 8 stay empty.
    for hole in polygon.interiors:
        cx, cy = np.asarray(hole.coords).mean(axis=0)
        assert mask[int(cy), int(cx)] == 0


def test_rasterise_pixel_convention_is_coco():
    # The unit square [2, 3) x [5, 6) is exactly pixel (row 5, column 2).
    mask = rasterise(box(1.9, 4.9, 3.1, 6.1), (10, 10))
    assert mask.sum() == 255 and mask[5, 2] == 255
    soft = rasterise(box(1.5, 4.5, 3.5, 6.5), (10, 10), antialiased=True)
    assert soft.max() > 0 and soft.sum() > 0


def test_fit_to_square_centres_with_margin():
    fitted = fit_to_square(glyph("1"), 100, margin=0.2)
    x0, y0, x1, y1 = fitted.bounds
    assert y0 == pytest.approx(20.0, abs=1e-6) and y1 == pytest.approx(80.0, abs=1e-6)
    assert (x0 + x1) / 2 == pytest.approx(50.0, abs=1e-6)
