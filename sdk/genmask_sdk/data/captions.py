"""Captioned images for text-to-image training: every shape is named in the caption."""

from __future__ import annotations

import numpy as np

from genmask_sdk.data.layout import PlacedShape
from genmask_sdk.data.records import CaptionedImage
from genmask_sdk.data.scenes import check_scene_arguments, render_layers, scene_rng

CAPTION_STREAM = 1  # rng stream of captioned images (independent of the referring scenes)
SIZE_WORD_PROBABILITY = 0.5
BACKGROUND_PHRASES = {
    "flat": "a plain background",
    "gradient": "a gradient background",
    "noise": "a cloudy background",
    "stripes": "a striped background",
    "checker": "a checkered background",
}


def shape_phrase(shape: PlacedShape, with_size: bool) -> str:
    """``"a [small|large] red circle"`` for one shape."""
    words = [shape.size_class] if with_size else []
    return " ".join(["a", *words, shape.colour, shape.shape])


def join_phrases(phrases: list[str]) -> str:
    """``"x"``, ``"x and y"``, ``"x, y and z"``."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def compose_caption(
    rng: np.random.Generator, shapes: tuple[PlacedShape, ...], background: str
) -> str:
    """Caption naming every shape (colour and shape always, size class half of the time, shapes in
    random order) and the background style."""
    with_size = rng.random(len(shapes)) < SIZE_WORD_PROBABILITY
    phrases = [shape_phrase(shapes[i], bool(with_size[i])) for i in rng.permutation(len(shapes))]
    return f"{join_phrases(phrases)} on {BACKGROUND_PHRASES[background]}"


def generate_captioned_image(seed: int, index: int, size: int = 128) -> CaptionedImage:
    """Captioned sample ``index`` of family ``seed``: uint8 ``(size, size, 3)`` RGB image with
    1..6 shapes and a caption such as ``"a red circle and a small blue star on a gradient
    background"``. Deterministic in its arguments; drawn from a different random stream than
    ``generate_scene(seed, index)``."""
    check_scene_arguments(seed, index, size)
    rng = scene_rng(seed, index, CAPTION_STREAM)
    layers = render_layers(rng, size)
    return CaptionedImage(layers.image, compose_caption(rng, layers.shapes, layers.background))
