"""COCO-Stuff and ADE20K semantic label maps as binary referring samples, one class per sample.

As LISA does: each (image, class present) pair becomes a "seg" sample whose instruction is the
class name and whose mask is that class's pixels. Layouts read:

COCO-Stuff (``stuffthingmaps_trainval2017.zip`` of github.com/nightrome/cocostuff + COCO 2017)::

    ROOT/train2017/000000000009.jpg                              (or IMAGES=...)
    ROOT/stuffthingmaps_trainval2017/train2017/000000000009.png  (or LABELS=...)

    uint8 PNG, value v in 0..181 = COCO_STUFF_CLASSES[v] (labels.txt id v + 1), 255 = unlabeled.

ADE20K (SceneParsing ``ADEChallengeData2016.zip``)::

    ROOT/images/training/ADE_train_00000001.jpg     (ROOT = ADEChallengeData2016 or its parent)
    ROOT/annotations/training/ADE_train_00000001.png

    uint8 PNG, value v in 1..150 = ADE20K_CLASSES[v - 1] (objectInfo150 order), 0 = other.

Label PNGs drive the walk (sorted by name); the image of ``NAME.png`` is ``NAME.jpg``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from genmask_sdk.errors import ArtifactNotFoundError, ConfigError, InvalidSampleError
from genmask_sdk.data.prepared import PreparedSample
from genmask_sdk.data.converters.class_names import (
    ADE20K_CLASSES,
    ADE20K_OTHER,
    COCO_STUFF_CLASSES,
    COCO_STUFF_UNLABELED,
)
from genmask_sdk.data.converters.common import check_same_size, load_label_map, load_rgb, require_dir

DEFAULT_MIN_PIXELS = 64


def _check_options(min_pixels: int, max_classes_per_image: int | None) -> None:
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, int) or min_pixels < 1:
        raise ConfigError(f"min_pixels must be an int >= 1, got {min_pixels!r}.")
    if max_classes_per_image is not None and (not isinstance(max_classes_per_image, int) or max_classes_per_image < 1):
        raise ConfigError(f"max_classes_per_image must be None or an int >= 1, got {max_classes_per_image!r}.")


def _present_classes(label: np.ndarray, names: Mapping[int, str], ignored: frozenset[int], min_pixels: int,
                     sample_id: str, label_path: Path) -> list[int]:
    """Label values of ``names`` covering >= ``min_pixels`` pixels, ascending; an unknown value
    (neither named nor ignored) is an InvalidSampleError naming the file."""
    values, counts = np.unique(label, return_counts=True)
    unknown = [int(v) for v in values if int(v) not in names and int(v) not in ignored]
    if unknown:
        raise InvalidSampleError(f"sample {sample_id!r}: label map {label_path} holds values {unknown} that are "
                                 f"no class of this dataset; it is not a label map of this source.")
    return [int(v) for v, c in zip(values, counts) if int(v) in names and c >= min_pixels]


def _choose(classes: list[int], limit: int | None, seed: int, stem: str) -> list[int]:
    """At most ``limit`` of ``classes``, drawn with ``default_rng([seed, crc32(stem)])`` (so the
    choice for an image does not depend on the others), kept in ascending order."""
    if limit is None or len(classes) <= limit:
        return classes
    rng = np.random.default_rng([seed, zlib.crc32(stem.encode("utf-8"))])
    return sorted(int(v) for v in rng.choice(classes, size=limit, replace=False))


def semantic_samples(images: Path, labels: Path, *, source: str, split: str, names: Mapping[int, str],
                     ignored: frozenset[int], min_pixels: int = DEFAULT_MIN_PIXELS,
                     max_classes_per_image: int | None = None, seed: int = 0) -> Iterator[PreparedSample]:
    """Binary samples from ``labels/NAME.png`` + ``images/NAME.jpg`` pairs (any semantic dataset).

    Args:
        names: label value -> class name, for the classes to emit.
        ignored: label values that are no class (unlabeled / other, or classes left out).
        min_pixels: a class needs at least this many pixels in an image to give a sample.
        max_classes_per_image: keep at most this many classes per image (seeded random choice).

    Yields:
        ``PreparedSample(id="{source}/{split}/{NAME}/{value}", image, class name, "seg", source,
        mask=label == value)``; the samples of one image share one image array.
    """
    _check_options(min_pixels, max_classes_per_image)
    label_paths = sorted(labels.glob("*.png"))
    if not label_paths:
        raise ArtifactNotFoundError(f"no label PNGs in {labels}; check the dataset root and split.")
    for label_path in label_paths:
        image_id = f"{source}/{split}/{label_path.stem}"
        image_path = images / f"{label_path.stem}.jpg"
        image = load_rgb(image_path, image_id)
        image.setflags(write=False)
        label = load_label_map(label_path, image_id)
        check_same_size(image_id, image, label.shape[:2], image_path, f"label map {label_path}")
        present = _present_classes(label, names, ignored, min_pixels, image_id, label_path)
        for value in _choose(present, max_classes_per_image, seed, label_path.stem):
            yield PreparedSample(id=f"{image_id}/{value}", image=image, instruction=names[value], task="seg",
                                 source=source, mask=label == value)


def coco_stuff_samples(root: Path, *, split: str = "train2017", images: Path | None = None,
                       labels: Path | None = None, min_pixels: int = DEFAULT_MIN_PIXELS,
                       max_classes_per_image: int | None = None, seed: int = 0,
                       keep_hyphenated: bool = False) -> Iterator[PreparedSample]:
    """COCO-Stuff samples (layout in the module docstring), source ``"coco-stuff"``.

    ``keep_hyphenated=False`` leaves out the stuff sub-classes named with a hyphen
    ("building-other", "wall-brick", ...), as LISA does: their names are not phrases a user would
    refer with.
    """
    root = Path(root)
    images = require_dir(Path(images) if images else root / split, "COCO-Stuff images",
                         "Pass --images DIR (the COCO 2017 jpgs of this split).")
    labels = require_dir(Path(labels) if labels else root / "stuffthingmaps_trainval2017" / split,
                         "COCO-Stuff label maps", "Pass --labels DIR (stuffthingmaps_trainval2017/<split>).")
    names = {v: n for v, n in enumerate(COCO_STUFF_CLASSES) if keep_hyphenated or "-" not in n}
    ignored = frozenset({COCO_STUFF_UNLABELED} | set(range(len(COCO_STUFF_CLASSES))) - set(names))
    return semantic_samples(images, labels, source="coco-stuff", split=split, names=names, ignored=ignored,
                            min_pixels=min_pixels, max_classes_per_image=max_classes_per_image, seed=seed)


def ade20k_samples(root: Path, *, split: str = "training", min_pixels: int = DEFAULT_MIN_PIXELS,
                   max_classes_per_image: int | None = None, seed: int = 0) -> Iterator[PreparedSample]:
    """ADE20K (SceneParsing 150 classes) samples, source ``"ade20k"``; ``split`` is "training" or
    "validation" (layout in the module docstring)."""
    root = Path(root)
    if (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    hint = "Point --root at ADEChallengeData2016 (holding images/ and annotations/)."
    images = require_dir(root / "images" / split, "ADE20K images", hint)
    labels = require_dir(root / "annotations" / split, "ADE20K annotations", hint)
    names = {v + 1: n for v, n in enumerate(ADE20K_CLASSES)}
    return semantic_samples(images, labels, source="ade20k", split=split, names=names,
                            ignored=frozenset({ADE20K_OTHER}), min_pixels=min_pixels,
                            max_classes_per_image=max_classes_per_image, seed=seed)
