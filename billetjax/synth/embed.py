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

Coordinates follow COCO (pixel (r, c) covers [c, c+1) x [r, r+1)); OpenCV's warps put pixel
centres on integers, which `_cv` converts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from billetjax.config import typed
from billetjax.glyphs import rasterise
from billetjax.synth.masks import polygons, silhouette_of, solid_area

# Character heights are given for 256 px images and scale with the image size.
REFERENCE_SIZE_PX = 256
# Layout attempts before the characters are made smaller.
LAYOUT_TRIES = 40
# Attempts at an occluder that leaves the other characters alone.
OCCLUDER_TRIES = 30
# Margin (px) between a well-visible character and the image border.
BORDER_MARGIN_PX = 2.0
# Visible parts smaller than this (px²) are not annotated: they do not show in the mask either.
MIN_PART_AREA_PX = 1.0
# A surface is face in front of a background when Otsu's two classes differ by this many grey
# levels and the face covers at least this share of the image.
FACE_CONTRAST = 25.0
FACE_MIN_SHARE = 0.15
# Spread of the billet ID's position around the face's centre, in face sizes (sqrt of its area).
CENTRE_SPREAD = 0.2
# Outline simplification tolerance (px) for the written polygons.
SIMPLIFY_PX = 0.15
PARTIAL_MODES = ("erased", "edge", "occluder")
# A cut that leaves a piece of a character smaller than this share of it is redrawn: annotators
# would not box such a speck, and it would not show in the character's mask either.
SPECK_FRACTION = 0.05
# A pixel belongs to a stamp's warped mask when the silhouette covers at least this share of it,
# measured on a grid this much finer than the image.
MASK_COVERAGE = 0.5
MASK_SUPERSAMPLE = 4


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


# ----------------------------------------------------------------------------- geometry helpers


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def _cv(matrix: np.ndarray) -> np.ndarray:
    """A COCO-coordinate homography as OpenCV wants it (pixel centres on integers)."""
    return _translate(-0.5, -0.5) @ matrix @ _translate(0.5, 0.5)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, np.float64)
    moved = np.c_[pts, np.ones(len(pts))] @ matrix.T
    return moved[:, :2] / moved[:, 2:3]


def transform(geometry, matrix: np.ndarray):
    """A geometry through a homography (straight edges stay straight, so this is exact)."""
    if geometry.is_empty:
        return geometry
    return shapely.transform(geometry, lambda xy: _apply(matrix, xy))


def _solid(geometry, min_area: float = MIN_PART_AREA_PX):
    """Valid polygonal geometry without slivers below `min_area`."""
    geometry = shapely.make_valid(geometry)
    parts = [p for p in polygons(geometry) if p.area >= min_area]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def surface_warp(rng: np.random.Generator, size_px: int, params: EmbedParams) -> np.ndarray:
    """A random homography: rotation about the centre and a slight perspective (corner moves)."""
    s = float(size_px)
    corners = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float32)
    moved = corners + rng.uniform(-1, 1, size=(4, 2)).astype(np.float32) * params.surface_perspective * s
    perspective = cv2.getPerspectiveTransform(corners, moved.astype(np.float32)).astype(np.float64)
    angle = np.deg2rad(rng.uniform(-params.surface_rotation_deg, params.surface_rotation_deg))
    c, si = np.cos(angle), np.sin(angle)
    rotation = _translate(s / 2, s / 2) @ np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]]) @ _translate(-s / 2, -s / 2)
    # Zoom in a little so the rotated face still fills the frame (reflection fills the rest).
    zoom = _translate(s / 2, s / 2) @ np.diag([1.06, 1.06, 1.0]) @ _translate(-s / 2, -s / 2)
    return zoom @ rotation @ perspective


# ----------------------------------------------------------------------------- layout


