"""Synthesis parts: heuristic masks, the classic renderer, one embedded billet and its annotations."""

from dataclasses import replace

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon

from billetjax.data.stamps import crop_pair
from billetjax.glyphs import builtin_glyphs, glyph
from billetjax.synth.classic import render_classic
from billetjax.synth.embed import EmbedParams, Stamp, annotation_of, compose_billet
from billetjax.synth.masks import MaskParams, cut_partial, make_stamp_mask, silhouette_of, solid_area
from billetjax.vocabulary import DIGITS

S = 64
MARGIN = 0.15


@pytest.fixture
def mask_params(make_config):
    """How config.yaml deforms and degrades masks (synth.masks, synth.partial)."""
    return MaskParams.from_config(make_config()["synth"])


@pytest.fixture
def embed_params(make_config):
    """How config.yaml embeds stamps (synth.embed, synth.partial)."""
    return EmbedParams.from_config(make_config()["synth"])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 127, b > 127
    return (a & b).sum() / max((a | b).sum(), 1)


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def test_undegraded_mask_is_framed_like_the_stamp_pairs(mask_params):
    """The GAN's training masks come from `crop_pair`; an undegraded mask must look the same."""
    params = replace(mask_params, erase_pieces=(0, 0), rotation_deg=0, shear=0, scale=0, elastic_amplitude=0)
    for char in builtin_glyphs().alphabet:
        stamp = make_stamp_mask(char, np.random.default_rng(0), params, S, MARGIN)
        # The same glyph as an annotation outline somewhere in a big image, cut out by crop_pair.
        outline = np.asarray(glyph(char).exterior.coords)[:-1] * 40 + [100, 60]
        _, pair_mask = crop_pair(np.zeros((200, 200, 3), np.uint8), outline, S, MARGIN)
        # Same framing: boxes within 2 px, centres of mass within a pixel. crop_pair fills with
        # OpenCV, which takes integer coordinates as pixel centres (half a pixel right and down of
        # COCO's) and grows shapes by about half a pixel: thin strokes differ in area, not in place.
        ours, theirs = np.array(_mask_box(stamp.silhouette)), np.array(_mask_box(pair_mask))
        assert np.abs(ours - theirs).max() <= 2, char
        centre = lambda m: np.argwhere(m > 127).mean(axis=0)  # noqa: E731
        assert np.abs(centre(stamp.silhouette) - centre(pair_mask)).max() <= 1.0, char
        assert _iou(stamp.silhouette, pair_mask) > 0.8, char


def test_degraded_masks_keep_enough_and_match_their_geometry(mask_params):
    params = mask_params
    rng = np.random.default_rng(1)
    for i in range(40):
        stamp = make_stamp_mask(DIGITS[i % 10], rng, params, S, MARGIN)
        assert solid_area(stamp.geometry) >= params.min_area_fraction * stamp.whole_area - 1e-6
        assert stamp.mask.dtype == np.uint8 and set(np.unique(stamp.mask)) <= {0, 255}
        # The raster is the polygon: areas within the half-pixel rim, counters left open.
        assert abs((stamp.mask > 0).sum() - stamp.geometry.area) < 0.1 * stamp.geometry.area
        assert (stamp.silhouette >= stamp.mask).all()
        x0, y0, x1, y1 = stamp.geometry.bounds
        bx0, by0, bx1, by1 = _mask_box(stamp.mask)
        assert max(abs(bx0 - x0), abs(by0 - y0), abs(bx1 - x1), abs(by1 - y1)) <= 1.0


def test_counters_stay_holes_in_the_mask_and_filled_in_the_silhouette(mask_params):
    params = replace(mask_params, erase_pieces=(0, 0))
    stamp = make_stamp_mask("8", np.random.default_rng(2), params, S, MARGIN)
    assert len(stamp.geometry.interiors) == 2
    hole_centre = np.asarray(stamp.geometry.interiors[0].centroid.coords[0]).astype(int)
    assert stamp.mask[hole_centre[1], hole_centre[0]] == 0
    assert stamp.silhouette[hole_centre[1], hole_centre[0]] == 255


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_partial_cut_meets_the_fraction(fraction):
    polygon = glyph("5")
    kept = cut_partial(polygon, np.random.default_rng(3), fraction)
    assert solid_area(kept) / solid_area(polygon) == pytest.approx(fraction, abs=0.02)


def test_partial_masks_keep_the_configured_share(mask_params):
    params = mask_params
    rng = np.random.default_rng(4)
    for i in range(20):
        stamp = make_stamp_mask(DIGITS[i % 10], rng, params, S, MARGIN, partial=True)
        share = solid_area(stamp.geometry) / stamp.whole_area
        assert params.partial_visible[0] - 0.03 <= share <= params.partial_visible[1] + 0.03


def test_overlapping_ranges_are_refused(make_config):
    synth = make_config({"synth": {"masks": {"min_area_fraction": 0.7}, "partial": {"visible_fraction": [0.3, 0.75]}}})
    with pytest.raises(ValueError, match="min_area_fraction"):
        MaskParams.from_config(synth["synth"])


