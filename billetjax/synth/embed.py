"""Embedding rendered stamps into blank billet surfaces (paper §2.2.4, last steps of Figure 5).

One synthetic billet: a blank surface, slightly deformed (perspective) and rotated; ten stamps laid
out as a billet ID in rows, each blended in through a Gaussian-blurred mask after a random HSV
shift; on a partially visible billet some characters are erased in the mask, cut by the billet's
edge or hidden under a scale patch. Everything is placed in *layout* coordinates first (the surface
before its warp); one homography H then carries surface, stamps, occluders and polygons alike, so
the annotations follow the pixels. A stamp's pixels go from its crop to the image in one warp
(H times its placement), never resampled twice. The rows are placed on the billet's face where the
surface shows one in front of a dark background (`face_region`).

Annotations: the outline is the visible silhouette (counters filled, as the real outlines); the box
is that of the pixels it covers at least half, i.e. the box of the stamp's mask in the written
image; `EmbeddedCharacter.mask` is the same mask made the other way (the crop's silhouette warped like the
stamp's colours, minus occluders), which the tests hold against the box.

The steps have their modules: `layout` (the surface's warp, its face, the rows of stamps),
`occluders` (the edge or patches that hide part of some characters), `blend` (a stamp's pixels
and an occluder's), over `geometry` (homographies in COCO coordinates, which follows, pixel
(r, c) covering [c, c+1) x [r, r+1)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from billetjax.glyphs import rasterise
from billetjax.sections import typed
from billetjax.synth.blend import MASK_COVERAGE, blend_stamp, paint_occluder
from billetjax.synth.geometry import opencv_homography, solid, transform
from billetjax.synth.layout import REFERENCE_SIZE_PX, face_region, layout, surface_warp
from billetjax.synth.masks import polygons, silhouette_of, solid_area
from billetjax.synth.occluders import plan_occluders

# Outline simplification tolerance (px) for the written polygons.
SIMPLIFY_PX = 0.15
PARTIAL_MODES = ("erased", "edge", "occluder")


@dataclass(frozen=True)
class EmbedParams:
    """How stamps are embedded: `synth.embed` and `synth.partial` (the schema documents each key
    and holds the defaults)."""

    char_height_px: tuple[float, float]      # at 256 px, scaled with the image size
    char_gap: tuple[float, float]            # gap between characters (char heights)
    row_gap: tuple[float, float]             # gap between rows (char heights)
    char_jitter: float                       # position jitter (char heights)
    char_rotation_deg: float                 # per-character rotation, +-
    surface_rotation_deg: float              # surface rotation, +-
    surface_perspective: float               # corner displacement (image sizes), +-
    blend_sigma_px: float                    # Gaussian blur of the blending mask (at 256 px)
    opacity: tuple[float, float]             # stamp opacity in the blend
    hue_shift_deg: float                     # HSV: hue shift, +-
    saturation_scale: tuple[float, float]    # HSV: saturation factor
    value_scale: tuple[float, float]         # HSV: value (brightness) factor
    noise_std: tuple[float, float]           # camera noise over the whole image (grey levels)
    match_surface: bool                      # scale a stamp's face colour to the surface's first
    partial_characters: tuple[int, int]      # partially visible characters per partial image
    partial_visible: tuple[float, float]     # share of a partial character left visible
    partial_modes: tuple[float, float, float]  # weights of erased, edge, occluder (PARTIAL_MODES)

    @classmethod
    def from_config(cls, synth: dict) -> "EmbedParams":
        """Read `synth.embed` and `synth.partial` of a validated config."""
        p = synth["partial"]
        params = typed(cls, synth["embed"], "synth.embed",
                       partial_characters=tuple(int(v) for v in p["characters"]),
                       partial_visible=tuple(float(v) for v in p["visible_fraction"]),
                       partial_modes=tuple(float(p["modes"][m]) for m in PARTIAL_MODES))
        if sum(params.partial_modes) <= 0:
            raise ValueError("synth.partial.modes: at least one of erased, edge, occluder needs a positive weight")
        return params


@dataclass
class Stamp:
    """A rendered stamp ready to embed: crop pixels, its masks and geometry in crop pixels."""

    label: str
    image: np.ndarray           # uint8[S, S, 3] RGB, as rendered
    mask: np.ndarray            # uint8[S, S] 0/255: blending mask, counters open
    silhouette: np.ndarray      # uint8[S, S] 0/255: counters filled, as the annotation outline
    geometry: Polygon | MultiPolygon  # degraded glyph in crop pixels (with counters)
    whole_box: tuple[float, float, float, float]  # undegraded glyph's box in crop pixels
    whole_area: float           # undegraded silhouette's area, crop px²


@dataclass
class EmbeddedCharacter:
    """One embedded character: what the annotation is made of, and its mask for checking."""

    label: str
    outline: Polygon | MultiPolygon  # visible silhouette in image pixels
    visible_fraction: float          # visible silhouette area / undegraded silhouette area
    mask: np.ndarray                 # bool[H, W]: the stamp's warped mask minus occluders
    row: int
    column: int
    stamp: Polygon | MultiPolygon | None = None  # whole silhouette in image pixels (before occluders)
    hidden: np.ndarray | None = None             # bool[H, W]: where occluders hide (shared per billet)


@dataclass
class Billet:
    """A synthetic billet image with its characters in reading order."""

    image: np.ndarray
    characters: list[EmbeddedCharacter] = field(default_factory=list)
    partial_mode: str | None = None

    @property
    def billet_id(self) -> str:
        return "".join(c.label for c in self.characters)


# ----------------------------------------------------------------------------- one billet


def compose_billet(surface: np.ndarray, texture: np.ndarray, stamps: list[Stamp], rng: np.random.Generator,
                   params: EmbedParams, partial_mode: str | None = None, partial_targets: int = 0) -> Billet:
    """One synthetic billet from a blank surface and rendered stamps (in reading order).

    partial_mode: None (well visible), "erased" (the stamps carry their cut already), "edge" or
    "occluder" (`partial_targets` characters get covered). `texture` (uint8 RGB, same size as the
    surface) feeds scale patches.
    """
    size_px = surface.shape[0]
    if surface.shape[:2] != (size_px, size_px):
        raise ValueError(f"surface must be square, got {surface.shape[1]}x{surface.shape[0]}")
    warp = surface_warp(rng, size_px, params)
    face, background = face_region(surface)
    placements, cells = layout(stamps, rng, size_px, warp, params, face)
    solids = [transform(silhouette_of(s.geometry), p) for s, p in zip(stamps, placements)]
    whole_areas = np.array([s.whole_area * abs(np.linalg.det(p[:2, :2])) for s, p in zip(stamps, placements)])

    occluders: list[tuple[str, Polygon]] = []
    if partial_mode in ("edge", "occluder"):
        targets = list(rng.choice(len(stamps), size=min(max(partial_targets, 1), len(stamps)), replace=False))
        occluders = plan_occluders(partial_mode, targets, solids, whole_areas, rng, params)
        if not occluders:  # no patch fitted without hiding a neighbour: the billet's edge always does
            partial_mode = "edge"
            occluders = plan_occluders("edge", targets, solids, whole_areas, rng, params)

    canvas = cv2.warpPerspective(surface, opencv_homography(warp), (size_px, size_px), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT_101).astype(np.float32) / 255.0
    sigma = params.blend_sigma_px * size_px / REFERENCE_SIZE_PX
    masks = [blend_stamp(canvas, s, warp @ p, rng, params, sigma) for s, p in zip(stamps, placements)]
    texture = np.roll(texture, rng.integers(size_px, size=2), axis=(0, 1)).astype(np.float32) / 255.0
    hidden = np.zeros((size_px, size_px), bool)
    for kind, polygon in occluders:
        hidden |= paint_occluder(canvas, kind, transform(polygon, warp), texture, rng, background)
    noise = rng.uniform(*params.noise_std) / 255.0
    if noise > 0:
        canvas += rng.normal(0, noise, size=canvas.shape).astype(np.float32)
    image = np.clip(np.round(canvas * 255), 0, 255).astype(np.uint8)

    frame = box(0, 0, size_px, size_px)
    cover = shapely.union_all([p for _, p in occluders]) if occluders else Polygon()
    billet = Billet(image=image, partial_mode=partial_mode)
    for j, stamp in enumerate(stamps):
        visible = solids[j].difference(cover) if occluders else solids[j]
        outline = solid(transform(visible, warp).intersection(frame))
        billet.characters.append(EmbeddedCharacter(
            label=stamp.label, outline=outline,
            visible_fraction=float(solid_area(visible) / whole_areas[j]) if not outline.is_empty else 0.0,
            mask=masks[j] & ~hidden, row=cells[j][0], column=cells[j][1],
            stamp=solid(transform(solids[j], warp).intersection(frame), 0.0), hidden=hidden,
        ))
    return billet


def annotation_of(character: EmbeddedCharacter) -> dict | None:
    """COCO fields (bbox, segmentation, area) of a character's visible outline; None if nothing shows.

    The box is that of the stamp's mask in the written image, on the pixel grid: pixels its
    silhouette covers at least half (MASK_COVERAGE) and no occluder covers more than half, the
    rule by which the pixels were painted. Counters are not drawn, as in the real outlines; the
    outline is clipped to the box, then simplified, so it stays inside it.
    """
    outline = character.outline
    if outline.is_empty:
        return None
    stamp = character.stamp if character.stamp is not None else outline
    covered = rasterise(stamp, character.mask.shape, antialiased=True) >= round(255 * MASK_COVERAGE)
    if character.hidden is not None:
        covered &= ~character.hidden
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    if not len(rows):
        return None
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    clipped = solid(outline.intersection(box(x0, y0, x1, y1)), 0.0)
    segmentation = []
    for part in sorted(polygons(clipped), key=lambda p: -p.area):
        ring = Polygon(part.exterior).simplify(SIMPLIFY_PX, preserve_topology=True).exterior
        pts = np.clip(np.asarray(ring.coords)[:-1], [x0, y0], [x1, y1])
        if len(pts) >= 3:
            segmentation.append([round(float(v), 2) for v in pts.reshape(-1)])
    if not segmentation:
        return None
    return {
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "segmentation": segmentation,
        "area": round(float(clipped.area), 2),
        "visible_fraction": round(character.visible_fraction, 4),
    }
