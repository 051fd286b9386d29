"""Procedural camera images of stamped billet front faces: the stand-in for the paper's private data.

The look model, element by element, and why each is there (why the simulator draws its own
stamps: docs/architecture.md, "Design choices"):

* **Geometry.** The billet face is drawn in its own square frame ("face space", a canvas of
  `F` px with F = 2 x size_px for small images so that thin stamp walls are resolved) and then
  put into the camera image by one homography: a tilted plane seen in perspective, rolled,
  scaled and shifted. Each site has its own camera (A: nearly frontal and farther away; B: oblique
  and close, its frame often cutting the face), so a detector must cope with both.
  Every annotation is the glyph polygon pushed through exactly the same transforms as the pixels.
* **Surface relief (a height field).** Large smooth undulations (stronger on deformed billets),
  a multi-scale fractal roughness, cutting marks (site A: a saw's arcs; site B: a torch's
  near-parallel drag lines), raised flakes of mill scale and a rolled-off rim at the billet edge.
* **Stamps are depressions in the same height field**: each glyph is punched to a depth with
  bevelled walls (the distance transform of the glyph mask gives the wall profile), a little
  material is pushed up as a lip around it, and worn stamps are smoothed. Nothing paints a stamp:
  it shows only through the shading of its walls and a cavity term, as on a real hot-stamped face.
* **Shading.** Normals of the height field lit by a directional light (Lambert, plus a weak
  specular sheen for bare steel and an ambient-occlusion-like cavity term derived from the
  height field). Light direction and colour are the site's (A: warm, from the upper left;
  B: cold, from the right), so the same stamp looks different at each site.
* **Colour (albedo).** Grey steel with an oxide tint that varies over the face, dark mill-scale
  flakes, soft orange-brown rust patches, all from thresholded fractal noise.
* **Background.** Darker surroundings: neighbouring billets of a stack (A) or machinery (B).
* **Camera.** Defocus blur, vignetting, exposure, the site's colour cast, signal-dependent sensor
  noise and, at site B's surveillance camera, JPEG compression.
* **Visibility classes** (paper Figure 8): *well* (crisp, deep stamps); *poor* (every stamp
  shallow or worn, low relief contrast, extra blur, a deformed face and distorted characters);
  *partial* (some characters hidden in part or whole by scale flakes, dirt or dust on the face,
  cut off by the billet's edge, or imprinted only in part). A character whose visible area is
  below `VISIBLE_FRACTION_MIN` of its full area, or whose visible part spans less than
  `VISIBLE_HEIGHT_MIN` of its height, is not annotated (a person would not box it).

The stamped ID (`billetjax.data.billet_ids`: 11 or 12 characters in two rows, digits unless an
`IdScheme` puts letters at chosen positions) is drawn with `random_billet_id` unless given.
`RenderedBillet.billet_id` is the full stamped string in reading order, including characters
that ended up hidden; `characters` holds only the annotated (visible enough) ones, in reading
order, each with its position `index` in `billet_id`.

Pixel coordinates follow COCO (pixel (r, c) covers [c, c+1) x [r, r+1)). Everything is numpy and
OpenCV, vectorised over pixels; the same generator state gives the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.ops import unary_union

from billetjax.data.billet_ids import IdScheme, id_rows, random_billet_id
from billetjax.glyphs import GLYPH_STROKE, GLYPH_WIDTH, glyph, polygon_rings
from billetjax.vocabulary import PARTIAL, POOR, SITE_A, SITE_B, SITES, VISIBILITY, WELL

# A character covered over more than 70 % of its area is left unannotated ...
VISIBLE_FRACTION_MIN = 0.30
# ... and so is one whose visible part spans less than this share of its full height (in the
# image): a lone foot of a 1 or the bar of a 7 is no character to a reader.
VISIBLE_HEIGHT_MIN = 0.45
# Pieces of a visible character smaller than this fraction of its area are dropped as slivers.
SLIVER_FRACTION = 0.03
# Face-space canvas: at least this many pixels, so that a stamp wall spans a few pixels.
_MIN_FACE_PX = 512
_SHIFT = 4  # fixed-point bits for cv2.fillPoly
# Face-space pixels per image pixel at large sizes: faces fill 0.7-1.0 of the frame.
_FACE_PX_PER_IMAGE_PX = 0.85


@dataclass(frozen=True)
class SiteLook:
    """Camera, light and colour of one production site."""

    face_fill: tuple[float, float]      # face side / image side
    yaw_deg: tuple[float, float]        # out-of-plane tilt about the vertical axis (mean, spread)
    pitch_deg: tuple[float, float]      # out-of-plane tilt about the horizontal axis
    roll_deg: tuple[float, float]       # in-plane rotation
    offset: float                       # centre shift, fraction of the image side
    focal: float                        # camera distance / face side: smaller = more perspective
    light_azimuth_deg: tuple[float, float]   # image frame, 0 = from the right, 90 = from below
    light_elevation_deg: tuple[float, float]
    light_rgb: tuple[float, float, float]
    ambient: float
    cast_rgb: tuple[float, float, float]     # multiplies the final colour
    blur_px: float                      # defocus at 256 px, scales with the image
    noise: float                        # sensor noise sigma (0..1 scale)
    jpeg_quality: tuple[int, int] | None
    marks: str                          # "arcs" (saw) or "lines" (torch cut)
    background: str                     # "stack" or "machinery"
    char_height: tuple[float, float]    # character height / face side


SITE_LOOKS: dict[str, SiteLook] = {
    SITE_A: SiteLook(
        face_fill=(0.68, 0.80), yaw_deg=(0.0, 6.0), pitch_deg=(4.0, 4.0), roll_deg=(0.0, 4.0),
        offset=0.04, focal=3.5, light_azimuth_deg=(-135.0, 20.0), light_elevation_deg=(38.0, 8.0),
        light_rgb=(1.0, 0.86, 0.66), ambient=0.38, cast_rgb=(1.05, 0.97, 0.86), blur_px=0.55,
        noise=0.014, jpeg_quality=None, marks="arcs", background="stack", char_height=(0.105, 0.125),
    ),
    SITE_B: SiteLook(
        face_fill=(0.86, 1.02), yaw_deg=(-18.0, 6.0), pitch_deg=(-6.0, 4.0), roll_deg=(-9.0, 5.0),
        offset=0.05, focal=1.9, light_azimuth_deg=(10.0, 25.0), light_elevation_deg=(30.0, 8.0),
        light_rgb=(0.86, 0.93, 1.04), ambient=0.32, cast_rgb=(0.95, 0.99, 1.03), blur_px=0.8,
        noise=0.030, jpeg_quality=(55, 80), marks="lines", background="machinery",
        char_height=(0.100, 0.118),
    ),
}


@dataclass(frozen=True)
class VisibilityLook:
    """How deep and how intact the stamps and the face are for one visibility class."""

    wall_slope: tuple[float, float]     # stamp depth / bevel width (steepness of the walls)
    bevel: tuple[float, float]          # bevel width / half stroke width
    wear_px: tuple[float, float]        # smoothing of the stamps, in half stroke widths
    undulation: tuple[float, float]     # face deformation amplitude (face units)
    outline_wobble: float               # face outline irregularity (face units)
    char_jitter: float                  # per-character position noise (character heights)
    char_rotation_deg: float
    char_shear: float
    extra_blur_px: tuple[float, float]  # additional camera blur at 256 px
    contrast: tuple[float, float]       # relief contrast factor


VISIBILITY_LOOKS: dict[str, VisibilityLook] = {
    WELL: VisibilityLook(
        wall_slope=(1.1, 1.8), bevel=(0.75, 1.0), wear_px=(0.0, 0.15), undulation=(0.002, 0.008),
        outline_wobble=0.004, char_jitter=0.03, char_rotation_deg=1.5, char_shear=0.03,
        extra_blur_px=(0.0, 0.2), contrast=(0.95, 1.1),
    ),
    # Hard but legible: the paper's poor digits were read and boxed by people. Shallower than
    # this, at site B's sensor noise and JPEG, the stamps drowned (tests/test_simulate.py).
    POOR: VisibilityLook(
        wall_slope=(0.5, 0.9), bevel=(0.9, 1.4), wear_px=(0.2, 0.5), undulation=(0.015, 0.035),
        outline_wobble=0.02, char_jitter=0.10, char_rotation_deg=6.0, char_shear=0.15,
        extra_blur_px=(0.3, 0.8), contrast=(0.72, 0.92),
    ),
    PARTIAL: VisibilityLook(
        wall_slope=(0.9, 1.6), bevel=(0.75, 1.0), wear_px=(0.0, 0.25), undulation=(0.003, 0.012),
        outline_wobble=0.008, char_jitter=0.04, char_rotation_deg=2.5, char_shear=0.05,
        extra_blur_px=(0.0, 0.4), contrast=(0.9, 1.05),
    ),
}


@dataclass
class RenderedCharacter:
    """One annotated stamped character, in image pixel coordinates (x, y)."""

    label: str
    polygon: np.ndarray                 # float32 [K, 2], outline of the visible part, K >= 3
    bbox: tuple[float, float, float, float]  # (x, y, w, h), tight around `polygon`
    index: int                          # position in `RenderedBillet.billet_id`
    visible_fraction: float             # visible area / full stamped area
    shape: Polygon | MultiPolygon = field(repr=False)  # the visible part with its counters


@dataclass
class RenderedBillet:
    """A rendered billet image with its annotations."""

    image: np.ndarray                   # uint8 [H, W, 3] RGB
    characters: list[RenderedCharacter]         # annotated characters, in reading order
    billet_id: str                      # the full stamped ID, in reading order
    site: str
    visibility: str


# ----------------------------------------------------------------------------- noise helpers


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _normal(rng: np.random.Generator, mean_sd: tuple[float, float]) -> float:
    return float(rng.normal(mean_sd[0], mean_sd[1]))


def _cell_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Band-limited noise (unit variance approx.): a `cells` grid of normals, cubic-upsampled."""
    grid = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    big = cv2.resize(grid, (size + size * 3 // cells, size + size * 3 // cells),
                     interpolation=cv2.INTER_CUBIC)
    off = size * 3 // cells // 2
    return big[off:off + size, off:off + size]


def _fractal(rng: np.random.Generator, size: int, base_cells: int = 4, beta: float = 1.0,
             finest_px: float = 2.0) -> np.ndarray:
    """Multi-scale (fractal) noise built coarse to fine; octave amplitude ~ cell size ** beta."""
    cells = base_cells
    field_ = rng.standard_normal((cells, cells)).astype(np.float32)
    total = 1.0
    amp = 1.0
    while size / (cells * 2) >= finest_px:
        cells *= 2
        amp *= 0.5 ** beta
        field_ = cv2.resize(field_, (cells, cells), interpolation=cv2.INTER_LINEAR)
        field_ += amp * rng.standard_normal((cells, cells)).astype(np.float32)
        total += amp * amp
    field_ = cv2.resize(field_, (size, size), interpolation=cv2.INTER_CUBIC)
    return field_ / np.float32(math.sqrt(total))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.05:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma),
                            borderType=cv2.BORDER_REFLECT)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of a square canvas, in face units (0..1)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size
    xx, yy = np.meshgrid(axis, axis)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _fill(canvas: np.ndarray, geometry, value: float, scale: float = 1.0,
          antialiased: bool = False) -> None:
    """Fill a (multi)polygon, given in face units x `scale` px, into `canvas` (even-odd)."""
    rings = polygon_rings(geometry)
    if not rings:
        return
    fixed = [np.round((ring * scale - 0.5) * (1 << _SHIFT)).astype(np.int32) for ring in rings]
    cv2.fillPoly(canvas, fixed, value, lineType=cv2.LINE_AA if antialiased else cv2.LINE_8,
                 shift=_SHIFT)


