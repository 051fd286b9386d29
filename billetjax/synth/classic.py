"""The non-learned baseline: stamps rendered as a shaded height field (beyond the paper, its §4).

A mask becomes a punched depression: depth grows from the rim over a bevel (a distance transform
through a smooth step), the floor is rough, and a directional light shades the surface normals
(Lambert plus a little specular). Colour comes from a random steel/oxide tint and fine texture, so
the same masks and embedding as the GAN path can be compared with a renderer that learned nothing.
Written for the synthesis stage; it shares no code with the billet renderer of the data stage.
"""

from __future__ import annotations

import cv2
import numpy as np

# Steel and oxide tints (RGB, 0..1) that a stamp's colour is drawn around.
TINTS = np.array([
    [0.55, 0.55, 0.57],   # bright steel
    [0.42, 0.43, 0.47],   # dark steel, bluish
    [0.50, 0.42, 0.36],   # brownish oxide
    [0.58, 0.47, 0.38],   # light rust
])


def _blurred_noise(rng: np.random.Generator, size: int, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std noise smoothed over about `scale_px`."""
    noise = cv2.GaussianBlur(rng.normal(size=(size, size)).astype(np.float32), (0, 0), max(scale_px, 0.3))
    return noise / max(float(noise.std()), 1e-6)


def height_field(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Depth map (0 at the surface, negative inside) of one punched stamp, float32[S, S]."""
    size = mask.shape[0]
    inside = (mask > 127).astype(np.uint8)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 3).astype(np.float32)
    bevel_px = size * rng.uniform(0.03, 0.06)
    t = np.clip(distance / bevel_px, 0, 1)
    profile = t * t * (3 - 2 * t)  # smooth step: a rounded wall from rim to floor
    depth = size * rng.uniform(0.04, 0.08)
    floor = 1 + 0.15 * _blurred_noise(rng, size, size * 0.05)
    surface = 0.003 * size * _blurred_noise(rng, size, size * 0.04)  # the face is not flat either
    height = -depth * profile * floor + surface
    # A slight raised burr where the punch pushed metal aside.
    rim = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), bevel_px) * (1 - inside)
    return (height + 0.3 * depth * rim).astype(np.float32)


def shade(height: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lambert + specular shading of a height field under a random directional light, float32[S, S]."""
    gy, gx = np.gradient(height)
    normal = np.stack([-gx, -gy, np.ones_like(height)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    # Light mostly from above-left as on a camera rig, but not always.
    azimuth = rng.normal(np.deg2rad(225), np.deg2rad(50))
    elevation = np.deg2rad(rng.uniform(30, 60))
    light = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation), np.sin(elevation)])
    lambert = np.clip(normal @ light, 0, None)
    halfway = light + np.array([0.0, 0.0, 1.0])
    halfway /= np.linalg.norm(halfway)
    specular = np.clip(normal @ halfway, 0, None) ** rng.uniform(10, 30)
    flat = light[2]  # what the undisturbed face receives
    ambient = rng.uniform(0.25, 0.45)
    return ((ambient + (1 - ambient) * lambert / flat) + rng.uniform(0.0, 0.3) * specular).astype(np.float32)


def render_classic_one(mask: np.ndarray, seed: int) -> np.ndarray:
    """One stamp crop, uint8[S, S, 3] RGB, rendered from its mask (uint8[S, S], 0/255)."""
    rng = np.random.default_rng(seed)
    size = mask.shape[0]
    height = height_field(mask, rng)
    light = shade(height, rng)
    tint = TINTS[rng.integers(len(TINTS))] * rng.uniform(0.85, 1.15) + rng.normal(0, 0.01, 3)
    # Oxide and soot collect in the punched floor: darker, a little warmer.
    inside = cv2.GaussianBlur((mask > 127).astype(np.float32), (0, 0), size * 0.02)
    floor_tint = tint * rng.uniform(0.6, 0.9) * np.array([1.05, 1.0, 0.95])
    colour = tint * (1 - inside[..., None]) + floor_tint * inside[..., None]
    texture = (1 + 0.06 * _blurred_noise(rng, size, 0.7)[..., None]
               + 0.05 * _blurred_noise(rng, size, size * 0.1)[..., None])
    rgb = colour * light[..., None] * texture
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def render_classic(masks: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Render masks uint8[N, S, S] (0/255) with one seed each into uint8[N, S, S, 3] RGB stamps."""
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"expected masks uint8[N, S, S], got {masks.dtype}{list(masks.shape)}")
    if len(seeds) != len(masks):
        raise ValueError(f"{len(seeds)} seeds for {len(masks)} masks")
    out = np.empty(masks.shape + (3,), np.uint8)
    for i, (mask, seed) in enumerate(zip(masks, seeds)):
        out[i] = render_classic_one(mask, int(seed))
    return out
