"""Immutable records produced by the scene generator.

Arrays inside these records are made read-only, and the classes compare by identity
(``eq=False``): compare fields explicitly, e.g. ``np.array_equal(a.image, b.image)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One shape in a scene.

    Attributes:
        colour: colour name, a key of ``COLOURS``.
        shape: shape name, one of ``SHAPES``.
        size_class: ``"small"`` or ``"large"`` (see ``SIZE_CLASSES``).
        center_xy: centre ``(x, y)`` in pixels, x to the right, y downwards, pixel ``[r, c]``
            centred at ``(c, r)``. For triangles this is the centroid.
        radius_px: shape radius in pixels (see :mod:`genmask_sdk.data.geometry`).
        area_px: visible area in pixels, i.e. ``mask.sum()``.
        mask: bool ``(H, W)``, the pixels where at least 50% of the pixel shows this object
            after occlusion by the objects drawn after it.
    """

    colour: str
    shape: str
    size_class: str
    center_xy: tuple[float, float]
    radius_px: float
    area_px: int
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class Expression:
    """A referring expression and its ground truth.

    Attributes:
        text: lower-case English phrase, e.g. ``"the star above the green circle"``.
        mask: bool ``(H, W)``, the visible pixels of the referred object (same array as
            ``scene.objects[target].mask``); all False for an absent target.
        kind: one of ``EXPRESSION_KINDS``, or ``ABSENT_KIND`` when nothing in the scene is
            referred to.
        target: index of the referred object in ``Scene.objects``; -1 for an absent target.
    """

    text: str
    mask: np.ndarray
    kind: str
    target: int


@dataclass(frozen=True, eq=False)
class Scene:
    """A rendered scene with its objects (in drawing order, back to front) and expressions.

    Attributes:
        image: uint8 ``(H, W, 3)`` RGB.
        objects: the shapes, index 0 drawn first (at the back).
        expressions: 0..4 referring expressions of objects in the scene (at least one in practically
            every scene), then in about 28 % of scenes one absent-target expression (``ABSENT_KIND``).
        seed, index: the arguments of ``generate_scene`` that reproduce this scene.
        background: background style, one of ``BACKGROUND_KINDS``.
    """

    image: np.ndarray
    objects: tuple[SceneObject, ...]
    expressions: tuple[Expression, ...]
    seed: int
    index: int
    background: str = "flat"


@dataclass(frozen=True, eq=False)
class CaptionedImage:
    """A text-to-image sample: uint8 ``(H, W, 3)`` RGB ``image`` and an English ``caption`` that
    names every shape in it, e.g. ``"a red circle and a small blue star on a gradient
    background"``."""

    image: np.ndarray
    caption: str


def read_only(array: np.ndarray) -> np.ndarray:
    """``array`` with its write flag cleared (returned for chaining)."""
    array.setflags(write=False)
    return array
