"""Heuristic stamp masks (paper §2.2.4, first step of Figure 5).

Every character starts as its polygon with holes (`billetjax.glyphs`); per sample it is deformed
(a random affine map plus a smooth elastic field) and degraded (pieces erased: stroke ends and
chunks at the edge), then rasterised to the GAN's input size. A stamp meant to be *partially
visible* loses a larger part to one straight cut, so that only a drawn fraction of it remains.

Geometry is kept next to the raster: the synthesis stage transforms the same polygon that made
the mask, so annotations follow the pixels exactly. Coordinates: unit box of the glyph (x right,
y down, height 1), then crop pixels in COCO's convention (pixel (r, c) covers [c, c+1) x [r, r+1)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from billetjax.glyphs import glyph, rasterise
from billetjax.sections import typed

# Edges are split to this length (glyph heights) before the elastic field bends them.
SEGMENT_LENGTH = 0.02
# Parts smaller than this share of the glyph's area are specks, not stamp: dropped.
MIN_PART_FRACTION = 0.03
# Radius of the morphological opening of a mask's polygon (glyph heights): see `_open`.
OPENING = 0.025
# Tries before giving up on a degradation that keeps enough of the glyph.
MAX_TRIES = 20


@dataclass(frozen=True)
class MaskParams:
    """How masks are deformed and degraded: `synth.masks` and `synth.partial.visible_fraction`
    (the schema documents each key and holds the defaults)."""

    rotation_deg: float                # affine: rotation, +-
    shear: float                       # affine: horizontal shear, +-
    scale: float                       # affine: anisotropic scale, 1 +- this per axis
    elastic_amplitude: float           # elastic field: displacement amplitude (glyph heights)
    elastic_wavelength: float          # elastic field: wavelength (glyph heights)
    erase_pieces: tuple[int, int]      # pieces erased per stamp (inclusive range)
    erase_radius: tuple[float, float]  # radius of an erased piece (glyph heights)
    min_area_fraction: float           # a degraded stamp keeps at least this share of its area
    partial_visible: tuple[float, float]  # share left of a partially visible stamp

    @classmethod
    def from_config(cls, synth: dict) -> "MaskParams":
        """Read `synth.masks` and `synth.partial.visible_fraction` of a validated config."""
        params = typed(cls, synth["masks"], "synth.masks",
                       partial_visible=tuple(float(v) for v in synth["partial"]["visible_fraction"]))
        params.check()
        return params

    def check(self) -> None:
        """Refuse ranges that cannot work, naming the config key."""
        lo, hi = self.partial_visible
        if not 0 < lo <= hi < 1:
            raise ValueError(f"synth.partial.visible_fraction {list(self.partial_visible)}: need 0 < low <= high < 1")
        if hi >= self.min_area_fraction:
            raise ValueError(
                f"synth.partial.visible_fraction high {hi} must stay below synth.masks.min_area_fraction "
                f"{self.min_area_fraction}: else a partially visible stamp is no different from a worn one")
        if self.erase_pieces[0] > self.erase_pieces[1] or self.erase_radius[0] > self.erase_radius[1]:
            raise ValueError("synth.masks.erase_pieces / erase_radius: low above high")


def polygons(geometry) -> list[Polygon]:
    """Every polygon in a geometry, however nested (collections of multipolygons included)."""
    if isinstance(geometry, Polygon):
        return [] if geometry.is_empty else [geometry]
    return [p for part in getattr(geometry, "geoms", []) for p in polygons(part)]


def silhouette_of(geometry):
    """The silhouette: every part's exterior, counters filled (as the annotation outlines are)."""
    parts = [Polygon(p.exterior) for p in polygons(geometry)]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def solid_area(geometry) -> float:
    """Area of the silhouette: visible fractions are measured on it, like the outline annotations."""
    return float(sum(Polygon(p.exterior).area for p in polygons(geometry)))


