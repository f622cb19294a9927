"""Closed vocabulary of the procedural scenes: colours, shapes, size classes, positions, kinds.

Everything here is a plain constant, so captions, expressions, renderers and tests all share one
source of truth.
"""

from __future__ import annotations

#: Shape colours as saturated sRGB triples (uint8 range 0..255). Backgrounds are neutral (see
#: ``rendering.neutral_tone``), so none of these can be confused with a background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "green": (34, 170, 60),
    "blue": (40, 84, 225),
    "yellow": (240, 212, 30),
    "purple": (145, 55, 200),
    "orange": (250, 135, 20),
}

#: Shape names, in a fixed order (the sampling order for a given seed depends on it).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

#: Size class -> (min, max) shape radius as a fraction of the image side. The two bands are far
#: apart, so "small" and "large" are unambiguous at any image size.
SIZE_CLASSES: dict[str, tuple[float, float]] = {
    "small": (0.07, 0.11),
    "large": (0.16, 0.24),
}

#: Position words used by "position" expressions: ``the red shape on the left``.
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom")

#: Spatial relations used by "relation" expressions: ``the star above the green circle``.
RELATIONS: tuple[str, ...] = ("above", "below", "left of", "right of")

#: Superlative words used by "superlative" expressions: ``the largest red shape``.
SUPERLATIVES: tuple[str, ...] = ("largest", "smallest")

#: Background styles; each is a neutral (low-saturation) pattern plus mild pixel noise.
BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noise", "stripes", "checker")

#: Type tags of referring expressions (``Expression.kind``).
EXPRESSION_KINDS: tuple[str, ...] = ("attribute", "position", "relation", "superlative")

#: Kind of an expression that refers to nothing in the scene (its mask is empty, its target -1),
#: as in generalized referring segmentation (gRefCOCO's no-target expressions).
ABSENT_KIND = "absent"
