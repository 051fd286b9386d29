"""The embedded billet renderer: determinism, exact annotations, visible stamps, site and class looks;
letters in the IDs (data.simulate.id_letters)."""

import itertools

import numpy as np
import pytest
from shapely.geometry import Polygon

from billetjax import coco as cc
from billetjax.data.billet_ids import IdScheme
from billetjax.data.simulate import SITE_LOOKS, VISIBLE_FRACTION_MIN, RenderedBillet, render_billet, render_surface
from billetjax.glyphs import glyph
from billetjax.vocabulary import DIGITS, SITES, VISIBILITY

SIZE = 256


def _render(seed: int, site: str, visibility: str, size: int = SIZE, **kw) -> RenderedBillet:
    return render_billet(np.random.default_rng(seed), site=site, visibility=visibility,
                         size_px=size, **kw)


@pytest.fixture(scope="module")
def billets() -> dict[tuple[str, str], list[RenderedBillet]]:
    """Four billets per site and visibility class."""
    return {(site, vis): [_render(1000 * i + 7, site, vis) for i in range(4)]
            for site in SITES for vis in VISIBILITY}


def test_same_seed_same_bytes_and_annotations():
    for site, vis in (("A", "partial"), ("B", "well")):
        a, b = _render(3, site, vis), _render(3, site, vis)
        assert a.image.tobytes() == b.image.tobytes()
        assert a.billet_id == b.billet_id
        assert [(c.label, c.bbox) for c in a.characters] == [(c.label, c.bbox) for c in b.characters]
        assert all(np.array_equal(p.polygon, q.polygon) for p, q in zip(a.characters, b.characters))
    assert _render(4, "A", "well").image.tobytes() != _render(3, "A", "well").image.tobytes()


def test_image_and_annotation_types(billets):
    for (site, vis), group in billets.items():
        for billet in group:
            assert billet.image.dtype == np.uint8 and billet.image.shape == (SIZE, SIZE, 3)
            assert billet.site == site and billet.visibility == vis
            assert len(billet.billet_id) in (11, 12)
            assert set(billet.billet_id) <= set(DIGITS)
            indices = [c.index for c in billet.characters]
            assert indices == sorted(set(indices)), "reading order, no duplicates"
            for char in billet.characters:
                assert char.label in DIGITS
                assert billet.billet_id[char.index] == char.label
                assert char.polygon.dtype == np.float32 and char.polygon.ndim == 2
                assert char.polygon.shape[0] >= 3 and char.polygon.shape[1] == 2
                assert Polygon(char.polygon).is_valid and Polygon(char.polygon).area > 0
                assert char.visible_fraction >= VISIBLE_FRACTION_MIN


def test_boxes_tight_around_polygons_and_inside_image(billets):
    for group in billets.values():
        for billet in group:
            for char in billet.characters:
                x, y, w, h = char.bbox
                assert w > 1 and h > 1
                x0, y0 = char.polygon.min(axis=0)
                x1, y1 = char.polygon.max(axis=0)
                assert abs(x - x0) <= 1 and abs(y - y0) <= 1
                assert abs(x + w - x1) <= 1 and abs(y + h - y1) <= 1
                assert x >= -1e-3 and y >= -1e-3
                assert x + w <= SIZE + 1e-3 and y + h <= SIZE + 1e-3
                # The outline encloses the visible shape (same geometry, up to simplification).
                sx0, sy0, sx1, sy1 = char.shape.bounds
                assert abs(sx0 - x0) <= 1 and abs(sy1 - y1) <= 1


def test_well_billets_carry_the_whole_id(billets):
    for site in SITES:
        for billet in billets[(site, "well")]:
            assert len(billet.characters) == len(billet.billet_id)
            assert "".join(c.label for c in billet.characters) == billet.billet_id


def test_partial_billets_miss_characters(billets):
    counts = []
    for site in SITES:
        for billet in billets[(site, "partial")]:
            assert len(billet.characters) <= len(billet.billet_id)
            # Every partial billet has some character not wholly visible.
            assert min(c.visible_fraction for c in billet.characters) < 0.99 or \
                len(billet.characters) < len(billet.billet_id)
            counts.append(len(billet.billet_id) - len(billet.characters))
    assert sum(counts) > 0


def test_character_height_at_256(billets):
    heights = [c.bbox[3] for site in SITES for b in billets[(site, "well")] for c in b.characters]
    assert 16 <= np.median(heights) <= 30
    assert 12 <= min(heights) and max(heights) <= 34


def _stamp_contrast(seed: int, site: str, vis: str) -> tuple[float, float]:
    """Mean absolute difference to the same billet unstamped, inside and outside the boxes."""
    stamped = _render(seed, site, vis)
    blank = _render(seed, site, vis, stamped=False)
    assert [c.bbox for c in stamped.characters] == [c.bbox for c in blank.characters]
    diff = np.abs(stamped.image.astype(np.float32) - blank.image.astype(np.float32)).mean(axis=2)
    inside = np.zeros(diff.shape, bool)
    for char in stamped.characters:
        x, y, w, h = (int(round(v)) for v in char.bbox)
        inside[y:y + h, x:x + w] = True
    return float(diff[inside].mean()), float(diff[~inside].mean())


def test_stamps_show_in_the_pixels():
    for site in SITES:
        inside, outside = _stamp_contrast(11, site, "well")
        assert inside > 4.0 * outside + 2.0, (site, inside, outside)


def test_poor_stamps_are_fainter_than_well_ones():
    well = np.mean([_stamp_contrast(s, site, "well")[0] for s in (21, 22) for site in SITES])
    poor = np.mean([_stamp_contrast(s, site, "poor")[0] for s in (21, 22) for site in SITES])
    assert poor < 0.7 * well, (poor, well)