# ----------------------------------------------------------------------------- geometry


def _camera(rng: np.random.Generator, look: SiteLook, size_px: int
            ) -> tuple[np.ndarray, float]:
    """Homography from face units (0..1) to image pixels, and the in-plane roll (radians)."""
    yaw = math.radians(_normal(rng, look.yaw_deg))
    pitch = math.radians(_normal(rng, look.pitch_deg))
    roll = math.radians(_normal(rng, look.roll_deg))
    fill = _uniform(rng, look.face_fill)
    shift = rng.normal(0.0, look.offset, 2) * size_px
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    rot = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array(
        [[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    points = np.c_[corners, np.zeros(4)] @ rot.T
    projected = points[:, :2] * look.focal / (look.focal + points[:, 2:3])
    cr, sr = math.cos(roll), math.sin(roll)
    projected = projected @ np.array([[cr, sr], [-sr, cr]])
    dst = projected * fill * size_px + size_px / 2.0 + shift
    src = corners + 0.5
    homography = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    return homography, roll


def _face_outline(rng: np.random.Generator, wobble: float) -> Polygon:
    """The billet's face: a square with rounded corners and slightly irregular, bulging sides."""
    margin, radius = 0.012, float(rng.uniform(0.03, 0.07))
    rounded = box(margin + radius, margin + radius, 1 - margin - radius, 1 - margin - radius
                  ).buffer(radius, quad_segs=6)
    points = np.asarray(shapely.segmentize(rounded, 0.02).exterior.coords)[:-1]
    centre = np.array([0.5, 0.5])
    rel = points - centre
    angle = np.arctan2(rel[:, 1], rel[:, 0])
    radial = np.zeros(len(points))
    for k in range(2, 7):
        radial += rng.normal(0.0, wobble / k) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    points = points + rel / np.linalg.norm(rel, axis=1, keepdims=True) * radial[:, None]
    outline = shapely.make_valid(Polygon(points))
    if outline.geom_type != "Polygon":
        outline = max(getattr(outline, "geoms", [outline]), key=lambda g: g.area)
    return outline


def _occluder_outline(rng: np.random.Generator, centre: np.ndarray, radius: float, elongation: float,
                      vertices: int = 72) -> Polygon:
    """An irregular star-shaped patch (a scale flake or a dirt lump) in face units."""
    angle = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = np.ones(vertices)
    for k in range(2, 9):
        r += rng.normal(0.0, 0.35 / k) * np.cos(k * angle + rng.uniform(0, 2 * np.pi))
    # A ragged, broken edge on top of the smooth shape.
    r += rng.normal(0.0, 0.045, vertices)
    r = np.clip(r, 0.35, None) * radius
    theta = rng.uniform(0, np.pi)
    x, y = r * np.cos(angle) * elongation, r * np.sin(angle) / elongation
    c, s = math.cos(theta), math.sin(theta)
    points = np.c_[c * x - s * y, s * x + c * y] + centre
    return shapely.make_valid(Polygon(points)).buffer(0)


def _apply_homography(geometry, homography: np.ndarray):
    def project(coords: np.ndarray) -> np.ndarray:
        h = np.c_[coords, np.ones(len(coords))] @ homography.T
        return h[:, :2] / h[:, 2:3]

    return shapely.transform(geometry, project)


@dataclass
class _Stamp:
    label: str
    index: int
    full: Polygon                       # the die's full outline, face units
    stamped: Polygon | MultiPolygon     # the part actually imprinted
    depth_scale: float


def _layout(rng: np.random.Generator, billet_id: str, site: SiteLook, vis: VisibilityLook,
            visibility: str) -> tuple[list[_Stamp], float]:
    """Place the ID's characters on the face (face units); returns the stamps and the char height."""
    rows = id_rows(billet_id)
    height = _uniform(rng, site.char_height)
    pitch = height * rng.uniform(0.74, 0.84)
    line_pitch = height * rng.uniform(1.35, 1.6)
    block_angle = math.radians(rng.normal(0.0, 2.0 if visibility != POOR else 4.0))
    indent = rng.uniform(-0.5, 0.5) * pitch
    width = max(len(r) for r in rows) * pitch
    block_h = len(rows) * line_pitch
    centre = np.array([0.5, 0.5]) + rng.normal(0.0, 1.0, 2) * [0.05, 0.07]
    if visibility == PARTIAL and rng.random() < 0.35:
        # Cut edge: the ID was stamped near the face's border and part of it runs off the face.
        side = rng.integers(0, 4)
        overhang = rng.uniform(0.2, 0.9) * height
        if side == 0:
            centre[0] = 1.0 - width / 2 + overhang
        elif side == 1:
            centre[0] = width / 2 - overhang
        elif side == 2:
            centre[1] = 1.0 - block_h / 2 + overhang * 0.8
        else:
            centre[1] = block_h / 2 - overhang * 0.8
    else:
        centre = np.clip(centre, [width / 2 + 0.07, block_h / 2 + 0.07],
                         [1 - width / 2 - 0.07, 1 - block_h / 2 - 0.07])
    cb, sb = math.cos(block_angle), math.sin(block_angle)
    stamps: list[_Stamp] = []
    index = 0
    for row, text in enumerate(rows):
        row_shift = indent if row % 2 else 0.0
        for col, label in enumerate(text):
            local = np.array([(col - (len(text) - 1) / 2) * pitch + row_shift,
                              (row - (len(rows) - 1) / 2) * line_pitch])
            local += rng.normal(0.0, vis.char_jitter, 2) * height
            pos = centre + [cb * local[0] - sb * local[1], sb * local[0] + cb * local[1]]
            angle = block_angle + math.radians(rng.normal(0.0, vis.char_rotation_deg))
            shear = rng.normal(0.0, vis.char_shear)
            sx = height * rng.uniform(0.97, 1.03)
            sy = height * rng.uniform(0.97, 1.03)
            ca, sa = math.cos(angle), math.sin(angle)
            linear = np.array([[ca, -sa], [sa, ca]]) @ np.array([[1.0, shear], [0.0, 1.0]]) \
                @ np.diag([sx, sy])
            offset = pos - linear @ np.array([GLYPH_WIDTH / 2, 0.5])
            full = affinity.affine_transform(
                glyph(label), [linear[0, 0], linear[0, 1], linear[1, 0], linear[1, 1],
                               offset[0], offset[1]])
            stamped = full
            depth_scale = 1.0
            if visibility == PARTIAL:
                depth_scale = rng.uniform(0.75, 1.1)
                if rng.random() < 0.12:
                    # Imprinted in part only: the die met the face at an angle.
                    theta = rng.uniform(0, 2 * np.pi)
                    cut = rng.uniform(-0.15, 0.3) * height
                    normal = np.array([math.cos(theta), math.sin(theta)])
                    ortho = np.array([-normal[1], normal[0]])
                    base = pos + normal * cut
                    half_plane = Polygon([base + ortho * 2 * height, base - ortho * 2 * height,
                                          base - ortho * 2 * height + normal * 3 * height,
                                          base + ortho * 2 * height + normal * 3 * height])
                    stamped = full.difference(half_plane)
            elif visibility == POOR:
                depth_scale = rng.uniform(0.6, 1.2)
            else:
                depth_scale = rng.uniform(0.9, 1.1)
            stamps.append(_Stamp(label, index, full, stamped, depth_scale))
            index += 1
    return stamps, height


def _occluders(rng: np.random.Generator, stamps: list[_Stamp], height: float
               ) -> list[tuple[Polygon, str]]:
    """Scale flakes and dirt lying over part of the ID (partial billets)."""
    count = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
    out: list[tuple[Polygon, str]] = []
    for k in range(count):
        target = stamps[int(rng.integers(0, len(stamps)))].full.centroid
        # The first lies right on a character, so every partial billet has a covered one.
        spread = 0.25 if k == 0 else 0.7
        centre = np.array([target.x, target.y]) + rng.normal(0.0, spread, 2) * height
        radius = height * rng.uniform(0.4, 1.1)
        kind = str(rng.choice(["scale", "dirt", "dust"], p=[0.55, 0.3, 0.15]))
        out.append((_occluder_outline(rng, centre, radius, rng.uniform(1.0, 2.2)), kind))
    return out


# ----------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, site: SiteLook, size: int, homography: np.ndarray
                ) -> np.ndarray:
    """Dark surroundings: neighbouring billets of a stack (A) or machinery (B), float RGB."""
    shade = _fractal(rng, size, base_cells=3, beta=1.2, finest_px=4.0)[..., None]
    if site.background == "stack":
        bg = np.empty((size, size, 3), np.float32)
        bg[:] = np.array([0.035, 0.03, 0.028], np.float32)
        gap = rng.uniform(1.03, 1.08)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                if dx == 0 and dy == 0:
                    continue
                quad = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64) + [dx * gap, dy * gap]
                quad = cv2.perspectiveTransform(quad[None].astype(np.float64), homography)[0]
                tone = rng.uniform(0.06, 0.15)
                colour = np.array([tone * 1.05, tone * 0.93, tone * 0.82])
                cv2.fillPoly(bg, [np.round(quad * 16).astype(np.int32)], colour.tolist(),
                             lineType=cv2.LINE_AA, shift=4)
        bg *= 1.0 + 0.35 * shade
    else:
        _, yy = _grid(size)
        base = np.array([0.06, 0.07, 0.085], np.float32)
        bg = base * (0.7 + 0.6 * yy[..., None]) * (1.0 + 0.3 * shade)
        # Rollers and frame bars of the machinery, roughly horizontal.
        for _ in range(int(rng.integers(2, 5))):
            y0 = rng.uniform(0, size)
            thick = rng.uniform(0.02, 0.07) * size
            slope = rng.normal(0.0, 0.05)
            pts = np.array([[-10, y0], [size + 10, y0 + slope * size],
                            [size + 10, y0 + slope * size + thick], [-10, y0 + thick]])
            tone = rng.uniform(0.08, 0.2)
            cv2.fillPoly(bg, [np.round(pts * 16).astype(np.int32)],
                         [tone * 0.9, tone * 0.95, tone * 1.05], lineType=cv2.LINE_AA, shift=4)
    return _blur(bg.astype(np.float32), size / 200.0)


def _cut_marks(rng: np.random.Generator, face_px: int, kind: str) -> np.ndarray:
    """Height of cutting marks: saw arcs (A) or torch drag lines (B), in face units."""
    xx, yy = _grid(face_px)
    angle = rng.uniform(0, 2 * np.pi)
    if kind == "arcs":
        distance = rng.uniform(0.8, 1.6)
    else:
        distance = rng.uniform(6.0, 12.0)
    cx, cy = 0.5 + distance * math.cos(angle), 0.5 + distance * math.sin(angle)
    radius = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - (distance - 0.75)
    # A 1-D groove profile indexed by the distance from the cut's centre.
    n = 4096
    profile = rng.standard_normal(n).astype(np.float32)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 1.6) ** 2).astype(np.float32)
    profile = np.convolve(profile, kernel / kernel.sum(), mode="same")
    grooves = rng.random(n) < 0.02
    profile -= grooves * rng.uniform(1.0, 3.0, n).astype(np.float32)
    period = rng.uniform(0.0018, 0.003)  # face units per profile sample
    idx = (np.clip(radius, 0, None) / period).astype(np.int32) % n
    marks = profile[idx]
    return marks * np.float32(rng.uniform(0.0004, 0.0009))


