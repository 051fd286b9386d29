"""Partial visibility by occluders: the billet's edge or scale patches planned (in layout
coordinates) so that each chosen character keeps a drawn share of its area visible, never leaving
specks of a character an annotator would not box. (Erased stamps are cut in their masks:
`billetjax.synth.masks.cut_partial`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import shapely
from shapely.geometry import Polygon, box

from billetjax.synth.masks import polygons, solid_area

if TYPE_CHECKING:
    from billetjax.synth.embed import EmbedParams

# Attempts at an occluder that leaves the other characters alone.
OCCLUDER_TRIES = 30
# A cut that leaves a piece of a character smaller than this share of it is redrawn: annotators
# would not box such a speck, and it would not show in the character's mask either.
SPECK_FRACTION = 0.05


def _scale_patch(rng: np.random.Generator, centre: np.ndarray, radius: float) -> Polygon:
    """An irregular, star-shaped patch (scale, dirt) around `centre`."""
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    k = np.arange(1, 13)  # high harmonics make the rim ragged, like flaking scale
    amp = rng.normal(0, 0.25, size=len(k)) / k ** 0.8
    phase = rng.uniform(0, 2 * np.pi, size=len(k))
    r = 1 + np.sum(amp[:, None] * np.sin(k[:, None] * theta[None] + phase[:, None]), axis=0)
    r = np.maximum(r, 0.3)  # star-shaped and simple: no self-intersection
    stretch = rng.uniform(0.6, 1.4)
    return Polygon(np.c_[centre[0] + radius * r * np.cos(theta) * stretch, centre[1] + radius * r * np.sin(theta) / stretch])


def _bisect(fraction_at, target: float, lo: float, hi: float, steps: int = 30) -> float:
    """The parameter in [lo, hi] where the decreasing function `fraction_at` meets `target`."""
    for _ in range(steps):
        mid = (lo + hi) / 2
        if fraction_at(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


def _specks(solids: list, whole_areas: np.ndarray, shapes: list) -> bool:
    """Whether the shapes cut a character into a piece too small for an annotator (a speck)."""
    cover = shapely.union_all(shapes)
    for solid, whole in zip(solids, whole_areas):
        if not solid.intersects(cover):
            continue
        parts = polygons(solid.difference(cover))
        if any(p.area < SPECK_FRACTION * whole for p in parts):
            return True
    return False


def plan_occluders(mode: str, targets: list[int], solids: list, whole_areas: np.ndarray,
                   rng: np.random.Generator, params: EmbedParams) -> list[tuple[str, Polygon]]:
    """Occluders (kind, polygon in layout px) that leave each target a drawn visible fraction.

    `edge`: the billet's edge, a half-plane beyond the outermost characters of one side, placed so
    the most-cut character keeps the drawn fraction. `occluder`: a patch near each target, grown
    until the target keeps the drawn fraction, redrawn if it hides too much of a neighbour. Both are
    redrawn when they would leave specks of a character (see SPECK_FRACTION).
    """
    low = params.partial_visible[0]
    visible = lambda j, shapes: solid_area(solids[j].difference(shapely.union_all(shapes))) / whole_areas[j]  # noqa: E731
    if mode == "edge":
        centre = np.mean([np.asarray(s.centroid.coords[0]) for s in solids], axis=0)
        coords = np.concatenate([np.asarray(s.exterior.coords) for g in solids for s in polygons(g)])
        span = float(np.ptp(coords, axis=0).max())
        reach = 1e3 * span
        # Bounded, so the surface's homography never carries it across the horizon.
        frame = box(*(centre - 4 * span), *(centre + 4 * span))
        edge = None
        for _ in range(OCCLUDER_TRIES):
            angle = rng.integers(4) * np.pi / 2 + np.deg2rad(rng.uniform(-8, 8))
            normal = np.array([np.cos(angle), np.sin(angle)])  # points outwards, beyond the edge
            along = np.array([-normal[1], normal[0]])
            proj = (coords - centre) @ normal

            def beyond(offset: float) -> Polygon:
                base = centre + normal * offset
                return Polygon([base + along * reach, base - along * reach, base - along * reach + normal * reach,
                                base + along * reach + normal * reach]).intersection(frame)

            target = rng.uniform(*params.partial_visible)
            # The least visible character gains as the edge moves out: bisect on its negative.
            offset = _bisect(lambda o: -min(visible(j, [beyond(o)]) for j in range(len(solids))), -target,
                             proj.min(), proj.max())
            edge = beyond(offset)
            if not _specks(solids, whole_areas, [edge]):
                break
        return [("edge", edge)]
    shapes: list[Polygon] = []
    for t in targets:
        height = np.sqrt(whole_areas[t] / 0.3)  # a digit covers about 0.3 of its box (h x 0.6 h)
        centre_t = np.asarray(solids[t].centroid.coords[0])
        for _ in range(OCCLUDER_TRIES):
            direction = rng.normal(size=2)
            direction /= np.linalg.norm(direction)
            template = _scale_patch(rng, np.zeros(2), 1.0)
            centre = centre_t + direction * height * rng.uniform(0.35, 0.8)
            grown = lambda r: shapely.affinity.affine_transform(template, [r, 0, 0, r, *centre])  # noqa: E731
            target = rng.uniform(*params.partial_visible)
            radius = _bisect(lambda r: visible(t, shapes + [grown(r)]), target, 1e-3, 3 * height)
            blob = grown(radius)
            others_ok = all(visible(j, shapes + [blob]) >= low or not solids[j].intersects(blob)
                            for j in range(len(solids)) if j != t)
            if others_ok and visible(t, shapes + [blob]) > 0.5 * low and not _specks(solids, whole_areas, shapes + [blob]):
                shapes.append(blob)
                break
    return [("occluder", s) for s in shapes]