def _rows(n: int, widths: np.ndarray, gaps: np.ndarray, limit: float, rng: np.random.Generator) -> list[list[int]] | None:
    """Split n characters into rows (reading order) so that every row fits in `limit` px."""
    options = []
    for n_rows in (1, 2, 3):
        if n_rows > n:
            continue
        base = [n // n_rows + (1 if r < n % n_rows else 0) for r in range(n_rows)]
        rng.shuffle(base)
        rows, start = [], 0
        for count in base:
            rows.append(list(range(start, start + count)))
            start += count
        if all(widths[r].sum() + gaps[r[:-1]].sum() <= limit for r in rows):
            options.append(rows)
    if not options:
        return None
    # Two rows as a rule (the paper's billets), others for variety.
    weights = np.array([{1: 0.1, 2: 0.8, 3: 0.1}[len(o)] for o in options])
    return options[rng.choice(len(options), p=weights / weights.sum())]


def face_region(surface: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Where stamps may go: the billet's face (uint8 0/1 mask) and the background's colour (or None).

    Blank surfaces may show the face in front of a dark background (camera frames): the face is
    the convex hull of the largest bright region (Otsu on the blurred luminance), so dark scale on
    the face does not cut it. A surface without a clear dark surround is all face.
    """
    size = surface.shape[:2]
    grey = cv2.GaussianBlur(cv2.cvtColor(surface, cv2.COLOR_RGB2GRAY), (0, 0), 3)
    _, bright = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    whole = np.ones(size, np.uint8)
    if bright.all() or not bright.any():
        return whole, None
    if float(grey[bright > 0].mean()) - float(grey[bright == 0].mean()) < FACE_CONTRAST:
        return whole, None
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    points = cv2.findNonZero((labels == largest).astype(np.uint8))
    face = np.zeros(size, np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(points), 1)
    if face.mean() < FACE_MIN_SHARE or face.mean() > 0.97:
        return whole, None
    outside = surface[face == 0]
    return face, np.median(outside, axis=0).astype(np.float32) / 255.0


def layout(stamps: list[Stamp], rng: np.random.Generator, size_px: int, warp: np.ndarray,
           params: EmbedParams, face: np.ndarray | None = None) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Placements (3x3, crop px -> layout px) of the stamps as a billet ID in rows, and (row, column).

    The rows lie on the `face` (uint8 mask in surface pixels; default: the whole surface, less 5 %
    at the border), and every undegraded glyph lands inside the image after `warp`, at least
    BORDER_MARGIN_PX from its border.
    """
    if face is None:
        face = np.zeros((size_px, size_px), np.uint8)
        inset = int(0.05 * size_px)
        face[inset:size_px - inset, inset:size_px - inset] = 1
    scale_px = size_px / REFERENCE_SIZE_PX
    height = rng.uniform(*params.char_height_px) * scale_px
    n = len(stamps)
    for attempt in range(LAYOUT_TRIES * 3):
        if attempt and attempt % LAYOUT_TRIES == 0:
            height *= 0.85  # does not fit: smaller characters
        crop_h = np.array([s.whole_box[3] - s.whole_box[1] for s in stamps])
        crop_w = np.array([s.whole_box[2] - s.whole_box[0] for s in stamps])
        scales = height * rng.uniform(0.97, 1.03, n) / crop_h
        widths = crop_w * scales
        gaps = rng.uniform(*params.char_gap, n) * height
        rows = _rows(n, widths, gaps, 0.85 * size_px, rng)
        if rows is None:
            height *= 0.85
            continue
        row_pitch = height * (1 + rng.uniform(*params.row_gap))
        align = rng.choice(["left", "centre"])
        row_widths = [widths[r].sum() + gaps[r[:-1]].sum() for r in rows]
        centres = np.zeros((n, 2))
        cells = [(0, 0)] * n
        for ri, r in enumerate(rows):
            x = 0.0 if align == "left" else (max(row_widths) - row_widths[ri]) / 2
            x += rng.uniform(-0.1, 0.1) * height
            for ci, j in enumerate(r):
                centres[j] = (x + widths[j] / 2, ri * row_pitch + height / 2)
                cells[j] = (ri, ci)
                x += widths[j] + gaps[j]
        centres += rng.normal(0, params.char_jitter * height, size=(n, 2))
        block = np.array([max(row_widths), len(rows) * row_pitch - (row_pitch - height)])
        # The characters' box (padded by the jitter) must lie on the billet's face.
        pad = int(np.ceil(3 * params.char_jitter * height + 0.1 * height)) + 1
        kernel = np.ones((int(np.ceil(block[1])) + 2 * pad, int(np.ceil(block[0])) + 2 * pad), np.uint8)
        if kernel.shape[0] >= size_px or kernel.shape[1] >= size_px:
            continue
        valid = cv2.erode(face, kernel, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        ys, xs = np.nonzero(valid)
        if not len(ys):
            continue
        # Stamping machines strike near the middle of the face: favour block centres close to it.
        centres_xy = np.c_[xs, ys] + (kernel.shape[1] / 2, kernel.shape[0] / 2)
        face_centre = np.argwhere(face > 0).mean(axis=0)[::-1]
        spread = CENTRE_SPREAD * np.sqrt(face.sum())
        weight = np.exp(-0.5 * ((centres_xy - face_centre) ** 2).sum(axis=1) / spread ** 2)
        pick = rng.choice(len(ys), p=weight / weight.sum())
        origin = np.array([xs[pick], ys[pick]], np.float64) + pad + rng.uniform(0, 1, 2)
        placements = []
        for j, stamp in enumerate(stamps):
            x0, y0, x1, y1 = stamp.whole_box
            angle = np.deg2rad(rng.uniform(-params.char_rotation_deg, params.char_rotation_deg))
            c, s = np.cos(angle), np.sin(angle)
            place = (_translate(*(origin + centres[j])) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
                     @ np.diag([scales[j], scales[j], 1.0]) @ _translate(-(x0 + x1) / 2, -(y0 + y1) / 2))
            placements.append(place)
        inside = True
        for stamp, place in zip(stamps, placements):
            x0, y0, x1, y1 = stamp.whole_box
            corners = _apply(warp @ place, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
            if corners.min() < BORDER_MARGIN_PX or corners.max() > size_px - BORDER_MARGIN_PX:
                inside = False
                break
        if inside:
            return placements, cells
    raise RuntimeError(f"no layout of {n} characters fits a {size_px} px image; lower synth.embed.char_height_px")


# ----------------------------------------------------------------------------- partial visibility


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


# ----------------------------------------------------------------------------- pixels


def hsv_shift(rgb: np.ndarray, rng: np.random.Generator, params: EmbedParams) -> np.ndarray:
    """Random hue shift and saturation/value scaling of a stamp crop (float32 RGB 0..1)."""
    hsv = cv2.cvtColor(np.asarray(rgb, np.float32), cv2.COLOR_RGB2HSV)  # H in [0, 360)
    hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-params.hue_shift_deg, params.hue_shift_deg), 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*params.saturation_scale), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(*params.value_scale), 0, 1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)  # float32 0..1


def _crop_window(matrix: np.ndarray, crop_px: int, size_px: int, pad: int) -> tuple[int, int, int, int] | None:
    """The image pixels (x0, y0, x1, y1) a crop covers under `matrix`, widened by `pad`; None off the image."""
    s = float(crop_px)
    corners = _apply(matrix, np.array([[0, 0], [s, 0], [s, s], [0, s]]))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + pad
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size_px), min(y1, size_px)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def blend_stamp(canvas: np.ndarray, stamp: Stamp, matrix: np.ndarray, rng: np.random.Generator,
                params: EmbedParams, sigma_px: float) -> np.ndarray:
    """Blend one stamp into `canvas` (float32 RGB 0..1) through its warped, blurred mask.

    The mask keeps the counters open, so the surface shows through them (the renderer may have
    been given the silhouette, as the GAN is). With `match_surface` the crop's face colour (around
    the stamp) is first scaled to the surface's colour there, then the random HSV shift applies.
    `matrix` maps crop px to image px (COCO). Returns the warped mask as bool[H, W] (pixels at
    least half covered), whose box the annotation's must match.
    """
    size_px = canvas.shape[0]
    crop = stamp.image.shape[0]
    colour = stamp.image.astype(np.float32) / 255.0
    pad = int(np.ceil(3 * sigma_px)) + 2
    full = np.zeros(canvas.shape[:2], bool)
    window = _crop_window(matrix, crop, size_px, pad)
    if window is None:
        return full
    x0, y0, x1, y1 = window
    region = canvas[y0:y1, x0:x1]
    if params.match_surface:
        face = stamp.silhouette < 128
        crop_face = colour[face].mean(axis=0) if face.mean() > 0.1 else colour.reshape(-1, 3).mean(axis=0)
        gain = np.clip(region.reshape(-1, 3).mean(axis=0) / np.maximum(crop_face, 1 / 255), 0.25, 4.0)
        colour = np.clip(colour * gain, 0, 1)
    colour = hsv_shift(colour, rng, params)
    size = (x1 - x0, y1 - y0)
    to_window = _translate(-x0, -y0) @ matrix
    # Coverage of each image pixel by the mask, from a MASK_SUPERSAMPLE-times finer warp: a
    # plain bilinear warp of a shrinking mask loses thin stroke tips.
    k = MASK_SUPERSAMPLE
    fine = cv2.warpPerspective(stamp.mask, _cv(np.diag([k, k, 1.0]) @ to_window), (size[0] * k, size[1] * k),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    coverage = fine.reshape(size[1], k, size[0], k).mean(axis=(1, 3), dtype=np.float32) / 255.0
    # Shrink the colour crop with area averaging first, so its warp does not alias.
    factor = abs(np.linalg.det(matrix[:2, :2])) ** 0.5
    if factor < 0.9:
        small = max(int(round(crop * factor)), 4)
        colour = cv2.resize(colour, (small, small), interpolation=cv2.INTER_AREA)
        to_window = to_window @ np.diag([crop / small, crop / small, 1.0])
    warped = cv2.warpPerspective(colour, _cv(to_window), size, flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT_101)
    alpha = cv2.GaussianBlur(coverage, (0, 0), sigma_px) if sigma_px > 0 else coverage
    alpha = (alpha * rng.uniform(*params.opacity))[..., None]
    canvas[y0:y1, x0:x1] = region * (1 - alpha) + warped * alpha
    full[y0:y1, x0:x1] = coverage >= MASK_COVERAGE
    return full


def paint_occluder(canvas: np.ndarray, kind: str, polygon_px, texture: np.ndarray,
                   rng: np.random.Generator, background: np.ndarray | None = None) -> np.ndarray:
    """Paint an occluder (image px) over the canvas; returns where it hides, bool[H, W].

    An edge shows what lies beyond the face: the surface's `background` colour (RGB 0..1) when it
    has one, else a dark tone.
    """
    size_px = canvas.shape[0]
    clipped = _solid(polygon_px.intersection(box(0, 0, size_px, size_px)), 0.0)
    if clipped.is_empty:
        return np.zeros(canvas.shape[:2], bool)
    antialiased = rasterise(clipped, size_px, antialiased=True)
    coverage = antialiased.astype(np.float32) / 255.0
    # Hidden where the occluder covers more than half: a pixel the stamp and the occluder share
    # half and half stays the stamp's, as the visible outline's coverage (>= half) has it.
    hidden = antialiased > round(255 * MASK_COVERAGE)
    if kind == "edge":
        # Beyond the face: a dark, noisy background, and a bright chamfer along the edge.
        tone = background if background is not None else rng.uniform(0.04, 0.18) * rng.uniform(0.85, 1.15, 3)
        fill = (1 + 0.25 * rng.normal(size=canvas.shape[:2]))[..., None] * tone
        rim = cv2.GaussianBlur(coverage, (0, 0), max(1.0, size_px / 256)) * (1 - coverage)
        canvas[:] = canvas * (1 - rim[..., None] * 0.5) + rim[..., None] * 0.5 * rng.uniform(0.6, 0.9)
    else:
        # Scale or dirt: another surface's texture, much darker; grey-blue scale, sometimes rust.
        if rng.random() < 0.75:
            tint = np.array([0.9, 0.95, 1.05]) * rng.uniform(0.3, 0.6)
        else:
            tint = np.array([1.0, rng.uniform(0.6, 0.8), rng.uniform(0.4, 0.6)]) * rng.uniform(0.5, 0.8)
        fill = texture * tint * (1 + 0.1 * rng.normal(size=canvas.shape[:2]))[..., None]
    alpha = coverage[..., None]
    canvas[:] = canvas * (1 - alpha) + np.clip(fill, 0, 1) * alpha
    return hidden


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

    canvas = cv2.warpPerspective(surface, _cv(warp), (size_px, size_px), flags=cv2.INTER_LINEAR,
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
        outline = _solid(transform(visible, warp).intersection(frame))
        billet.characters.append(EmbeddedCharacter(
            label=stamp.label, outline=outline,
            visible_fraction=float(solid_area(visible) / whole_areas[j]) if not outline.is_empty else 0.0,
            mask=masks[j] & ~hidden, row=cells[j][0], column=cells[j][1],
            stamp=_solid(transform(solids[j], warp).intersection(frame), 0.0), hidden=hidden,
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
    clipped = _solid(outline.intersection(box(x0, y0, x1, y1)), 0.0)
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