def test_poor_stamps_stay_legible():
    # A person must still be able to read (and box) a poor stamp: on average its relief in the
    # boxes is at least the order of the site's sensor noise (site B: noisier camera and JPEG).
    for site in SITES:
        poor = np.mean([_stamp_contrast(s, site, "poor")[0] for s in range(8)])
        noise = 255 * SITE_LOOKS[site].noise
        assert poor > 0.9 * noise, (site, poor, noise)


def test_sites_differ_in_colour(billets):
    def blue_minus_red(site: str) -> float:
        images = np.stack([b.image for vis in VISIBILITY for b in billets[(site, vis)]])
        mean = images.reshape(-1, 3).astype(np.float64).mean(axis=0)
        return float(mean[2] - mean[0])

    assert blue_minus_red("B") > blue_minus_red("A") + 10


def test_given_billet_id_is_stamped():
    billet = _render(5, "A", "well", billet_id="88888800000")
    assert billet.billet_id == "88888800000"
    assert "".join(c.label for c in billet.characters) == "88888800000"


def test_surface_is_blank_billet_image():
    a = render_surface(np.random.default_rng(9), site="B", size_px=128)
    b = render_surface(np.random.default_rng(9), site="B", size_px=128)
    assert a.dtype == np.uint8 and a.shape == (128, 128, 3)
    assert a.tobytes() == b.tobytes()
    assert a.std() > 5  # textured, not flat


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="site"):
        _render(0, "C", "well")
    with pytest.raises(ValueError, match="visibility"):
        _render(0, "A", "good")
    with pytest.raises(ValueError, match=r"billet_id '12#': no glyph for \['#'\]"):
        _render(0, "A", "well", billet_id="12#")


# ----------------------------------------------------------------------------- letters in IDs


def test_letter_annotations_have_their_glyph_shape():
    """One billet stamped with different characters at position 0 (the same draws, so the same place,
    size, slant and camera): the annotated shapes overlap one another as the glyphs do (overlap and
    area ratios survive the shared map), keep the glyphs' counters, and their boxes are as tall."""
    chars = {}
    for char in "IWABO7":
        billet = _render(21, "A", "well", billet_id=char + "23456" + "7" + "8901")
        first = billet.characters[0]
        assert first.index == 0 and first.label == char
        chars[char] = first
    for a, b in itertools.combinations(chars, 2):
        sa, sb, ga, gb = chars[a].shape, chars[b].shape, glyph(a), glyph(b)
        seen = sa.intersection(sb).area / sa.union(sb).area
        assert seen == pytest.approx(ga.intersection(gb).area / ga.union(gb).area, abs=0.015), (a, b)
        assert sa.area / sb.area == pytest.approx(ga.area / gb.area, rel=0.015), (a, b)
        assert chars[a].bbox[3] == pytest.approx(chars[b].bbox[3], rel=0.05), (a, b)
    for char, first in chars.items():
        assert len(first.shape.interiors) == len(glyph(char).interiors), char


def test_rendered_billets_with_a_letter_scheme():
    scheme = IdScheme("KX", (0, 6))
    billet = render_billet(np.random.default_rng(5), site="B", visibility="well", size_px=SIZE, id_scheme=scheme)
    assert billet.billet_id[0] in "KX" and billet.billet_id[6] in "KX"
    assert "".join(c.label for c in billet.characters) == billet.billet_id
    letters = [c for c in billet.characters if c.label.isalpha()]
    assert [c.index for c in letters] == [0, 6]


def test_simulated_pool_with_letters_has_letter_categories(tmp_path):
    """A pool rendered with letters: categories are the digits (ids 1-10) and the letters (11 on),
    and every letter of an ID that is annotated carries its letter's id."""
    from billetjax.data.pools import render_pool

    plan = [("A", "well"), ("B", "well"), ("A", "poor")]
    coco = render_pool(plan, tmp_path / "pool.json", tmp_path / "images", 128, seed=4, prefix="train",
                       id_scheme=IdScheme("BA", (0, 6)))
    data = cc.load(tmp_path / "pool.json", check_images=True)
    assert data == coco
    assert cc.category_names(data) == {**{d + 1: str(d) for d in range(10)}, 11: "A", 12: "B"}
    per_image = cc.annotations_by_image(data)
    letter_ids = []
    for image in data["images"]:
        assert image["billet_id"][0] in "AB" and image["billet_id"][6] in "AB"
        labels = "".join(cc.category_names(data)[a["category_id"]] for a in per_image[image["id"]])
        if image["visibility"] == "well":
            assert labels == image["billet_id"]
        letter_ids += [a["category_id"] for a in per_image[image["id"]] if a["category_id"] > 10]
    assert len(letter_ids) >= 4 and set(letter_ids) <= {11, 12}


def test_config_check_refuses_letters_the_id_pattern_forbids():
    """At parse time (billetjax.config): config.yaml's digits-only ID pattern with letters on is
    refused; the pattern the scheme proposes, or none, passes."""
    from billetjax import config as cfg

    config = cfg.load_config({"data": {"simulate": {"id_letters": "AB"}}}, check=False)
    found = [p for p in cfg.problems(config) if "id_letters" in p]
    assert len(found) == 2 and "at position 0" in found[0] and "at position 6" in found[1]
    config["evaluation"]["id_pattern"] = IdScheme("AB", (0, 6)).id_pattern()
    assert [p for p in cfg.problems(config) if "id_pattern" in p] == []
    config["evaluation"]["id_pattern"] = None
    assert [p for p in cfg.problems(config) if "id_pattern" in p] == []