def _render(rng: np.random.Generator, site: str, visibility: str, size_px: int,
            billet_id: str | None, stamped: bool, with_id: bool,
            id_scheme: IdScheme | None = None) -> RenderedBillet:
    """One billet (or, without `with_id`, a bare surface), step by step: camera and layout, the
    face's relief with its stamps and flakes, lighting, colour, the camera image, the sensor."""
    if site not in SITE_LOOKS:
        raise ValueError(f"unknown site {site!r}; expected one of {SITES}")
    if visibility not in VISIBILITY_LOOKS:
        raise ValueError(f"unknown visibility {visibility!r}; expected one of {VISIBILITY}")
    if size_px < 32:
        raise ValueError(f"size_px = {size_px} is too small to render a billet (>= 32)")
    look, vis = SITE_LOOKS[site], VISIBILITY_LOOKS[visibility]
    size = int(size_px)
    # Resolve thin stamp walls on small images; near the face's own size on big ones.
    face_px = max(int(round(size * _FACE_PX_PER_IMAGE_PX)), min(2 * size, _MIN_FACE_PX))
    if billet_id is None:
        billet_id = random_billet_id(rng, id_scheme)
    bad = [c for c in billet_id if not _has_glyph(c)]
    if bad:
        raise ValueError(f"billet_id {billet_id!r}: no glyph for {bad}")

    homography, roll = _camera(rng, look, size)
    face = _face_outline(rng, vis.outline_wobble)
    if with_id:
        stamps, char_h = _layout(rng, billet_id, look, vis, visibility)
        occluders = _occluders(rng, stamps, char_h) if visibility == PARTIAL else []
    else:
        stamps, char_h, occluders = [], 0.11, []

    relief = _surface_relief(rng, face_px, look, vis, face)
    _stamp_relief(rng, relief.height, stamps, stamped, char_h, vis, face_px)
    cover = _flake_relief(rng, relief.height, relief.rough, occluders, face_px)
    diffuse, specular = _lighting(rng, relief.height, look, vis, roll, face_px)
    albedo, gloss = _albedo(rng, face_px, relief, cover)
    face_rgb = _face_colour(albedo, diffuse, specular, gloss, look)
    out = _sensor(rng, _into_camera(rng, face_rgb, face, homography, look, size), look, vis, size)
    characters = _annotate(stamps, face, occluders, homography, size)
    return RenderedBillet(out, characters, billet_id if with_id else "", site, visibility)


