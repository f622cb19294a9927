"""RefCOCO / RefCOCO+ / RefCOCOg in the standard ``refer`` layout (lichengunc/refer), without
its matplotlib / skimage dependencies.

Layout under ``data_root``::

    refcoco/refs(unc).p          pickle: list of refs {ref_id, ann_id, image_id, split, category_id,
                                 sentences: [{sent_id, sent, raw, tokens}], ...}
    refcoco/instances.json       COCO-style {images: [{id, file_name, height, width}],
                                 annotations: [{id, image_id, segmentation, bbox, ...}], categories}
    refcoco+/refs(unc).p, refcoco+/instances.json
    refcocog/refs(umd).p (or refs(google).p), refcocog/instances.json
    images/mscoco/images/train2014/COCO_train2014_000000xxxxxx.jpg

Segmentations are COCO polygons (a list of [x0, y0, x1, y1, ...] lists; several polygons are
merged), compressed RLE (``counts`` a str/bytes) or uncompressed RLE (``counts`` a list of run
lengths, column-major). Splits follow the ``refer`` API: ``testA`` / ``testB`` select refs whose
split contains that letter, ``test`` every test split, ``train`` / ``val`` exact matches. Every
sentence of a ref is one evaluation sample (as in LAVT / CRIS / GRES evaluations).
"""

from __future__ import annotations

import json
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from genmask_sdk.errors import ArtifactNotFoundError, InvalidInputError

#: dataset -> (default splitBy, the splits papers report)
DATASETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "refcoco": ("unc", ("val", "testA", "testB")),
    "refcoco+": ("unc", ("val", "testA", "testB")),
    "refcocog": ("umd", ("val", "test")),
}
IMAGE_SUBDIR = Path("images") / "mscoco" / "images" / "train2014"


@dataclass(frozen=True)
class ReferExpression:
    """One sample: a sentence referring to the object of ``ref_id``."""

    ref_id: int
    ann_id: int
    sent_id: int
    text: str
    split: str


@dataclass(frozen=True)
class ReferImage:
    """One image with its expressions (a split's samples grouped by image, in ref order)."""

    image_id: int
    path: Path
    height: int
    width: int
    expressions: tuple[ReferExpression, ...]


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles lists, dicts, strings and numbers only: any class or function reference (what a
    malicious pickle uses to run code) is refused (the "restricting globals" recipe of the pickle docs)."""

    def find_class(self, module: str, name: str):
        raise InvalidInputError(f"the refs pickle references {module}.{name}; only plain data (lists, dicts, strings, "
                                "numbers) is loaded from it. Use the original refs(unc).p of the REFER release.")


def load_refs(path: Path) -> list[dict[str, Any]]:
    """The refs pickle, plain data only (written by Python 2 for the original files: fall back to latin-1)."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        refs = _PlainDataUnpickler(io.BytesIO(data)).load()
    except UnicodeDecodeError:
        refs = _PlainDataUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise InvalidInputError(f"{path} is not a readable refs pickle ({exc}).") from None
    if not isinstance(refs, list):
        raise InvalidInputError(f"{path} should hold a list of refs, got {type(refs).__name__}")
    return refs


