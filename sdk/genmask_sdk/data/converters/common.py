"""File helpers shared by the converters: every failure names the sample and the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, InvalidSampleError


def require_dir(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a directory, else ArtifactNotFoundError saying ``what`` it should be."""
    if not path.is_dir():
        raise ArtifactNotFoundError(f"{what} not found: {path} is not a directory. {hint}")
    return path


def require_file(path: Path, what: str, hint: str) -> Path:
    """``path`` if it is a file, else ArtifactNotFoundError saying ``what`` it should be."""
    if not path.is_file():
        raise ArtifactNotFoundError(f"{what} not found: {path} does not exist. {hint}")
    return path


def read_json(path: Path, what: str) -> Any:
    """Parsed JSON of ``path``; ArtifactMismatchError naming the file if it is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactMismatchError(f"{what} {path} is not valid JSON ({exc}); re-download it.") from None


def records_by_id(data: Any, key: str, path: Path, fields: tuple[str, ...] = ()) -> dict[Any, dict]:
    """``{record["id"]: record}`` of the list ``data[key]`` of a COCO-style JSON file, or
    ArtifactMismatchError naming the file and the record: not an object with that list, a record
    that is not an object or lacks ``id`` / one of ``fields``, ids of mixed types, or an id that
    repeats (which would silently pair one record's annotations with another's pixels)."""
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ArtifactMismatchError(f"{path} must be a JSON object with a list {key!r} (COCO format); got "
                                    f"{type(data).__name__ if not isinstance(data, dict) else 'no ' + repr(key)}. "
                                    "Re-download it.")
    found: dict[Any, dict] = {}
    for index, record in enumerate(data[key]):
        if not isinstance(record, dict) or "id" not in record or any(f not in record for f in fields):
            raise ArtifactMismatchError(f"{path}: {key}[{index}] must be an object with 'id'"
                                        + "".join(f", {f!r}" for f in fields) + f"; got {str(record)[:80]}. Re-download it.")
        ident = record["id"]
        if isinstance(ident, bool) or not isinstance(ident, (int, str)):
            raise ArtifactMismatchError(f"{path}: {key}[{index}].id must be an integer or a string, got {ident!r}.")
        if found and type(ident) is not type(next(iter(found))):
            raise ArtifactMismatchError(f"{path}: {key} ids mix types ({type(next(iter(found))).__name__} and "
                                        f"{type(ident).__name__} at {key}[{index}]); the file is damaged.")
        if ident in found:
            raise ArtifactMismatchError(f"{path}: {key} id {ident!r} appears twice; each {key[:-1]} must be listed "
                                        "once (the file is damaged or two downloads were merged).")
        found[ident] = record
    return found


def positive_size(record: dict, path: Path, what: str) -> tuple[int, int]:
    """``(height, width)`` of a COCO image record as positive integers, or ArtifactMismatchError."""
    height, width = record.get("height"), record.get("width")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise ArtifactMismatchError(f"{path}: {what} has height {height!r} and width {width!r}; both must be "
                                    "positive integers (pixels). Re-download it.")
    return height, width


def load_rgb(path: Path, sample_id: str) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB pixels of an image file (grey, palette and CMYK converted).

    EXIF orientation is ignored, as COCO and ADE20K annotations are on the stored pixel grid.
    Raises InvalidSampleError naming ``sample_id`` and ``path`` if it is missing or unreadable.
    """
    if not path.is_file():
        raise InvalidSampleError(f"sample {sample_id!r}: image file {path} is missing. Restore the "
                                 f"image (or point --images at the folder that holds it).")
    try:
        with Image.open(path) as image:
            if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit grey: scale, do not clip at 255
                grey = np.asarray(image, dtype=np.float64)
                if grey.size and (grey.min() < 0 or grey.max() > 65535):
                    raise InvalidSampleError(f"sample {sample_id!r}: image {path} holds values outside 0-65535 "
                                             "(not a 16-bit image); convert it to 8-bit RGB.")
                return np.repeat(np.rint(grey / 257.0).astype(np.uint8)[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidSampleError(f"sample {sample_id!r}: cannot read image {path} ({exc}); "
                                 f"re-download it.") from None


def load_label_map(path: Path, sample_id: str) -> np.ndarray:
    """``(H, W)`` integer label map of a single-channel (mode L, P or I;16) PNG, values as stored.

    Raises InvalidSampleError naming ``sample_id`` and ``path`` if it is unreadable or has colour
    channels (an RGB rendering of the labels is not a label map).
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16"):
                raise InvalidSampleError(
                    f"sample {sample_id!r}: label map {path} has mode {image.mode}; expected a "
                    f"single-channel PNG of class indices (mode L or P), not a coloured rendering.")
            return np.asarray(image)
    except OSError as exc:
        raise InvalidSampleError(f"sample {sample_id!r}: cannot read label map {path} ({exc}); "
                                 f"re-download it.") from None


def check_same_size(sample_id: str, image: np.ndarray, mask_hw: tuple[int, int], image_path: Path,
                    mask_source: str) -> None:
    """InvalidSampleError naming both files unless ``mask_hw == image.shape[:2]``."""
    if tuple(mask_hw) != image.shape[:2]:
        raise InvalidSampleError(
            f"sample {sample_id!r}: mask/image size mismatch: {mask_source} is {tuple(mask_hw)} (H, W) "
            f"but image {image_path} is {image.shape[:2]}. The annotation belongs to another image "
            f"or one of them was resized; restore the original files.")
