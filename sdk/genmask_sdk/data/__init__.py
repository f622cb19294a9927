"""Procedural training and evaluation data for GenMask.

Scenes of 1..6 anti-aliased coloured shapes on neutral backgrounds, with referring expressions
(``generate_scene``, ``ReferringDataset``) and captioned images for text-to-image samples
(``generate_captioned_image``). Everything is deterministic in ``(seed, index)``.
"""

from genmask_sdk.data.captions import generate_captioned_image
from genmask_sdk.data.geometry import shape_area, shape_outline
from genmask_sdk.data.instances import InstanceDataset, InstanceScene, generate_instance_scene
from genmask_sdk.data.records import CaptionedImage, Expression, Scene, SceneObject
from genmask_sdk.data.scenes import ReferringDataset, generate_scene
from genmask_sdk.data.vocabulary import (
    BACKGROUND_KINDS,
    COLOURS,
    ABSENT_KIND,
    EXPRESSION_KINDS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZE_CLASSES,
    SUPERLATIVES,
)

__all__ = [
    "BACKGROUND_KINDS",
    "COLOURS",
    "ABSENT_KIND",
    "EXPRESSION_KINDS",
    "POSITIONS",
    "RELATIONS",
    "SHAPES",
    "SIZE_CLASSES",
    "SUPERLATIVES",
    "CaptionedImage",
    "Expression",
    "InstanceDataset",
    "InstanceScene",
    "ReferringDataset",
    "Scene",
    "SceneObject",
    "generate_captioned_image",
    "generate_instance_scene",
    "generate_scene",
    "shape_area",
    "shape_outline",
]
