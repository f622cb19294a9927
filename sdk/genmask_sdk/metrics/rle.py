"""COCO run-length encoding (RLE) of binary masks, through ``pycocotools.mask``.

Format (identical to ``pycocotools.mask``)::

    {"size": [H, W], "counts": "<COCO compressed string>"}

Runs alternate background / foreground, start with background (a leading 0 run when the first
pixel is foreground), and walk the mask in **column-major (Fortran) order**: down the first
column, then the second, ... The compressed string is COCO's 6-bit, delta-coded ASCII form.

:func:`encode_rle` always returns compressed counts as a ``str`` (JSON-ready; pycocotools itself
returns ``bytes``). :func:`decode_rle` accepts compressed counts as ``str`` or ``bytes`` and also
uncompressed RLE, whose counts are a list of run lengths (COCO ``iscrowd`` annotations).

The codec itself is pycocotools'. This module only validates inputs, because pycocotools does not
reject an RLE whose runs cover fewer pixels than ``H * W``: it then returns uninitialised memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from genmask_sdk.errors import InputTypeError, InvalidInputError
from genmask_sdk.metrics._validate import check_binary_mask

#: A COCO RLE: ``{"size": [H, W], "counts": str | bytes | list[int]}``.
RLE = dict[str, Any]

# COCO compressed counts use the characters chr(48) .. chr(111): 5 data bits + 1 "more" bit.
_FIRST_CODE_CHAR = 48
_CODE_CHAR_COUNT = 64


def encode_rle(mask: np.ndarray) -> RLE:
    """Encode a binary mask as COCO compressed RLE.

    Args:
        mask: ``numpy.ndarray``, dtype ``bool``, shape ``(H, W)``, H, W >= 1, any memory order.

    Returns:
        ``{"size": [H, W], "counts": str}``, where ``counts`` is the ASCII string that
        ``pycocotools.mask.encode(numpy.asfortranarray(mask.astype(numpy.uint8)))`` gives as bytes.

    Raises:
        InputTypeError: ``mask`` is not a numpy array of dtype bool.
        InvalidInputError: ``mask`` is not 2-D, or is zero-size.
    """
    check_binary_mask(mask, "mask")
    fortran_uint8 = np.asfortranarray(mask, dtype=np.uint8)
    encoded = coco_mask.encode(fortran_uint8)
    height, width = mask.shape
    return {"size": [int(height), int(width)], "counts": encoded["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed or uncompressed) into a binary mask.

    Args:
        rle: mapping with ``"size": [H, W]`` (two ints >= 1) and ``"counts"`` that is either
            compressed (``str`` or ``bytes``, COCO string form) or uncompressed (a list, tuple or
            1-D integer array of non-negative run lengths summing to ``H * W``).

    Returns:
        C-contiguous ``numpy.ndarray`` of dtype ``bool`` and shape ``(H, W)``.

    Raises:
        InputTypeError: ``rle`` is not a mapping, or ``counts`` / ``size`` have the wrong type.
        InvalidInputError: a key is missing, ``size`` is not two positive ints, or ``counts`` is
            malformed or does not cover exactly ``H * W`` pixels.
    """
    height, width = _read_size(rle)
    compressed = _compressed_counts(rle["counts"], height, width)
    decoded = coco_mask.decode({"size": [height, width], "counts": compressed})
    return np.ascontiguousarray(decoded, dtype=bool)


def _read_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, Mapping):
        raise InputTypeError(
            f"rle must be a dict like {{'size': [H, W], 'counts': ...}}, got "
            f"{type(rle).__name__}. For a list of RLEs, decode each element."
        )
    missing = [key for key in ("size", "counts") if key not in rle]
    if missing:
        raise InvalidInputError(
            f"rle is missing key(s) {missing}; a COCO RLE is {{'size': [H, W], 'counts': ...}}. "
            f"Polygon segmentations must be converted first (pycocotools.mask.frPyObjects)."
        )
    size = rle["size"]
    if (
        isinstance(size, (str, bytes))
        or not isinstance(size, (Sequence, np.ndarray))
        or len(size) != 2
    ):
        raise InvalidInputError(f"rle['size'] must be [H, W] (two ints), got {size!r}.")
    for value in size:
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(
                f"rle['size'] must be [H, W] with integers H, W >= 1, got {list(size)!r}."
            )
    return int(size[0]), int(size[1])


def _compressed_counts(counts: Any, height: int, width: int) -> bytes:
    """Return ``counts`` as validated COCO compressed bytes, converting uncompressed RLE."""
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidInputError(
                "rle['counts'] contains non-ASCII characters; COCO compressed counts use only "
                "the characters '0' (48) to 'o' (111). Check the RLE was not corrupted."
            ) from None
    if isinstance(counts, (bytes, bytearray)):
        counts = bytes(counts)
        _check_run_total(_parse_compressed_runs(counts), height, width)
        return counts
    if isinstance(counts, (Sequence, np.ndarray)):
        runs = _uncompressed_runs(counts)
        _check_run_total(runs, height, width)
        uncompressed = {"size": [height, width], "counts": runs}
        return coco_mask.frPyObjects(uncompressed, height, width)["counts"]
    raise InputTypeError(
        f"rle['counts'] must be a str or bytes (compressed RLE) or a list of ints (uncompressed "
        f"RLE), got {type(counts).__name__}."
    )


def _uncompressed_runs(counts: Sequence[Any] | np.ndarray) -> list[int]:
    if isinstance(counts, np.ndarray) and counts.ndim != 1:
        raise InvalidInputError(
            f"uncompressed rle['counts'] must be 1-D, got an array of shape {counts.shape}."
        )
    runs = []
    for value in counts:
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
            raise InvalidInputError(
                f"uncompressed rle['counts'] must hold non-negative integers (run lengths), "
                f"found {value!r}."
            )
        runs.append(int(value))
    return runs


def _check_run_total(runs: list[int], height: int, width: int) -> None:
    total = sum(runs)
    if total != height * width:
        raise InvalidInputError(
            f"rle['counts'] covers {total} pixels but size {[height, width]} has "
            f"{height * width}. The size and counts belong to different masks (or H and W are "
            f"swapped, or the counts were truncated)."
        )


def _parse_compressed_runs(counts: bytes) -> list[int]:
    """Run lengths of COCO compressed counts; used only to validate them before pycocotools.

    Mirrors ``rleFrString`` of the COCO ``maskApi.c``: each value is written in 6-bit groups
    (5 data bits + a continuation bit) offset by 48, the last group sign-extends, and from the
    fourth value on the value is a delta from the value two places earlier.
    """
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts):
                raise InvalidInputError(
                    "rle['counts'] ends in the middle of a value; the compressed string was "
                    "truncated."
                )
            code = counts[position] - _FIRST_CODE_CHAR
            if not 0 <= code < _CODE_CHAR_COUNT:
                raise InvalidInputError(
                    f"rle['counts'] has the invalid character {chr(counts[position])!r} at "
                    f"position {position}; COCO compressed counts use only '0' to 'o'."
                )
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value -= 1 << (5 * shift)  # sign extension
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise InvalidInputError(
                f"rle['counts'] decodes to a negative run length ({value}) at run {len(runs)}; "
                f"the compressed string is corrupted."
            )
        runs.append(value)
    return runs