@dataclass
class _Relief:
    """The face's height field (face units) and the noise fields its colours follow."""

    height: np.ndarray
    rough: np.ndarray  # the fine roughness: also the steel's luminance and the flakes' tops
    scale_noise: np.ndarray
    scale_mask: np.ndarray  # mill-scale flakes, raised and dark
    rust_mask: np.ndarray


@dataclass
class _Cover:
    """Flakes, dirt and dust lying on the face: their coverage and colour in a window of it."""

    mask: np.ndarray
    albedo: np.ndarray
    window: tuple[slice, slice]


def _surface_relief(rng: np.random.Generator, face_px: int, look: SiteLook, vis: VisibilityLook,
                    face: Polygon) -> _Relief:
    """The bare face's height field: undulation, roughness, cutting marks, mill-scale flakes and the
    rolled-off rim at the billet's edge; with the noise that places the scale and the rust."""
    und = vis.undulation
    height = _fractal(rng, face_px, base_cells=2, beta=2.0, finest_px=16.0) * np.float32(
        _uniform(rng, und))
    rough = _fractal(rng, face_px, base_cells=8, beta=1.0)
    height += rough * np.float32(rng.uniform(0.0011, 0.0018) * math.sqrt(512.0 / face_px))
    marks_fade = _smoothstep(0.5 + 0.8 * _cell_noise(rng, face_px, 5))
    height += _cut_marks(rng, face_px, look.marks) * marks_fade

    scale_noise = _fractal(rng, face_px, base_cells=4, beta=0.9)
    scale_amount = rng.uniform(0.2, 1.3)
    scale_mask = _smoothstep((scale_noise - scale_amount) * 5.0) * np.float32(rng.uniform(0.5, 1.0))
    height += scale_mask * np.float32(rng.uniform(0.0015, 0.003))
    rust_noise = _fractal(rng, face_px, base_cells=3, beta=1.1)
    rust_amount = rng.uniform(0.0, 1.5)
    rust_mask = _smoothstep((rust_noise - rust_amount) * 1.5) * (0.6 + 0.4 * (rough > -0.3))

    # Rolled-off rim at the billet's edge (a distance transform of the face mask).
    face_mask = np.zeros((face_px, face_px), np.uint8)
    _fill(face_mask, face, 255, face_px)
    edge_dist = cv2.distanceTransform(face_mask, cv2.DIST_L2, 3) / np.float32(face_px)
    rim = np.float32(rng.uniform(0.015, 0.03))
    height -= np.float32(0.6) * rim * (1.0 - _smoothstep(edge_dist / rim)) ** 2
    return _Relief(height, rough, scale_noise, scale_mask, rust_mask)


