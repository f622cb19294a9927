"""Converters from public datasets (in their own on-disk layouts) to prepared samples.

Each converter checks its paths and options when called, then returns an iterator of
:class:`~genmask_sdk.data.prepared.PreparedSample` (nothing is written: feed it to
:func:`~genmask_sdk.data.prepared.write_prepared`, or iterate it in a test). The layout each one
reads is in its module docstring. The sources::

    --source refer       refer_samples          one "seg" sample per RefCOCO/+/g referring sentence
    --source coco-stuff  coco_stuff_samples     one "seg" sample per (image, class present)
    --source ade20k      ade20k_samples         one "seg" sample per (image, class present)
    --source captions    coco_caption_samples   one "gen" sample per kept COCO caption
    --source scenes      scene_samples          procedural expressions ("seg") and captions ("gen")
"""

from genmask_sdk.data.converters.captions import coco_caption_samples
from genmask_sdk.data.converters.class_names import ADE20K_CLASSES, COCO_STUFF_CLASSES
from genmask_sdk.data.converters.refer import REFER_DATASETS, SPLIT_BYS, annotation_mask, load_refs, refer_samples
from genmask_sdk.data.converters.scenes import scene_samples
from genmask_sdk.data.converters.semantic import ade20k_samples, coco_stuff_samples, semantic_samples

CONVERTER_SOURCES = ("refer", "coco-stuff", "ade20k", "captions", "scenes")

__all__ = [
    "ADE20K_CLASSES",
    "COCO_STUFF_CLASSES",
    "CONVERTER_SOURCES",
    "REFER_DATASETS",
    "SPLIT_BYS",
    "ade20k_samples",
    "annotation_mask",
    "coco_caption_samples",
    "coco_stuff_samples",
    "load_refs",
    "refer_samples",
    "scene_samples",
    "semantic_samples",
]
