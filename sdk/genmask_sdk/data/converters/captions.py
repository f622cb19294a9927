"""COCO Captions as generation samples: image + caption, no mask.

On-disk layout read (COCO 2014 or 2017, ``annotations_trainval20XX.zip`` + the image zip)::

    ROOT/annotations/captions_train2014.json     (or ANNOTATIONS=...)
    ROOT/train2014/COCO_train2014_000000000009.jpg   (or IMAGES=...)

``captions_SPLIT.json`` is ``{"images": [{"id", "file_name", ...}], "annotations": [{"id",
"image_id", "caption"}]}``; a COCO image has about five captions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from genmask_sdk.errors import ConfigError, InvalidSampleError
from genmask_sdk.data.prepared import PreparedSample
from genmask_sdk.data.converters.common import load_rgb, read_json, records_by_id, require_dir, require_file


def _captions_by_image(annotations: list[dict]) -> dict[int, list[dict]]:
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in sorted(annotations, key=lambda a: a["id"]):
        by_image[ann["image_id"]].append(ann)
    return by_image


def coco_caption_samples(root: Path, *, split: str = "train2014", images: Path | None = None,
                         annotations: Path | None = None, captions_per_image: int = 1) -> Iterator[PreparedSample]:
    """One "gen" sample per kept caption, source ``"captions"``, images in id order.

    Args:
        root: COCO folder (layout in the module docstring).
        split: "train2014", "val2014", "train2017" or "val2017" (names the json and image folder).
        images, annotations: override ``ROOT/SPLIT`` and ``ROOT/annotations/captions_SPLIT.json``.
        captions_per_image: the first (lowest annotation id) N captions of each image; 0 = all.
            Every kept caption stores the image again, so 1 keeps the set ~5x smaller.

    Yields:
        ``PreparedSample(id="captions/{split}/{image_id}/{caption_id}", image, caption (stripped),
        "gen", "captions")``. Images without a caption are skipped; a listed image missing on
        disk is an InvalidSampleError naming it.
    """
    if isinstance(captions_per_image, bool) or not isinstance(captions_per_image, int) or captions_per_image < 0:
        raise ConfigError(f"captions_per_image must be an int >= 0 (0 = all), got {captions_per_image!r}.")
    root = Path(root)
    images = require_dir(Path(images) if images else root / split, "COCO images", "Pass --images DIR.")
    json_path = require_file(Path(annotations) if annotations else root / "annotations" / f"captions_{split}.json",
                             "COCO captions json", "Pass --annotations FILE (captions_<split>.json).")
    coco = read_json(json_path, "captions")
    return _samples(coco, images, split, captions_per_image, json_path)


def _samples(coco: dict, images: Path, split: str, per_image: int, json_path: Path) -> Iterator[PreparedSample]:
    infos = records_by_id(coco, "images", json_path, ("file_name",))  # duplicate / missing / mixed ids refused
    by_image = _captions_by_image(list(records_by_id(coco, "annotations", json_path, ("image_id",)).values()))
    for info in sorted(infos.values(), key=lambda i: i["id"]):
        captions = by_image.get(info["id"], [])[: per_image or None]
        if not captions:
            continue
        image_id = f"captions/{split}/{info['id']}"
        pixels = load_rgb(images / info["file_name"], image_id)
        pixels.setflags(write=False)
        for ann in captions:
            sample_id = f"{image_id}/{ann['id']}"
            if not isinstance(ann.get("caption"), str):
                raise InvalidSampleError(f"sample {sample_id!r}: the caption in {json_path} is not text.")
            yield PreparedSample(id=sample_id, image=pixels, instruction=ann["caption"].strip(), task="gen",
                                 source="captions")