def _stamp_relief(rng: np.random.Generator, height: np.ndarray, stamps: list[_Stamp], stamped: bool,
                  char_h: float, vis: VisibilityLook, face_px: int) -> None:
    """Stamps as depressions in `height` (in place): punched to depth with bevelled walls, a lip of
    material pushed up around the die, worn ones smoothed. Unstamped (a matched blank): the same
    draws, no depressions."""
    half_stroke = 0.5 * GLYPH_STROKE * char_h  # face units
    depth_map = np.zeros((face_px, face_px), np.float32)
    bevel = _uniform(rng, vis.bevel) * half_stroke
    slope = _uniform(rng, vis.wall_slope)
    wear = _uniform(rng, vis.wear_px) * half_stroke
    lip = rng.uniform(0.05, 0.15)
    for stamp in stamps:
        _fill(depth_map, stamp.stamped, float(stamp.depth_scale), face_px)
    if stamps and stamped:
        window = _face_window([s.full for s in stamps], face_px, margin=2.0 * char_h)
        (r0, r1), (c0, c1) = window
        mask = (depth_map[r0:r1, c0:c1] > 0).astype(np.uint8)
        inside = cv2.distanceTransform(mask, cv2.DIST_L2, 5) / np.float32(face_px)
        outside = cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5) / np.float32(face_px)
        depth = np.float32(slope * bevel)
        profile = _smoothstep(inside / np.float32(bevel))
        stamp_h = -depth * depth_map[r0:r1, c0:c1] * profile
        # Material pushed up around the die.
        stamp_h += depth * np.float32(lip) * np.exp(-outside / np.float32(0.8 * half_stroke)) * (
            1 - mask)
        stamp_h = _blur(stamp_h, wear * face_px)
        height[r0:r1, c0:c1] += stamp_h


