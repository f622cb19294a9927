"""Random scene layouts: which shapes, what colour and size, where, in which drawing order.

Layouts are sampled in pixel units of a ``size x size`` image (coordinates as in
:mod:`genmask_sdk.data.geometry`). Objects may overlap (later ones are drawn on top), but a
placement rule keeps every object's centre clear of the others, so occlusion stays partial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genmask_sdk.data.geometry import shape_extent, shape_outline
from genmask_sdk.data.vocabulary import COLOURS, SHAPES, SIZE_CLASSES

OBJECT_COUNTS = np.arange(1, 7)  # 1..6 shapes per scene
OBJECT_COUNT_WEIGHTS = np.array([0.08, 0.14, 0.20, 0.22, 0.20, 0.16])
LARGE_PROBABILITY = 0.4
MAX_ROTATION = 0.3  # radians (about 17 degrees): squares stay squares, not diamonds
COLOUR_JITTER = 14.0  # per-channel uniform jitter of the shape colour, in 0..255 units
PLACEMENT_TRIES = 40
# Two centres must be >= LARGER_EXTENT_SHARE * larger extent + SMALLER_EXTENT_SHARE * smaller
# extent apart: shapes may overlap, but neither centre lies deep inside the other shape.
LARGER_EXTENT_SHARE = 0.8
SMALLER_EXTENT_SHARE = 0.2
_COLOUR_NAMES = tuple(COLOURS)


@dataclass(frozen=True)
class PlacedShape:
    """One shape of a layout, before rendering.

    ``center_xy`` and ``radius_px`` are in pixels, ``rotation`` in radians (clockwise on screen),
    ``rgb`` is the jittered fill colour as float ``(r, g, b)`` in ``[0, 255]``.
    """

    shape: str
    colour: str
    size_class: str
    center_xy: tuple[float, float]
    radius_px: float
    rotation: float
    rgb: tuple[float, float, float]

    @property
    def extent_px(self) -> float:
        """Largest distance in pixels from the centre to the shape's outline."""
        return shape_extent(self.shape, self.radius_px)

    def outline(self) -> np.ndarray:
        """Outline vertices, float64 ``(n, 2)`` of ``(x, y)`` pixel coordinates."""
        return shape_outline(self.shape, self.center_xy, self.radius_px, self.rotation)


def _sample_appearance(rng: np.random.Generator, size: int) -> dict:
    """Shape, colour, size class, radius (pixels), rotation and jittered RGB of one object."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = _COLOUR_NAMES[rng.integers(len(_COLOUR_NAMES))]
    size_class = "large" if rng.random() < LARGE_PROBABILITY else "small"
    radius_px = rng.uniform(*SIZE_CLASSES[size_class]) * size
    rotation = 0.0 if shape == "circle" else rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
    rgb = tuple(np.clip(np.add(COLOURS[colour], jitter), 0.0, 255.0).tolist())
    return dict(shape=shape, colour=colour, size_class=size_class, radius_px=radius_px,
                rotation=rotation, rgb=rgb)


def _far_enough(center: np.ndarray, extent: float, placed: list[PlacedShape]) -> bool:
    """True when a shape of ``extent`` pixels at ``center`` keeps its distance from every placed
    shape (see LARGER_EXTENT_SHARE)."""
    for other in placed:
        big, small = max(extent, other.extent_px), min(extent, other.extent_px)
        gap = LARGER_EXTENT_SHARE * big + SMALLER_EXTENT_SHARE * small
        if np.hypot(*(center - other.center_xy)) < gap:
            return False
    return True


def _sample_centre(rng: np.random.Generator, size: int, extent: float, placed: list[PlacedShape]):
    """A centre ``(x, y)`` keeping the whole shape inside the image and clear of ``placed``, or
    None when ``PLACEMENT_TRIES`` random tries all fail."""
    low, high = extent + 0.5, size - 1.5 - extent
    for _ in range(PLACEMENT_TRIES):
        center = rng.uniform(low, high, size=2)
        if _far_enough(center, extent, placed):
            return center
    return None


def sample_layout(rng: np.random.Generator, size: int) -> list[PlacedShape]:
    """1..6 shapes in drawing order (index 0 is drawn first, i.e. at the back).

    Objects that cannot be placed are dropped, so a layout may hold fewer shapes than sampled,
    but always at least one (the first object goes on an empty canvas).
    """
    placed: list[PlacedShape] = []
    for _ in range(rng.choice(OBJECT_COUNTS, p=OBJECT_COUNT_WEIGHTS)):
        appearance = _sample_appearance(rng, size)
        extent = shape_extent(appearance["shape"], appearance["radius_px"])
        center = _sample_centre(rng, size, extent, placed)
        if center is not None:
            placed.append(PlacedShape(center_xy=(float(center[0]), float(center[1])), **appearance))
    return placed
