"""The pixels of an embedded billet: a stamp's colours shifted and blended into the surface through
its warped, blurred mask, and occluders painted over them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from shapely.geometry import box

from billetjax.glyphs import rasterise
from billetjax.synth.geometry import apply_homography, opencv_homography, solid, translation

if TYPE_CHECKING:
    from billetjax.synth.embed import EmbedParams, Stamp

# A pixel belongs to a stamp's warped mask when the silhouette covers at least this share of it,
# measured on a grid this much finer than the image.
MASK_COVERAGE = 0.5
MASK_SUPERSAMPLE = 4


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
    corners = apply_homography(matrix, np.array([[0, 0], [s, 0], [s, s], [0, s]]))
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
    to_window = translation(-x0, -y0) @ matrix
    # Coverage of each image pixel by the mask, from a MASK_SUPERSAMPLE-times finer warp: a
    # plain bilinear warp of a shrinking mask loses thin stroke tips.
    k = MASK_SUPERSAMPLE
    fine = cv2.warpPerspective(stamp.mask, opencv_homography(np.diag([k, k, 1.0]) @ to_window), (size[0] * k, size[1] * k),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    coverage = fine.reshape(size[1], k, size[0], k).mean(axis=(1, 3), dtype=np.float32) / 255.0
    # Shrink the colour crop with area averaging first, so its warp does not alias.
    factor = abs(np.linalg.det(matrix[:2, :2])) ** 0.5
    if factor < 0.9:
        small = max(int(round(crop * factor)), 4)
        colour = cv2.resize(colour, (small, small), interpolation=cv2.INTER_AREA)
        to_window = to_window @ np.diag([crop / small, crop / small, 1.0])
    warped = cv2.warpPerspective(colour, opencv_homography(to_window), size, flags=cv2.INTER_LINEAR,
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
    clipped = solid(polygon_px.intersection(box(0, 0, size_px, size_px)), 0.0)
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