def _flake_relief(rng: np.random.Generator, height: np.ndarray, rough: np.ndarray, occluders,
                  face_px: int) -> _Cover | None:
    """Occluders lying on the face raise `height` (in place) to their flat-ish tops, filling the
    stamps under them; their coverage and colour for the albedo (None without occluders)."""
    if not occluders:
        return None
    (r0, r1), (c0, c1) = _face_window([p for p, _ in occluders], face_px, margin=0.01)
    occ_mask = np.zeros((r1 - r0, c1 - c0), np.float32)
    occ_albedo = np.zeros((r1 - r0, c1 - c0, 3), np.float32)
    shift = np.array([c0, r0], np.float64) / face_px
    for polygon, kind in occluders:
        local = affinity.translate(polygon, -shift[0], -shift[1])
        base = {"scale": [0.13, 0.13, 0.14], "dirt": [0.33, 0.24, 0.17],
                "dust": [0.44, 0.42, 0.40]}[kind]
        colour = np.array(base) * rng.uniform(0.7, 1.3)
        _fill(occ_mask, local, 1.0, face_px, antialiased=True)
        _fill(occ_albedo, local, colour.tolist(), face_px)
    # The flake sits on the surface: its top is flat-ish and higher than the face.
    lump = np.float32(rng.uniform(0.004, 0.008))
    top = lump + rough[r0:r1, c0:c1] * np.float32(0.0015)
    soft = _blur(occ_mask, 0.0015 * face_px)
    height[r0:r1, c0:c1] += (top - height[r0:r1, c0:c1]) * soft
    return _Cover(occ_mask, occ_albedo, (slice(r0, r1), slice(c0, c1)))