def test_classic_renderer_is_seeded_per_stamp_and_shades_the_stamp(mask_params):
    params = mask_params
    rng = np.random.default_rng(5)
    masks = np.stack([make_stamp_mask(c, rng, params, S, MARGIN).mask for c in "0147"])
    out = render_classic(masks, [11, 12, 13, 14])
    assert out.shape == (4, S, S, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(render_classic(masks[2:3], [13]), out[2:3])  # batch-mates do not matter
    assert not np.array_equal(render_classic(masks[:1], [99]), out[:1])
    grey = out.mean(axis=-1)
    for mask, g in zip(masks, grey):
        # The punched floor collects shadow and oxide: the stamp reads darker than the face.
        inside, outside = g[mask > 0], g[mask == 0]
        assert inside.mean() < outside.mean() - 10


# ----------------------------------------------------------------------------- one billet


def _stamps(rng, params, partial=()):
    stamps = []
    images = render_classic(np.zeros((1, S, S), np.uint8), [0])
    for j in range(10):
        m = make_stamp_mask(DIGITS[rng.integers(10)], rng, params, S, MARGIN, partial=j in partial)
        stamps.append(Stamp(m.label, images[0], m.mask, m.silhouette, m.geometry, m.whole_box, m.whole_area))
    return stamps


def _surface(rng, size=256):
    return np.clip(rng.normal(120, 20, (size, size, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("mode", [None, "erased", "edge", "occluder"])
def test_annotation_boxes_match_the_warped_masks(mode, mask_params, embed_params):
    """Box of the outline (geometry path) = box of the stamp's warped mask (pixel path), within 1 px."""
    params = embed_params
    for seed in range(6):
        rng = np.random.default_rng(seed)
        stamps = _stamps(rng, mask_params, partial={0, 4} if mode == "erased" else ())
        billet = compose_billet(_surface(rng), _surface(rng), stamps, rng, params, mode, 2)
        assert billet.image.shape == (256, 256, 3) and len(billet.characters) == 10
        for char in billet.characters:
            ann = annotation_of(char)
            assert ann is not None and char.mask.any()
            x, y, w, h = ann["bbox"]
            bx0, by0, bx1, by1 = _mask_box(char.mask)
            assert max(abs(bx0 - x), abs(by0 - y), abs(bx1 - (x + w)), abs(by1 - (y + h))) <= 1.0, (mode, seed, char.label)
            assert w > 0 and h > 0
            for poly in ann["segmentation"]:
                pts = np.asarray(poly).reshape(-1, 2)
                assert len(pts) >= 3
                assert (pts >= [x, y]).all() and (pts <= [x + w, y + h]).all()
        fractions = [c.visible_fraction for c in billet.characters]
        if mode is None:
            assert min(fractions) >= mask_params.min_area_fraction - 0.01
        else:
            assert min(fractions) <= params.partial_visible[1] + 0.01
            assert min(fractions) >= params.partial_visible[0] - 0.05 or mode == "occluder"


def test_stamps_sit_at_real_stamp_sizes_and_in_rows(mask_params, embed_params):
    params = embed_params
    heights = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        billet = compose_billet(_surface(rng), _surface(rng), _stamps(rng, mask_params), rng, params)
        heights += [annotation_of(c)["bbox"][3] for c in billet.characters]
        rows = [c.row for c in billet.characters]
        assert rows == sorted(rows)  # reading order: row by row
        assert billet.billet_id == "".join(c.label for c in billet.characters)
    assert 0.8 * params.char_height_px[0] <= np.median(heights) <= 1.1 * params.char_height_px[1]


def test_hsv_shift_changes_colour_but_not_geometry(mask_params, embed_params):
    """Two billets differing only in the stamps' colour jitter have the same annotations."""
    rng = np.random.default_rng(7)
    stamps, surface = _stamps(rng, mask_params), _surface(rng)
    plain = replace(embed_params, hue_shift_deg=0.0, saturation_scale=(1.0, 1.0), value_scale=(1.0, 1.0))
    a = compose_billet(surface, surface, stamps, np.random.default_rng(1), plain)
    darker = replace(embed_params, value_scale=(0.5, 0.5))
    b = compose_billet(surface, surface, stamps, np.random.default_rng(1), darker)
    assert [annotation_of(c)["bbox"] for c in a.characters] == [annotation_of(c)["bbox"] for c in b.characters]
    assert not np.array_equal(a.image, b.image)


def test_silhouette_of_keeps_parts():
    two = shapely.MultiPolygon([Polygon([(0, 0), (1, 0), (1, 1)]), Polygon([(2, 2), (3, 2), (3, 3)])])
    assert len(silhouette_of(two).geoms) == 2


def test_stamps_stay_on_the_billet_face(mask_params, embed_params):
    """A bright face on a dark background: every character lands on the face, none on the dark."""
    from billetjax.synth.layout import face_region

    rng = np.random.default_rng(9)
    surface = np.full((256, 256, 3), 20, np.uint8)
    surface[60:200, 90:230] = 140
    face, background = face_region(surface)
    square = np.zeros((256, 256), bool)
    square[60:200, 90:230] = True
    assert (square & (face > 0)).sum() / (square | (face > 0)).sum() > 0.97  # the blur rounds corners
    np.testing.assert_allclose(background, 20 / 255, atol=1e-3)
    uniform, none = face_region(_surface(rng))
    assert uniform.all() and none is None
    params = replace(embed_params, surface_rotation_deg=0.0, surface_perspective=0.0)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        billet = compose_billet(surface, surface, _stamps(rng, mask_params), rng, params)
        for char in billet.characters:
            x, y, w, h = annotation_of(char)["bbox"]
            # The surface warp still zooms 6 % about the centre.
            cx, cy = (np.array([x + w / 2, y + h / 2]) - 128) / 1.06 + 128
            assert 90 <= cx <= 230 and 60 <= cy <= 200
