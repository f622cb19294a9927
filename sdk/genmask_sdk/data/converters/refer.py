"""RefCOCO / RefCOCO+ / RefCOCOg in the ``refer`` layout: one sample per referring sentence.

On-disk layout read (the ``data`` folder of github.com/lichengunc/refer, plus COCO train2014)::

    ROOT/refcoco/instances.json          COCO instances of the referred objects
    ROOT/refcoco/refs(unc).p             refs(google).p too
    ROOT/refcoco+/instances.json, refs(unc).p
    ROOT/refcocog/instances.json, refs(umd).p, refs(google).p
    ROOT/images/mscoco/images/train2014/COCO_train2014_000000000009.jpg   (or IMAGES=...)

``refs(SPLIT_BY).p`` is a pickle of a list of dicts ``{"ref_id", "ann_id", "image_id", "split",
"sentences": [{"sent_id", "sent", "raw", "tokens"}], ...}``; ``split`` is one of train / val /
testA / testB (unc), train / val / test (umd), train / val (google). ``instances.json`` is COCO:
``{"images": [{"id", "file_name", "height", "width"}], "annotations": [{"id", "image_id",
"segmentation", ...}]}`` with polygons, uncompressed RLE (iscrowd) or compressed RLE, decoded as
COCO's ``annToMask`` does. The pickle is read with an unpickler that allows plain containers
only (no code runs).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from genmask_sdk.errors import ArtifactMismatchError, ConfigError, InvalidSampleError
from genmask_sdk.data.prepared import PreparedSample
from genmask_sdk.data.converters.common import positive_size, records_by_id, check_same_size, load_rgb, read_json, require_dir, require_file

REFER_DATASETS = ("refcoco", "refcoco+", "refcocog")
SPLIT_BYS = ("unc", "umd", "google")
DEFAULT_IMAGES = Path("images/mscoco/images/train2014")


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles lists, dicts, strings and numbers; refuses anything that would import code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}: a refs pickle holds plain data only")


def load_refs(path: Path) -> list[dict[str, Any]]:
    """The list of ref dicts of a ``refs(*).p`` file (Python 2 or 3 pickle)."""
    try:
        with open(path, "rb") as handle:
            refs = _PlainUnpickler(handle, encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactMismatchError(f"{path} is not a refer refs pickle ({exc}); re-download it.") from None
    if not isinstance(refs, list) or not all(isinstance(ref, dict) for ref in refs):
        raise ArtifactMismatchError(f"{path} should hold a list of ref dicts, got {type(refs).__name__}.")
    return refs


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """bool ``(height, width)`` mask of a COCO segmentation: polygons (list of flat x, y lists, in
    pixels, x right / y down), uncompressed RLE (``counts`` a list) or compressed RLE."""
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return np.ascontiguousarray(coco_mask.decode(rle), dtype=bool)


def _refs_path(root: Path, dataset: str, split_by: str) -> Path:
    if dataset not in REFER_DATASETS:
        raise ConfigError(f"dataset must be one of {REFER_DATASETS}, got {dataset!r}.")
    if split_by not in SPLIT_BYS:
        raise ConfigError(f"split_by must be one of {SPLIT_BYS}, got {split_by!r}.")
    folder = require_dir(root / dataset, f"{dataset} annotations", "Point --root at refer's data folder.")
    present = sorted(p.name for p in folder.glob("refs(*).p"))
    return require_file(folder / f"refs({split_by}).p", f"{dataset} split-by {split_by!r}",
                        f"Refs files present: {present} (refcoco: unc, google; refcoco+: unc; refcocog: umd, google).")


def _refs_of_split(refs: list[dict], split: str, path: Path) -> list[dict]:
    chosen = [ref for ref in refs if ref.get("split") == split]
    if not chosen:
        present = sorted({str(ref.get("split")) for ref in refs})
        raise ConfigError(f"{path} has no refs in split {split!r}; its splits are {present}.")
    return sorted(chosen, key=lambda ref: (ref["image_id"], ref["ref_id"]))


def _sentence_text(sentence: dict) -> str:
    return str(sentence.get("sent", sentence.get("raw", "")))


def _ref_mask(ref: dict, anns: dict, image_info: dict, ref_id: str) -> np.ndarray:
    ann = anns.get(ref["ann_id"])
    if ann is None:
        raise InvalidSampleError(f"sample {ref_id!r}: annotation {ref['ann_id']} is not in instances.json; "
                                 f"the refs and instances files come from different downloads.")
    try:
        mask = annotation_mask(ann["segmentation"], int(image_info["height"]), int(image_info["width"]))
    except Exception as exc:  # pycocotools raises plain Exception for malformed polygons / RLE
        raise InvalidSampleError(f"sample {ref_id!r}: annotation {ref['ann_id']} has an unreadable "
                                 f"segmentation ({exc}).") from None
    mask.setflags(write=False)
    return mask


def refer_samples(root: Path, *, dataset: str = "refcoco", split_by: str = "unc", split: str = "train",
                  images: Path | None = None) -> Iterator[PreparedSample]:
    """Every sentence of every ref of ``split`` as a "seg" sample, source ``dataset``.

    Args:
        root: refer's ``data`` folder (layout in the module docstring).
        dataset: "refcoco", "refcoco+" or "refcocog".
        split_by: "unc", "umd" or "google" (which ``refs(...).p``).
        split: "train", "val", "testA", "testB" or "test" (present in that refs file).
        images: folder of ``COCO_train2014_*.jpg``; default ``ROOT/images/mscoco/images/train2014``.

    Yields:
        ``PreparedSample(id="{dataset}/{split}/ref{ref_id}/sent{sent_id}", image, sentence, "seg",
        dataset, mask)``, refs in (image_id, ref_id) order; samples of one image share one image
        array. Raises InvalidSampleError naming the ref for a missing image, an unknown image or
        annotation id, or an image whose size differs from ``instances.json``.
    """
    root = Path(root)
    refs_path = _refs_path(root, dataset, split_by)
    images = require_dir(Path(images) if images else root / DEFAULT_IMAGES, "COCO train2014 images",
                         "Pass --images DIR (the folder of COCO_train2014_*.jpg).")
    instances = require_file(root / dataset / "instances.json", f"{dataset} instances.json",
                             "Point --root at refer's data folder.")
    coco = read_json(instances, "instances")
    refs = _refs_of_split(load_refs(refs_path), split, refs_path)
    return _samples(refs, coco, images, dataset, split, instances)


def _samples(refs: list[dict], coco: dict, images: Path, dataset: str, split: str,
             instances: Path) -> Iterator[PreparedSample]:
    image_infos = records_by_id(coco, "images", instances, ("file_name", "height", "width"))
    anns = records_by_id(coco, "annotations", instances, ("image_id",))
    pixels, pixels_of = None, None
    for ref in refs:
        ref_id = f"{dataset}/{split}/ref{ref['ref_id']}"
        info = image_infos.get(ref["image_id"])
        if info is None:
            raise InvalidSampleError(f"sample {ref_id!r}: image id {ref['image_id']} is not in instances.json; "
                                     f"the refs and instances files come from different downloads.")
        image_path = images / info["file_name"]
        if pixels_of != ref["image_id"]:
            pixels, pixels_of = load_rgb(image_path, ref_id), ref["image_id"]
            pixels.setflags(write=False)
        check_same_size(ref_id, pixels, positive_size(info, instances, f"image {ref['image_id']}"), image_path,
                        f"the mask (instances.json size of image {ref['image_id']})")
        mask = _ref_mask(ref, anns, info, ref_id)
        sentences = ref.get("sentences")
        if not isinstance(sentences, list) or not all(isinstance(s, dict) for s in sentences):
            raise InvalidSampleError(f"sample {ref_id!r}: 'sentences' must be a list of objects, got "
                                     f"{str(sentences)[:60]}; the refs file is damaged, re-download it.")
        for sentence in sentences:
            yield PreparedSample(id=f"{ref_id}/sent{sentence['sent_id']}", image=pixels,
                                 instruction=_sentence_text(sentence).strip(), task="seg", source=dataset, mask=mask)