def _lighting(rng: np.random.Generator, height: np.ndarray, look: SiteLook, vis: VisibilityLook,
              roll: float, face_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse (Lambert, darkened in cavities) and specular shading of the height field under the
    site's directional light, turned with the camera's roll."""
    height = _blur(height, 0.6 * face_px / 512.0)
    contrast = np.float32(_uniform(rng, vis.contrast))
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3, scale=contrast * face_px / 8.0)
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3, scale=contrast * face_px / 8.0)
    inv_norm = gx * gx
    inv_norm += gy * gy
    inv_norm += 1.0
    np.sqrt(inv_norm, out=inv_norm)
    np.reciprocal(inv_norm, out=inv_norm)
    azimuth = math.radians(_normal(rng, look.light_azimuth_deg)) - roll
    elevation = math.radians(_normal(rng, look.light_elevation_deg))
    light = np.array([math.cos(elevation) * math.cos(azimuth),
                      math.cos(elevation) * math.sin(azimuth), math.sin(elevation)], np.float32)
    half = light + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    diffuse = cv2.addWeighted(gx, -float(light[0]), gy, -float(light[1]), float(light[2]))
    diffuse *= inv_norm
    np.maximum(diffuse, 0.0, out=diffuse)
    diffuse *= np.float32((1 - look.ambient) / max(light[2], 0.3))
    diffuse += np.float32(look.ambient)
    specular = cv2.addWeighted(gx, -float(half[0]), gy, -float(half[1]), float(half[2]))
    specular *= inv_norm
    np.maximum(specular, 0.0, out=specular)
    specular = cv2.pow(specular, 24.0)
    diffuse *= _cavity_occlusion(height, contrast, face_px)
    return diffuse, specular


def _cavity_occlusion(height: np.ndarray, contrast: np.float32, face_px: int) -> np.ndarray:
    """Cavities (below their surroundings) receive less light: a factor from the height above a
    coarse blur of it (a coarse blur is enough)."""
    small = cv2.resize(height, (face_px // 4, face_px // 4), interpolation=cv2.INTER_AREA)
    surround = cv2.resize(_blur(small, 0.012 * face_px / 4), (face_px, face_px),
                          interpolation=cv2.INTER_LINEAR)
    occlusion = height - surround
    occlusion *= np.float32(50.0) * contrast
    occlusion += 1.0
    np.clip(occlusion, 0.4, 1.15, out=occlusion)
    return occlusion


def _albedo(rng: np.random.Generator, face_px: int, relief: _Relief, cover: _Cover | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The face's colour (steel with an oxide tint, dark scale, rust, what lies on it) and its
    gloss (where the specular sheen shows)."""
    tint_noise = _cell_noise(rng, face_px, 4)
    steel = np.array([0.31, 0.305, 0.30], np.float32) * np.float32(rng.uniform(0.8, 1.15))
    oxide = np.array(rng.choice([[0.40, 0.33, 0.27], [0.30, 0.31, 0.38], [0.36, 0.34, 0.30]]),
                     np.float32)
    t = _smoothstep(0.5 + 0.5 * tint_noise)
    grain = _blur(rng.standard_normal((face_px, face_px)).astype(np.float32), 0.7)
    luminance = 1.0 + 0.16 * relief.rough + 0.07 * grain
    albedo = steel + (oxide - steel) * t[..., None]
    albedo *= luminance[..., None]
    scale_col = np.array([0.19, 0.19, 0.2], np.float32) * np.float32(rng.uniform(0.8, 1.2))
    albedo += (scale_col * luminance[..., None] - albedo) * relief.scale_mask[..., None]
    rust_col = np.array([0.50, 0.30, 0.17], np.float32) * np.float32(rng.uniform(0.75, 1.15))
    rust_w = relief.rust_mask * (1 - 0.6 * relief.scale_mask)
    albedo += (rust_col * (1.0 + 0.25 * relief.scale_noise + 0.1 * grain)[..., None] - albedo) \
        * rust_w[..., None]
    gloss = (1.0 - rust_w) * (1.0 - 0.7 * relief.scale_mask)
    if cover is not None:
        w = cover.mask[..., None]
        region = albedo[cover.window]
        region += (cover.albedo * luminance[cover.window][..., None] - region) * w
        gloss[cover.window] *= 1.0 - cover.mask
    return albedo, gloss


def _face_colour(albedo: np.ndarray, diffuse: np.ndarray, specular: np.ndarray, gloss: np.ndarray,
                 look: SiteLook) -> np.ndarray:
    """The lit face in face space, float RGB (`albedo` and `specular` are used up)."""
    light_rgb = np.array(look.light_rgb, np.float32)
    face_rgb = albedo
    face_rgb *= diffuse[..., None]
    specular *= gloss
    specular *= np.float32(0.12)
    face_rgb += specular[..., None]
    face_rgb *= light_rgb
    return face_rgb


def _into_camera(rng: np.random.Generator, face_rgb: np.ndarray, face: Polygon, homography: np.ndarray,
                 look: SiteLook, size: int) -> np.ndarray:
    """The face warped into the camera image over its background, float RGB."""
    face_px = face_rgb.shape[0]
    to_image = homography @ np.diag([1.0 / face_px, 1.0 / face_px, 1.0])
    # Shift by half a pixel both ways: OpenCV samples at integer pixel centres.
    centre_fix = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    warp = centre_fix @ to_image @ np.linalg.inv(centre_fix)
    warped = cv2.warpPerspective(face_rgb, warp, (size, size), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT)
    alpha = np.zeros((size, size), np.float32)
    _fill_image_space(alpha, _apply_homography(face, homography))
    background = _background(rng, look, size, homography)
    return warped * alpha[..., None] + background * (1 - alpha[..., None])


def _sensor(rng: np.random.Generator, image: np.ndarray, look: SiteLook, vis: VisibilityLook,
            size: int) -> np.ndarray:
    """What the camera records: defocus, vignetting, exposure, colour cast, gamma, sensor noise
    and (site B) JPEG compression; uint8 RGB."""
    res = size / 256.0  # blur and noise sizes are given at 256 px
    blur = look.blur_px + _uniform(rng, vis.extra_blur_px)
    image = _blur(image, blur * res)
    ix, iy = _grid(size)
    vignette = 1.0 - np.float32(rng.uniform(0.15, 0.35)) * ((ix - 0.5) ** 2 + (iy - 0.5) ** 2) * 2
    exposure = np.float32(rng.uniform(0.8, 1.15))
    image = image * (vignette * exposure)[..., None] * np.array(look.cast_rgb, np.float32)
    image = np.clip(image, 0.0, 1.0) ** np.float32(1 / 1.15)
    sigma = look.noise * (1.0 + 0.6 * rng.random())
    luma = rng.standard_normal((size, size)).astype(np.float32)
    chroma = rng.standard_normal((size, size, 3)).astype(np.float32)
    image = image + np.float32(sigma) * np.sqrt(image + 0.02) * (
        luma[..., None] * 1.6 + 0.5 * chroma)
    out = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if look.jpeg_quality is not None:
        quality = int(rng.integers(look.jpeg_quality[0], look.jpeg_quality[1] + 1))
        ok, buffer = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = np.ascontiguousarray(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1])
    return out


