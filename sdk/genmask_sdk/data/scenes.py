"""Deterministic procedural scenes for referring segmentation, and a dataset over them.

``generate_scene(seed, index, size)`` draws everything from ``np.random.default_rng([seed,
index])``, so a scene depends only on its arguments, never on call order or on other scenes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from genmask_sdk.data.expressions import referring_expressions
from genmask_sdk.data.geometry import shape_area
from genmask_sdk.data.layout import PlacedShape, sample_layout
from genmask_sdk.data.records import Scene, SceneObject, read_only
from genmask_sdk.data.rendering import (
    MASK_THRESHOLD,
    full_coverage,
    paint,
    polygon_coverage,
    render_background,
    to_uint8,
    visible_coverages,
)
from genmask_sdk.data.vocabulary import BACKGROUND_KINDS
from genmask_sdk.errors import InputTypeError, InvalidInputError

MIN_SIZE = 32
MIN_KEPT_FRACTION = 0.35  # objects showing less of themselves than this are left out entirely


@dataclass(frozen=True, eq=False)
class RenderedLayers:
    """Intermediate result shared by scenes and captioned images.

    ``image`` is uint8 ``(size, size, 3)``; ``shapes`` are in drawing order; ``masks[i]`` is the
    bool ``(size, size)`` visible mask of ``shapes[i]``.
    """

    image: np.ndarray
    background: str
    shapes: tuple[PlacedShape, ...]
    masks: tuple[np.ndarray, ...]


def check_scene_arguments(seed: int, index: int, size: int) -> None:
    """Raise InputTypeError / InvalidInputError unless seed, index >= 0 and size >= MIN_SIZE are
    integers."""
    for name, value, minimum in (("seed", seed, 0), ("index", index, 0), ("size", size, MIN_SIZE)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputTypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < minimum:
            raise InvalidInputError(f"{name} must be >= {minimum}, got {value}")


def scene_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator that drives scene ``(seed, index)``: ``default_rng([seed, index])`` for
    referring scenes (``stream`` 0); other streams (1: captioned images) append ``stream``."""
    key = [int(seed), int(index)] + ([int(stream)] if stream else [])
    return np.random.default_rng(key)


def _visible_fractions(shapes: list[PlacedShape], visible: list[np.ndarray]) -> np.ndarray:
    """Visible pixel count (mask at 50%) over analytic full area, per shape; float64 ``(n,)``."""
    counts = np.array([np.count_nonzero(v >= MASK_THRESHOLD) for v in visible], dtype=np.float64)
    full = np.array([shape_area(s.shape, s.radius_px) for s in shapes])
    return counts / full


def _drop_hidden_shapes(shapes: list[PlacedShape], coverages: list, size: int):
    """Remove, one at a time, the most hidden shape while any shows < MIN_KEPT_FRACTION of itself.

    ``coverages`` are ``(box, coverage)`` pairs from ``polygon_coverage``. Returns the kept
    shapes, their pairs, and their visible coverage maps (float32 ``(size, size)`` each).
    """
    shapes, coverages = list(shapes), list(coverages)
    while True:
        visible = visible_coverages([full_coverage(box, cov, size) for box, cov in coverages])
        fractions = _visible_fractions(shapes, visible)
        if not len(shapes) or fractions.min() >= MIN_KEPT_FRACTION:
            return shapes, coverages, visible
        worst = int(fractions.argmin())
        del shapes[worst], coverages[worst]


def render_layers(rng: np.random.Generator, size: int) -> RenderedLayers:
    """Sample a background and a layout from ``rng`` and rasterise them (anti-aliased, with
    occlusion in drawing order)."""
    background_kind = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    image = render_background(rng, background_kind, size)
    shapes = sample_layout(rng, size)
    coverages = [polygon_coverage(shape.outline(), size) for shape in shapes]
    shapes, coverages, visible = _drop_hidden_shapes(shapes, coverages, size)
    for shape, (box, coverage) in zip(shapes, coverages):
        paint(image, box, coverage, np.asarray(shape.rgb))
    masks = tuple(read_only(v >= MASK_THRESHOLD) for v in visible)
    return RenderedLayers(read_only(to_uint8(image)), background_kind, tuple(shapes), masks)


def _scene_object(shape: PlacedShape, mask: np.ndarray) -> SceneObject:
    return SceneObject(colour=shape.colour, shape=shape.shape, size_class=shape.size_class,
                       center_xy=shape.center_xy, radius_px=shape.radius_px,
                       area_px=int(np.count_nonzero(mask)), mask=mask)


def generate_scene(seed: int, index: int = 0, size: int = 128) -> Scene:
    """Scene number ``index`` of the family ``seed``, rendered at ``size x size``.

    Returns a :class:`Scene` with a uint8 ``(size, size, 3)`` RGB image, 1..6 objects and up to
    four referring expressions. Identical arguments give identical scenes.
    """
    check_scene_arguments(seed, index, size)
    rng = scene_rng(seed, index)
    layers = render_layers(rng, size)
    objects = tuple(_scene_object(s, m) for s, m in zip(layers.shapes, layers.masks))
    expressions = tuple(referring_expressions(rng, objects, size))
    return Scene(layers.image, objects, expressions, int(seed), int(index), layers.background)


class ReferringDataset:
    """``n_scenes`` scenes ``generate_scene(seed, i, size)`` for ``i`` in ``range(n_scenes)``,
    generated on access (nothing is cached)."""

    def __init__(self, seed: int, n_scenes: int, size: int = 128):
        check_scene_arguments(seed, 0, size)
        if isinstance(n_scenes, bool) or not isinstance(n_scenes, (int, np.integer)) or n_scenes < 0:
            raise InvalidInputError(f"n_scenes must be an int >= 0, got {n_scenes!r}")
        self.seed, self.n_scenes, self.size = int(seed), int(n_scenes), int(size)

    def __len__(self) -> int:
        return self.n_scenes

    def __getitem__(self, i: int) -> Scene:
        if not -self.n_scenes <= i < self.n_scenes:
            raise IndexError(f"scene index {i} out of range for {self.n_scenes} scenes")
        return generate_scene(self.seed, i % self.n_scenes, self.size)

    def __iter__(self) -> Iterator[Scene]:
        return (self[i] for i in range(self.n_scenes))

    def iter_samples(self) -> Iterator[tuple[np.ndarray, str, np.ndarray, str]]:
        """Every expression of every scene as ``(image, text, mask, kind)``: uint8
        ``(size, size, 3)`` RGB, str, bool ``(size, size)``, one of ``EXPRESSION_KINDS``."""
        for scene in self:
            for expression in scene.expressions:
                yield scene.image, expression.text, expression.mask, expression.kind
