"""Where an embedded billet's stamps go: the surface's warp, the billet's face on the surface, and
the billet ID laid out in rows on it (placements in layout coordinates, before the warp)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from billetjax.synth.geometry import apply_homography, translation

if TYPE_CHECKING:
    from billetjax.synth.embed import EmbedParams, Stamp

# Character heights are given for 256 px images and scale with the image size.
REFERENCE_SIZE_PX = 256
# Layout attempts before the characters are made smaller.
LAYOUT_TRIES = 40
# Margin (px) between a well-visible character and the image border.
BORDER_MARGIN_PX = 2.0
# A surface is face in front of a background when Otsu's two classes differ by this many grey
# levels and the face covers at least this share of the image.
FACE_CONTRAST = 25.0
FACE_MIN_SHARE = 0.15
# Spread of the billet ID's position around the face's centre, in face sizes (sqrt of its area).
CENTRE_SPREAD = 0.2


def surface_warp(rng: np.random.Generator, size_px: int, params: EmbedParams) -> np.ndarray:
    """A random homography: rotation about the centre and a slight perspective (corner moves)."""
    s = float(size_px)
    corners = np.array([[0, 0], [s, 0], [s, s], [0, s]], np.float32)
    moved = corners + rng.uniform(-1, 1, size=(4, 2)).astype(np.float32) * params.surface_perspective * s
    perspective = cv2.getPerspectiveTransform(corners, moved.astype(np.float32)).astype(np.float64)
    angle = np.deg2rad(rng.uniform(-params.surface_rotation_deg, params.surface_rotation_deg))
    c, si = np.cos(angle), np.sin(angle)
    rotation = translation(s / 2, s / 2) @ np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]]) @ translation(-s / 2, -s / 2)
    # Zoom in a little so the rotated face still fills the frame (reflection fills the rest).
    zoom = translation(s / 2, s / 2) @ np.diag([1.06, 1.06, 1.0]) @ translation(-s / 2, -s / 2)
    return zoom @ rotation @ perspective


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
            place = (translation(*(origin + centres[j])) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
                     @ np.diag([scales[j], scales[j], 1.0]) @ translation(-(x0 + x1) / 2, -(y0 + y1) / 2))
            placements.append(place)
        inside = True
        for stamp, place in zip(stamps, placements):
            x0, y0, x1, y1 = stamp.whole_box
            corners = apply_homography(warp @ place, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
            if corners.min() < BORDER_MARGIN_PX or corners.max() > size_px - BORDER_MARGIN_PX:
                inside = False
                break
        if inside:
            return placements, cells
    raise RuntimeError(f"no layout of {n} characters fits a {size_px} px image; lower synth.embed.char_height_px")
