"""The stamp alphabet: valid, distinct polygons with the counters a reader expects; glyph files of
one's own (synth.glyphs) and the check that every category has a glyph."""

import hashlib
import itertools
import json
import string
from importlib import resources

import numpy as np
import pytest
from shapely.geometry import Polygon, box

from billetjax import glyph_design
from billetjax.glyphs import (
    GLYPH_WIDTH,
    GlyphFileError,
    builtin_glyphs,
    fit_to_square,
    glyph,
    load_glyph_set,
    rasterise,
    require_glyphs,
)

ALPHABET = builtin_glyphs().alphabet
# Counters (enclosed holes) of bold die characters, as a person counts them.
EXPECTED_HOLES = {"0": 1, "1": 0, "2": 0, "3": 0, "4": 1, "5": 0, "6": 1, "7": 0, "8": 2, "9": 1,
                  **{c: 0 for c in string.ascii_uppercase},
                  "A": 1, "B": 2, "D": 1, "O": 1, "P": 1, "Q": 1, "R": 1}
# SHA-256 of the digits' records (sorted keys, compact) as first committed: the default study's
# IDs are digits, so their shapes must never change when letters are added or redesigned.
DIGITS_SHA256 = "0f307f3006667839f73e87cdad9628a5540a34b1763368eff853fa4f8c52251e"


def _stored_table() -> dict:
    return json.loads(resources.files("billetjax.data").joinpath("glyph_polygons.json").read_text())


def test_alphabet_is_the_digits_then_the_capital_letters():
    assert ALPHABET == string.digits + string.ascii_uppercase
    assert set(ALPHABET) == set(EXPECTED_HOLES)


