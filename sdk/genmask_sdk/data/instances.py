"""Procedural *instance* scenes for gen2seg: every shape's visible mask, from a seed.

Same style as the referring scenes (:mod:`genmask_sdk.data.scenes`): the same palette, shapes,
backgrounds (every kind), anti-aliasing, pixel noise and occlusion rule. What differs:

* 1..``MAX_OBJECTS`` (8) shapes per scene, uniform count;
* radii drawn log-uniformly in ``RADIUS_RANGE`` (5 %..24 % of the image side), so the sizes span
  small objects (about 130 px at 128²) to large ones (about 3000 px);
* every kept shape is an instance: its *visible* mask after occlusion (an occluded shape keeps
  what shows of it; shapes showing less than ``MIN_KEPT_FRACTION`` of themselves are not drawn
  at all, as in the referring scenes).

``generate_instance_scene(seed, index, size)`` draws everything from
``scene_rng(seed, index, INSTANCE_STREAM)``, so a scene depends only on its arguments, and no
instance scene equals a referring scene (another random stream). Training uses seeds in
``TRAIN_SEEDS``, evaluation ``HELD_OUT_SEED`` (outside that range).

Size classes of an instance (by *visible* area as a fraction of the image area, so they do not
depend on the resolution): ``small`` < 2 %, ``medium`` 2 %..6 %, ``large`` >= 6 %
(at 128²: < 328 px, 328..982 px, >= 983 px).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from genmask_sdk.data.geometry import shape_extent
from genmask_sdk.data.layout import COLOUR_JITTER, MAX_ROTATION, PlacedShape, _sample_centre
from genmask_sdk.data.records import SceneObject, read_only
from genmask_sdk.data.rendering import MASK_THRESHOLD, paint, polygon_coverage, render_background, to_uint8
from genmask_sdk.data.scenes import _drop_hidden_shapes, check_scene_arguments, scene_rng
from genmask_sdk.data.vocabulary import BACKGROUND_KINDS, COLOURS, SHAPES
from genmask_sdk.errors import InvalidInputError

MAX_OBJECTS = 8
RADIUS_RANGE = (0.05, 0.24)  # shape radius as a fraction of the image side, sampled log-uniformly
INSTANCE_STREAM = 2  # random stream of scene_rng (0: referring scenes, 1: captioned images)
TRAIN_SEEDS = range(0, 10_000)  # seeds training may use
HELD_OUT_SEED = 10_000  # the evaluation seed, outside TRAIN_SEEDS
#: Size classes by visible area fraction of the image: (name, lower bound inclusive).
SIZE_THRESHOLDS: tuple[tuple[str, float], ...] = (("small", 0.0), ("medium", 0.02), ("large", 0.06))
INSTANCE_SIZE_CLASSES: tuple[str, ...] = tuple(name for name, _ in SIZE_THRESHOLDS)
_COLOUR_NAMES = tuple(COLOURS)


@dataclass(frozen=True, eq=False)
class InstanceScene:
    """A rendered instance scene.

    Attributes:
        image: uint8 ``(H, W, 3)`` RGB.
        instance_ids: uint8 ``(H, W)``: 0 = background, ``i + 1`` = ``objects[i]`` (drawing order,
            back to front). ``instance_ids == i + 1`` equals ``objects[i].mask``.
        objects: the instances; ``SceneObject.size_class`` is the *area* class of this module
            (``small`` / ``medium`` / ``large``), ``mask`` the visible mask (bool ``(H, W)``).
        seed, index: the arguments of ``generate_instance_scene`` that reproduce the scene.
        background: one of ``BACKGROUND_KINDS``.
    """

    image: np.ndarray
    instance_ids: np.ndarray
    objects: tuple[SceneObject, ...]
    seed: int
    index: int
    background: str

    @property
    def masks(self) -> tuple[np.ndarray, ...]:
        """Visible masks, bool ``(H, W)`` each, disjoint, in drawing order."""
        return tuple(o.mask for o in self.objects)


def size_class_of(area_px: int, image_area: int) -> str:
    """``small`` / ``medium`` / ``large`` for a visible area of ``area_px`` pixels (see module docs)."""
    fraction = area_px / float(image_area)
    name = SIZE_THRESHOLDS[0][0]
    for candidate, low in SIZE_THRESHOLDS:
        if fraction >= low:
            name = candidate
    return name


def _appearance(rng: np.random.Generator, size: int) -> dict:
    """Shape, colour, radius (pixels, log-uniform in ``RADIUS_RANGE``), rotation and jittered RGB
    (as ``layout._sample_appearance``, but with a continuous radius)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = _COLOUR_NAMES[rng.integers(len(_COLOUR_NAMES))]
    low, high = np.log(RADIUS_RANGE[0]), np.log(RADIUS_RANGE[1])
    radius_px = float(np.exp(rng.uniform(low, high))) * size
    rotation = 0.0 if shape == "circle" else rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=3)
    rgb = tuple(np.clip(np.add(COLOURS[colour], jitter), 0.0, 255.0).tolist())
    return dict(shape=shape, colour=colour, size_class="", radius_px=radius_px, rotation=rotation, rgb=rgb)