def _keep_solid(geometry, reference_area: float):
    """Valid geometry without specks (parts under MIN_PART_FRACTION of the reference area)."""
    geometry = shapely.make_valid(geometry)
    parts = [p for p in polygons(geometry) if p.area >= MIN_PART_FRACTION * reference_area]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _open(geometry):
    """Morphological opening: erasing leaves needle-thin spikes where a disc grazes a stroke; no die
    makes them and no raster shows them. Rounds sharp corners a little, as a worn die does."""
    return _keep_solid(geometry.buffer(-OPENING, quad_segs=4).buffer(OPENING, quad_segs=4), geometry.area)


def deform(polygon: Polygon, rng: np.random.Generator, params: MaskParams) -> Polygon:
    """A random affine map about the glyph's centre plus a smooth elastic field."""
    cx, cy = 0.3, 0.5
    angle = np.deg2rad(rng.uniform(-params.rotation_deg, params.rotation_deg))
    shear = rng.uniform(-params.shear, params.shear)
    sx, sy = 1 + rng.uniform(-params.scale, params.scale, size=2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    linear = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([sx, sy])
    # The elastic field: a few plane waves per axis, so it is smooth and defined everywhere.
    n_waves = 3
    freqs = rng.normal(size=(2, n_waves, 2))
    freqs /= np.linalg.norm(freqs, axis=-1, keepdims=True) * params.elastic_wavelength
    phases = rng.uniform(0, 2 * np.pi, size=(2, n_waves))
    weights = rng.uniform(0.5, 1.0, size=(2, n_waves)) / n_waves
    centre = np.array([cx, cy])

    def warp(xy: np.ndarray) -> np.ndarray:
        moved = (xy - centre) @ linear.T + centre
        waves = np.sin(2 * np.pi * np.einsum("nd,akd->nak", xy, freqs) + phases)  # [N, axis, wave]
        return moved + params.elastic_amplitude * np.einsum("nak,ak->na", waves, weights)

    dense = shapely.segmentize(polygon, SEGMENT_LENGTH)
    return _keep_solid(shapely.transform(dense, warp), polygon.area)


def _boundary_points(geometry, count: int) -> np.ndarray:
    """`count` points spread along all rings of a geometry."""
    line = geometry.boundary
    return np.asarray([line.interpolate(t, normalized=True).coords[0] for t in np.linspace(0, 1, count, endpoint=False)])


def degrade(polygon, rng: np.random.Generator, params: MaskParams):
    """Erase a few pieces: discs at stroke ends (points far from the centre) and at edge points.

    Keeps at least `min_area_fraction` of the area (else tries again; the last resort is the
    undegraded glyph).
    """
    lo, hi = params.erase_pieces
    pieces = int(rng.integers(lo, hi + 1))
    if pieces == 0:
        return polygon
    points = _boundary_points(polygon, 64)
    centre = np.asarray(polygon.centroid.coords[0])
    far = np.argsort(-np.linalg.norm(points - centre, axis=1))[:12]  # stroke ends and corners
    for _ in range(MAX_TRIES):
        erasers = []
        for _ in range(pieces):
            at_end = rng.random() < 0.5
            p = points[far[rng.integers(len(far))]] if at_end else points[rng.integers(len(points))]
            radius = rng.uniform(*params.erase_radius)
            # Centred a little outside the boundary at an end, on it elsewhere: a bitten edge.
            offset = (p - centre) / max(np.linalg.norm(p - centre), 1e-9) * radius * (0.4 if at_end else 0.0)
            ellipse = shapely.affinity.scale(shapely.Point(p + offset).buffer(radius, quad_segs=8),
                                             rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3))
            erasers.append(ellipse)
        left = _open(_keep_solid(polygon.difference(shapely.union_all(erasers)), polygon.area))
        if not left.is_empty and solid_area(left) >= params.min_area_fraction * solid_area(polygon):
            return left
    return polygon