def test_digits_are_stored_unchanged():
    digits = {c: _stored_table()["glyphs"][c] for c in string.digits}
    text = json.dumps(digits, separators=(",", ":"), sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == DIGITS_SHA256


@pytest.mark.parametrize("char", list(string.ascii_uppercase))
def test_stored_letters_are_what_the_design_module_makes(char):
    """The file holds the letters of billetjax.glyph_design (compared as shapes: another GEOS may
    place a vertex differently, which is no change of the letter)."""
    record = _stored_table()["glyphs"][char]
    stored = Polygon(record["exterior"], record["holes"])
    designed = glyph_design.design_letter(char)
    assert len(stored.interiors) == len(designed.interiors)
    assert stored.symmetric_difference(designed).area < 1e-3 * designed.area


def test_regenerating_keeps_the_digits_and_every_other_key():
    table = _stored_table()
    rebuilt = glyph_design.build_table(table)
    assert {c: rebuilt["glyphs"][c] for c in string.digits} == {c: table["glyphs"][c] for c in string.digits}
    assert rebuilt["alphabet"] == table["alphabet"]
    assert {k: v for k, v in rebuilt.items() if k != "glyphs"} == {k: v for k, v in table.items() if k != "glyphs"}


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


def _iou(a: str, b: str) -> float:
    pa, pb = glyph(a), glyph(b)
    return pa.intersection(pb).area / pa.union(pb).area


def test_digits_are_distinct():
    for a, b in itertools.combinations(string.digits, 2):
        assert _iou(a, b) < 0.8, (a, b, _iou(a, b))


def test_letters_are_distinct_from_each_other_and_from_the_digits():
    """Overlap of two characters drawn in the same box: the closest pairs (P/R, H/M, D/0, O/0)
    stay near 0.8, as in die sets; anything above 0.85 would be a letter a reader confuses."""
    for a, b in itertools.combinations(ALPHABET, 2):
        if a.isdigit() and b.isdigit():
            continue
        assert _iou(a, b) < 0.85, (a, b, _iou(a, b))


def test_counters_are_big_enough_to_see():
    """No letter's counter is smaller than the digits' smallest (the 4's triangle): a smaller one
    would be the first to close up when a stamp is worn or blurred."""
    smallest_digit_counter = min(Polygon(h).area for c in string.digits for h in glyph(c).interiors)
    for char in string.ascii_uppercase:
        for hole in glyph(char).interiors:
            assert Polygon(hole).area >= smallest_digit_counter, char


def test_unknown_character_is_refused_with_its_name():
    with pytest.raises(KeyError, match="'Ä'"):
        glyph("Ä")


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


# ----------------------------------------------------------------------------- glyph files


def _square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _write(path, table) -> str:
    path.write_text(json.dumps(table))
    return str(path)


# A plant's own glyphs: a slashed zero replacing the built-in "0" and a new character "#".
SLASHED_ZERO = {"exterior": _square(0.0, 0.0, 0.6, 1.0), "holes": [_square(0.15, 0.15, 0.45, 0.85)]}
HASH = {"exterior": [[0.0, 0.3], [0.6, 0.3], [0.6, 0.5], [0.3, 1.0], [0.0, 0.5]], "holes": []}


def test_own_glyph_file_adds_and_replaces_characters(tmp_path):
    file = _write(tmp_path / "plant.json", {"alphabet": "0#", "glyphs": {"0": SLASHED_ZERO, "#": HASH}})
    glyphs = load_glyph_set(file)
    assert glyphs.glyph("0").equals(Polygon(SLASHED_ZERO["exterior"], SLASHED_ZERO["holes"]))
    assert glyphs.glyph("#").area == pytest.approx(Polygon(HASH["exterior"]).area)
    # The rest of the built-in set is still there, unchanged; the built-in set itself is untouched.
    assert glyphs.glyph("A").equals(glyph("A"))
    assert glyphs.alphabet == ALPHABET + "#"
    assert not builtin_glyphs().glyph("0").equals(glyphs.glyph("0"))
    assert "#" not in builtin_glyphs() and "#" in glyphs
    assert require_glyphs(["#", "7"], file) is glyphs


def test_built_in_set_without_a_file():
    assert load_glyph_set(None) is builtin_glyphs()
    assert load_glyph_set().glyph("8").equals(glyph("8"))


def test_edited_glyph_file_is_read_again(tmp_path):
    path = tmp_path / "plant.json"
    _write(path, {"glyphs": {"#": HASH}})
    assert "#" in load_glyph_set(path)
    _write(path, {"glyphs": {"%": HASH, "&": SLASHED_ZERO}})
    again = load_glyph_set(path)
    assert "#" not in again and "%" in again


@pytest.mark.parametrize(("table", "message"), [
    ({"alphabet": "#", "glyphs": {"#": {"exterior": [[0, 0], [0.6, 1.0], [0.6, 0], [0, 1.0]], "holes": []}}},
     r"glyph '#' is not a valid polygon: Self-intersection"),
    ({"alphabet": "#", "glyphs": {"#": {"exterior": _square(0, 0, 0.3, 0.5), "holes": [_square(0.4, 0.6, 0.5, 0.7)]}}},
     r"glyph '#' is not a valid polygon: Hole lies outside shell"),
    ({"alphabet": "#%", "glyphs": {"#": HASH}}, r"alphabet characters \['%'\] have no entry in 'glyphs'"),
    ({"alphabet": "#", "glyphs": {"#": HASH, "%": HASH}}, r"glyphs \['%'\] are missing from 'alphabet'"),
    ({"glyphs": {"#": {"exterior": _square(0, 0, 0.8, 1.0), "holes": []}}},
     r"glyph '#' reaches outside the unit box \[0, 0.6\] x \[0, 1\].*x 0..0.8"),
    ({"glyphs": {"#": {"exterior": _square(0, -0.2, 0.5, 1.0), "holes": []}}}, r"glyph '#' reaches outside the unit box"),
    ({"glyphs": {"#": {"exterior": [[0, 0], [0.5, 0]], "holes": []}}},
     r"glyph '#', exterior: a ring is a list of at least 3"),
    ({"glyphs": {"#": {"exterior": [[0, 0], [0.5, "x"], [0.5, 1]], "holes": []}}},
     r"glyph '#', exterior: \[0.5, 'x'\] is not an \[x, y\] pair"),
    ({"glyphs": {"#": {"outline": HASH["exterior"]}}}, r"glyph '#': expected an object with 'exterior'"),
    ({"glyphs": {"10": HASH}}, r"glyph names \['10'\] are not single characters"),
    ({"glyphs": {}}, r"non-empty 'glyphs' object"),
    ([HASH], r"non-empty 'glyphs' object"),
    ({"box": {"width": 1.0, "height": 1.0}, "glyphs": {"#": HASH}}, r"'box' is"),
])
def test_bad_glyph_files_are_refused_naming_file_and_character(tmp_path, table, message):
    file = _write(tmp_path / "bad_glyphs.json", table)
    with pytest.raises(GlyphFileError, match=message) as err:
        load_glyph_set(file)
    assert str(err.value).startswith(file)


def test_missing_and_broken_glyph_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.json: glyph file not found \(synth.glyphs\)"):
        load_glyph_set(tmp_path / "nowhere.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"glyphs": {')
    with pytest.raises(GlyphFileError, match=r"broken.json: not valid JSON"):
        load_glyph_set(broken)


def test_the_built_in_file_passes_its_own_validation():
    """Every stored glyph, digits and letters, is valid and in the box (the loader checks both)."""
    glyphs = builtin_glyphs()
    assert glyphs.alphabet == ALPHABET and all(c in glyphs for c in ALPHABET)


# ----------------------------------------------------------------------------- require_glyphs


def test_require_glyphs_accepts_letters_and_digits():
    glyphs = require_glyphs(["A", "7", "B"])
    assert glyphs is builtin_glyphs()


def test_require_glyphs_names_every_missing_category_and_the_ways_out():
    with pytest.raises(ValueError) as err:
        require_glyphs(["0", "#", "A", "é", "#", "10"], where="plant/train.json (data.coco)")
    message = str(err.value)
    assert message.startswith("plant/train.json (data.coco): categories ['#', 'é', '10'] have no glyph")
    assert "'0'" not in message.split("have no glyph")[0] and "'A'" not in message.split("have no glyph")[0]
    assert "not single characters" in message and "'10'" in message
    assert "synth.glyphs" in message and "docs/glyphs.md" in message and "rename the categories" in message


def test_require_glyphs_with_a_glyph_file_names_that_file(tmp_path):
    file = _write(tmp_path / "plant.json", {"glyphs": {"#": HASH}})
    assert "#" in require_glyphs(["#", "0"], file)
    with pytest.raises(ValueError, match=r"categories \['%'\] have no glyph in .*plant.json over the built-in glyphs"):
        require_glyphs(["#", "%"], file)