def sample_instance_layout(rng: np.random.Generator, size: int, max_objects: int = MAX_OBJECTS) -> list[PlacedShape]:
    """1..``max_objects`` shapes (uniform count) in drawing order, placed by the referring scenes'
    rule (``layout._sample_centre``); shapes that cannot be placed are dropped (at least one stays)."""
    placed: list[PlacedShape] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        appearance = _appearance(rng, size)
        extent = shape_extent(appearance["shape"], appearance["radius_px"])
        center = _sample_centre(rng, size, extent, placed)
        if center is not None:
            placed.append(PlacedShape(center_xy=(float(center[0]), float(center[1])), **appearance))
    return placed


def generate_instance_scene(seed: int, index: int = 0, size: int = 128,
                            max_objects: int = MAX_OBJECTS) -> InstanceScene:
    """Instance scene number ``index`` of the family ``seed`` at ``size x size`` (deterministic)."""
    check_scene_arguments(seed, index, size)
    if isinstance(max_objects, bool) or not isinstance(max_objects, (int, np.integer)) or not 1 <= max_objects <= 254:
        raise InvalidInputError(f"max_objects must be an int in [1, 254], got {max_objects!r}")
    rng = scene_rng(seed, index, INSTANCE_STREAM)
    background = BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    image = render_background(rng, background, size)
    shapes = sample_instance_layout(rng, size, int(max_objects))
    coverages = [polygon_coverage(shape.outline(), size) for shape in shapes]
    shapes, coverages, visible = _drop_hidden_shapes(shapes, coverages, size)
    for shape, (box, coverage) in zip(shapes, coverages):
        paint(image, box, coverage, np.asarray(shape.rgb))
    ids = np.zeros((size, size), dtype=np.uint8)
    objects = []
    for number, (shape, share) in enumerate(zip(shapes, visible), start=1):
        mask = share >= MASK_THRESHOLD
        ids[mask] = number
        area = int(np.count_nonzero(mask))
        objects.append(SceneObject(colour=shape.colour, shape=shape.shape, size_class=size_class_of(area, size * size),
                                   center_xy=shape.center_xy, radius_px=shape.radius_px, area_px=area,
                                   mask=read_only(mask)))
    return InstanceScene(read_only(to_uint8(image)), read_only(ids), tuple(objects), int(seed), int(index), background)


class InstanceDataset:
    """``n_scenes`` scenes ``generate_instance_scene(seed, i, size)``, ``i`` in ``range(n_scenes)``,
    generated on access (nothing is cached)."""

    def __init__(self, seed: int, n_scenes: int, size: int = 128, max_objects: int = MAX_OBJECTS):
        check_scene_arguments(seed, 0, size)
        if isinstance(n_scenes, bool) or not isinstance(n_scenes, (int, np.integer)) or n_scenes < 0:
            raise InvalidInputError(f"n_scenes must be an int >= 0, got {n_scenes!r}")
        self.seed, self.n_scenes, self.size, self.max_objects = int(seed), int(n_scenes), int(size), int(max_objects)

    def __len__(self) -> int:
        return self.n_scenes

    def __getitem__(self, i: int) -> InstanceScene:
        if not -self.n_scenes <= i < self.n_scenes:
            raise IndexError(f"scene index {i} out of range for {self.n_scenes} scenes")
        return generate_instance_scene(self.seed, i % self.n_scenes, self.size, self.max_objects)

    def __iter__(self) -> Iterator[InstanceScene]:
        return (self[i] for i in range(self.n_scenes))


def held_out_instance_scenes(n_scenes: int = 500, size: int = 128, seed: int = HELD_OUT_SEED) -> InstanceDataset:
    """The evaluation split: scenes of a seed outside ``TRAIN_SEEDS``."""
    if seed in TRAIN_SEEDS:
        raise InvalidInputError(f"held-out seed {seed} lies in the training range {TRAIN_SEEDS}")
    return InstanceDataset(seed, n_scenes, size)