def _split_matches(wanted: str, split: str) -> bool:
    if wanted in ("testA", "testB", "testC"):
        return wanted[-1] in split
    if wanted == "test":
        return "test" in split
    return split == wanted


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, compressed or uncompressed RLE) -> bool (height, width)."""
    from pycocotools import mask as coco_mask

    from genmask_sdk.metrics import decode_rle

    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        polygons = [list(map(float, p)) for p in segmentation]
        decoded = coco_mask.decode(coco_mask.frPyObjects(polygons, height, width))
        return np.ascontiguousarray(decoded.reshape(height, width, -1).any(axis=2))
    if isinstance(segmentation, dict):
        rle = dict(segmentation)
        if list(rle.get("size", [])) != [height, width]:
            raise InvalidInputError(f"RLE size {rle.get('size')} differs from the image's {[height, width]}")
        return decode_rle(rle)
    raise InvalidInputError(f"unsupported segmentation of type {type(segmentation).__name__}")


class ReferDataset:
    """One refer dataset (``refcoco``, ``refcoco+``, ``refcocog``) under ``data_root``.

    ``images(split)`` yields ``ReferImage`` groups; ``mask(ann_id)`` decodes a ground truth;
    ``load_image(image)`` reads the RGB pixels (uint8 H×W×3).
    """

    def __init__(self, data_root: str | Path, dataset: str = "refcoco", split_by: str | None = None) -> None:
        self.root = Path(data_root)
        self.dataset = dataset
        self.split_by = split_by or DATASETS.get(dataset, ("unc", ()))[0]
        folder = self.root / dataset
        refs_path = folder / f"refs({self.split_by}).p"
        instances_path = folder / "instances.json"
        for path in (refs_path, instances_path):
            if not path.is_file():
                raise ArtifactNotFoundError(
                    f"{path} does not exist; --refer-root must hold the refer layout "
                    f"(<root>/{dataset}/refs({self.split_by}).p, <root>/{dataset}/instances.json, "
                    f"<root>/{IMAGE_SUBDIR}/...)."
                )
        self.refs = load_refs(refs_path)
        instances = json.loads(instances_path.read_text())
        self.image_info = {int(i["id"]): i for i in instances["images"]}
        self.annotations = {int(a["id"]): a for a in instances["annotations"]}
        self.categories = {int(c["id"]): c.get("name") for c in instances.get("categories", [])}
        self.image_dir = self.root / IMAGE_SUBDIR

    @property
    def name(self) -> str:
        return f"{self.dataset} ({self.split_by})"

    def splits(self) -> list[str]:
        """The split names present in the refs, in first-seen order."""
        return list(OrderedDict.fromkeys(str(r["split"]) for r in self.refs))

    def expressions(self, split: str) -> list[ReferExpression]:
        found = []
        for ref in self.refs:
            if not _split_matches(split, str(ref["split"])):
                continue
            for sentence in ref["sentences"]:
                text = str(sentence.get("sent") or sentence.get("raw") or "").strip()
                found.append(ReferExpression(int(ref["ref_id"]), int(ref["ann_id"]), int(sentence.get("sent_id", -1)),
                                             text, str(ref["split"])))
        return found

    def images(self, split: str, limit: int | None = None) -> Iterator[ReferImage]:
        """The split's expressions grouped by image (at most ``limit`` expressions in all)."""
        grouped: OrderedDict[int, list[ReferExpression]] = OrderedDict()
        ref_image = {int(r["ref_id"]): int(r["image_id"]) for r in self.refs}
        expressions = self.expressions(split)
        if limit is not None:
            expressions = expressions[:limit]
        for expression in expressions:
            grouped.setdefault(ref_image[expression.ref_id], []).append(expression)
        for image_id, items in grouped.items():
            info = self.image_info[image_id]
            yield ReferImage(image_id, self.image_dir / info["file_name"], int(info["height"]), int(info["width"]),
                             tuple(items))

    def count(self, split: str, limit: int | None = None) -> int:
        n = len(self.expressions(split))
        return n if limit is None else min(n, limit)

    def mask(self, ann_id: int) -> np.ndarray:
        """Ground truth of an annotation: bool (height, width) of its image."""
        ann = self.annotations[int(ann_id)]
        info = self.image_info[int(ann["image_id"])]
        return segmentation_mask(ann["segmentation"], int(info["height"]), int(info["width"]))

    def load_image(self, image: ReferImage) -> np.ndarray:
        from PIL import Image

        if not image.path.is_file():
            raise ArtifactNotFoundError(
                f"image {image.path} is missing; the refer layout keeps COCO train2014 images in "
                f"<root>/{IMAGE_SUBDIR}/."
            )
        with Image.open(image.path) as handle:
            pixels = np.asarray(handle.convert("RGB"))
        if pixels.shape[:2] != (image.height, image.width):
            raise InvalidInputError(f"{image.path} is {pixels.shape[1]}x{pixels.shape[0]}, instances.json says "
                                    f"{image.width}x{image.height}")
        return pixels