def _has_glyph(char: str) -> bool:
    try:
        glyph(char)
    except KeyError:
        return False
    return True


def _face_window(geometries, face_px: int, margin: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """Row and column range (pixels) covering the geometries plus a margin (face units)."""
    x0, y0, x1, y1 = unary_union(geometries).bounds
    c0 = max(int((x0 - margin) * face_px), 0)
    r0 = max(int((y0 - margin) * face_px), 0)
    c1 = min(int(math.ceil((x1 + margin) * face_px)), face_px)
    r1 = min(int(math.ceil((y1 + margin) * face_px)), face_px)
    return (r0, max(r1, r0 + 1)), (c0, max(c1, c0 + 1))


def _fill_image_space(canvas: np.ndarray, geometry) -> None:
    """Antialiased coverage of a geometry in image pixels (COCO coordinates)."""
    _fill(canvas, geometry, 1.0, 1.0, antialiased=True)


def _annotate(stamps: list[_Stamp], face: Polygon, occluders, homography: np.ndarray,
              size: int) -> list[RenderedCharacter]:
    """Visible part of every stamp in image pixels; drops hardly visible ones."""
    frame = box(0, 0, size, size)
    cover = unary_union([p for p, _ in occluders]) if occluders else None
    characters: list[RenderedCharacter] = []
    for stamp in stamps:
        visible = stamp.stamped.intersection(face)
        if cover is not None:
            visible = visible.difference(cover)
        full_img = _apply_homography(stamp.full, homography)
        visible = _apply_homography(visible, homography).intersection(frame)
        visible = _polygonal(visible)
        full_area = full_img.area
        if visible.is_empty or full_area <= 0:
            continue
        parts = [p for p in getattr(visible, "geoms", [visible])
                 if p.area >= SLIVER_FRACTION * full_area]
        if not parts:
            continue
        visible = parts[0] if len(parts) == 1 else MultiPolygon(parts)
        fraction = visible.area / full_area
        if fraction < VISIBLE_FRACTION_MIN:
            continue
        full_bounds, seen_bounds = full_img.bounds, visible.bounds
        if (seen_bounds[3] - seen_bounds[1]) < VISIBLE_HEIGHT_MIN * (full_bounds[3] - full_bounds[1]):
            continue
        # One outline per character: the piece's exterior, or the hull of several pieces.
        outline = visible.exterior if len(parts) == 1 else visible.convex_hull.exterior
        outline = outline.simplify(0.2)
        points = np.asarray(outline.coords, np.float64)[:-1]
        if len(points) < 3:
            continue
        polygon = points.astype(np.float32)
        x0, y0 = polygon.min(axis=0)
        x1, y1 = polygon.max(axis=0)
        characters.append(RenderedCharacter(
            label=stamp.label, polygon=polygon,
            bbox=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
            index=stamp.index, visible_fraction=float(fraction), shape=visible))
    return characters


def _polygonal(geometry) -> Polygon | MultiPolygon:
    """Keep only the areal parts of an overlay result (drops stray lines and points)."""
    if geometry.is_empty:
        return Polygon()
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = [g for g in getattr(geometry, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon")]
    polys = []
    for g in parts:
        polys.extend(getattr(g, "geoms", [g]))
    return MultiPolygon(polys) if polys else Polygon()


# ----------------------------------------------------------------------------- public API


def render_billet(rng: np.random.Generator, *, site: str, visibility: str, size_px: int,
                  billet_id: str | None = None, stamped: bool = True,
                  id_scheme: IdScheme | None = None) -> RenderedBillet:
    """Render one stamped billet face (site "A"/"B"; visibility "well"/"poor"/"partial").

    `billet_id` defaults to `random_billet_id(rng, id_scheme)` (digits only without a scheme).
    `stamped=False` renders the very same billet (same random draws, same annotations) with the
    stamps left out: a matched blank.
    """
    return _render(rng, site, visibility, int(size_px), billet_id, stamped, with_id=True, id_scheme=id_scheme)


def render_surface(rng: np.random.Generator, *, site: str, size_px: int) -> np.ndarray:
    """A blank billet face, never stamped, with the look of `render_billet` (uint8 [H, W, 3] RGB)."""
    return _render(rng, site, WELL, int(size_px), None, stamped=False, with_id=False).image
