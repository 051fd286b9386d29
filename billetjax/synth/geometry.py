"""Homographies in COCO coordinates, and the geometry they carry from layout to image pixels.

Coordinates follow COCO (pixel (r, c) covers [c, c+1) x [r, r+1)); OpenCV's warps put pixel
centres on integers, which `opencv_homography` converts.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from billetjax.synth.masks import polygons

# Visible parts smaller than this (px²) are not annotated: they do not show in the mask either.
MIN_PART_AREA_PX = 1.0


def translation(dx: float, dy: float) -> np.ndarray:
    """The 3x3 homography that shifts by (dx, dy)."""
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def opencv_homography(matrix: np.ndarray) -> np.ndarray:
    """A COCO-coordinate homography as OpenCV wants it (pixel centres on integers)."""
    return translation(-0.5, -0.5) @ matrix @ translation(0.5, 0.5)


def apply_homography(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points float[N, 2] through a homography."""
    pts = np.asarray(points, np.float64)
    moved = np.c_[pts, np.ones(len(pts))] @ matrix.T
    return moved[:, :2] / moved[:, 2:3]


def transform(geometry, matrix: np.ndarray):
    """A geometry through a homography (straight edges stay straight, so this is exact)."""
    if geometry.is_empty:
        return geometry
    return shapely.transform(geometry, lambda xy: apply_homography(matrix, xy))


def solid(geometry, min_area: float = MIN_PART_AREA_PX):
    """Valid polygonal geometry without slivers below `min_area`."""
    geometry = shapely.make_valid(geometry)
    parts = [p for p in polygons(geometry) if p.area >= min_area]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)