def cut_partial(polygon, rng: np.random.Generator, visible_fraction: float, tolerance: float = 0.02):
    """Keep `visible_fraction` of the silhouette's area behind one straight cut of random direction.

    The cut's offset is found by bisection. Where a cut opens a counter the silhouette's area jumps
    (an O becomes a U), and a fraction inside the jump cannot be met: another direction is drawn
    until the fraction is met within `tolerance` (the closest cut wins after MAX_TRIES).
    """
    area = solid_area(polygon)
    coords = np.concatenate([np.asarray(r.coords) for r in _rings(polygon)])
    best, best_error = polygon, np.inf
    for _ in range(MAX_TRIES):
        angle = rng.uniform(0, 2 * np.pi)
        normal = np.array([np.cos(angle), np.sin(angle)])
        along = np.array([-normal[1], normal[0]])
        proj = coords @ normal
        lo, hi = proj.min(), proj.max()
        reach = 10.0 * (hi - lo)

        def kept(offset: float):
            # The half-plane {p : p . normal <= offset} as a big quadrilateral.
            base, far = normal * offset, normal * (offset - reach)
            half = Polygon([base + along * reach, base - along * reach, far - along * reach, far + along * reach])
            return polygon.intersection(half)

        for _ in range(40):
            mid = (lo + hi) / 2
            if solid_area(kept(mid)) < visible_fraction * area:
                lo = mid
            else:
                hi = mid
        for offset in (lo, hi):
            candidate = _keep_solid(kept(offset), polygon.area)
            error = abs(solid_area(candidate) / area - visible_fraction)
            if error < best_error:
                best, best_error = candidate, error
        if best_error <= tolerance:
            break
    return best


def _rings(geometry):
    for part in polygons(geometry):
        yield part.exterior
        yield from part.interiors


@dataclass
class StampMask:
    """One heuristic mask: rasters, its geometry and the undegraded glyph, in crop pixels."""

    label: str
    mask: np.ndarray            # uint8[S, S], 0/255: the stamp with its counters (the paper's mask)
    silhouette: np.ndarray      # uint8[S, S], 0/255: the same with counters filled
    geometry: Polygon | MultiPolygon  # what was rasterised (deformed and degraded, with holes)
    whole_box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the deformed, undegraded glyph
    whole_area: float           # its silhouette's area, px²
    partial: bool               # cut to a partially visible stamp


def crop_transform(whole: Polygon, size_px: int, margin: float) -> list[float]:
    """Shapely affine parameters placing a glyph in its crop as the stamp pairs do.

    The stamp pairs' crop is centred on the stamp's box with side = longer box side x (1 + 2 margin)
    (`billetjax.data.stamps.crop_pair`); the same framing here keeps the GAN's input familiar.
    """
    x0, y0, x1, y1 = whole.bounds
    scale = size_px / (max(x1 - x0, y1 - y0) * (1 + 2 * margin))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return [scale, 0.0, 0.0, scale, size_px / 2 - scale * cx, size_px / 2 - scale * cy]


def make_stamp_mask(label: str, rng: np.random.Generator, params: MaskParams, size_px: int,
                    margin: float, partial: bool = False, shape: Polygon | None = None) -> StampMask:
    """Deform and degrade one character (and cut it if `partial`), then rasterise it to `size_px`.

    `shape` is the character's glyph in the unit box (from the study's glyph set, e.g.
    `billetjax.glyphs.load_glyph_set(synth.glyphs)`); by default the built-in glyph of `label`.
    """
    whole = _open(deform(glyph(label) if shape is None else shape, rng, params))
    geometry = degrade(whole, rng, params)
    if partial:
        target = rng.uniform(*params.partial_visible) * solid_area(whole) / solid_area(geometry)
        geometry = cut_partial(geometry, rng, target)
    matrix = crop_transform(whole, size_px, margin)
    whole_px = shapely.affinity.affine_transform(whole, matrix)
    geometry_px = shapely.affinity.affine_transform(geometry, matrix)
    return StampMask(label=label, mask=rasterise(geometry_px, size_px),
                     silhouette=rasterise(silhouette_of(geometry_px), size_px), geometry=geometry_px,
                     whole_box=tuple(float(v) for v in whole_px.bounds), whole_area=solid_area(whole_px),
                     partial=partial)
