"""Exact geometry of the four shapes: outlines, analytic areas and extents.

Coordinate convention (shared by the whole ``genmask_sdk.data`` package): continuous pixel
coordinates ``(x, y)`` with x growing to the right and y growing downwards; the centre of the
pixel at row ``r``, column ``c`` is ``(x=c, y=r)``, so an ``H x W`` image covers
``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.

A shape is defined by its *radius* ``r`` (pixels), chosen so that shapes of equal radius look
about equally big:

* circle: radius ``r``;
* square: half-side ``0.85 r`` (axis-aligned before rotation);
* triangle: equilateral, circumradius ``1.15 r``, apex up before rotation, centroid at the centre;
* star: five points, outer radius ``1.2 r``, inner radius ``0.6 r``, top point up before rotation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

CIRCLE_SEGMENTS = 64  # the circle outline is a regular 64-gon (area within 0.2% of pi r^2)
SQUARE_HALF_SIDE = 0.85
TRIANGLE_CIRCUMRADIUS = 1.15
STAR_OUTER = 1.2
STAR_INNER = 0.6


def _regular_polygon(n: int, circumradius: float, phase: float) -> np.ndarray:
    """Vertices ``(n, 2)`` float64 of a regular n-gon centred at the origin, first vertex at angle
    ``phase`` (radians, measured from the +x axis towards +y, i.e. clockwise on screen)."""
    angles = phase + 2.0 * math.pi * np.arange(n) / n
    return circumradius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star_outline(outer: float, inner: float) -> np.ndarray:
    """Vertices ``(10, 2)`` float64 of a five-pointed star centred at the origin, top point up."""
    radii = np.where(np.arange(10) % 2 == 0, outer, inner)
    angles = -math.pi / 2 + math.pi * np.arange(10) / 5
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


@lru_cache(maxsize=None)
def unit_outline(shape: str) -> np.ndarray:
    """Outline ``(n, 2)`` float64 (read-only) of ``shape`` with radius 1, centred at the origin,
    unrotated."""
    if shape == "circle":
        outline = _regular_polygon(CIRCLE_SEGMENTS, 1.0, 0.0)
    elif shape == "square":
        outline = _regular_polygon(4, SQUARE_HALF_SIDE * math.sqrt(2.0), math.pi / 4)
    elif shape == "triangle":
        outline = _regular_polygon(3, TRIANGLE_CIRCUMRADIUS, -math.pi / 2)
    elif shape == "star":
        outline = _star_outline(STAR_OUTER, STAR_INNER)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    outline.setflags(write=False)
    return outline


def shape_outline(
    shape: str, center_xy: tuple[float, float], radius: float, rotation: float = 0.0
) -> np.ndarray:
    """Outline ``(n, 2)`` float64 of ``shape`` in pixel coordinates ``(x, y)``.

    ``radius`` is in pixels, ``rotation`` in radians (clockwise on screen, since y points down).
    """
    cos, sin = math.cos(rotation), math.sin(rotation)
    rotated = unit_outline(shape) @ np.array([[cos, sin], [-sin, cos]])
    return rotated * radius + np.asarray(center_xy, dtype=np.float64)


def shape_area(shape: str, radius: float) -> float:
    """Analytic area in square pixels of an unoccluded ``shape`` of ``radius`` pixels."""
    if shape == "circle":
        return math.pi * radius**2
    if shape == "square":
        return (2.0 * SQUARE_HALF_SIDE * radius) ** 2
    if shape == "triangle":
        return 3.0 * math.sqrt(3.0) / 4.0 * (TRIANGLE_CIRCUMRADIUS * radius) ** 2
    if shape == "star":  # ten triangles (centre, outer point, inner point) with a 36 degree angle
        return 5.0 * STAR_OUTER * STAR_INNER * radius**2 * math.sin(math.pi / 5)
    raise ValueError(f"unknown shape {shape!r}")


@lru_cache(maxsize=None)
def _unit_extent(shape: str) -> float:
    return float(np.hypot(*unit_outline(shape).T).max())


def shape_extent(shape: str, radius: float) -> float:
    """Largest distance in pixels from the centre to any point of ``shape`` (any rotation)."""
    return _unit_extent(shape) * radius
