"""Input checks shared by the metric and RLE functions.

Every check raises an error from :mod:`genmask_sdk.errors` whose message says what was wrong and
how to fix it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genmask_sdk.errors import InputTypeError, InvalidInputError


def check_binary_mask(mask: Any, name: str = "mask") -> np.ndarray:
    """Return ``mask`` unchanged after checking that it is a non-empty 2-D boolean numpy array.

    Args:
        mask: the candidate mask; must be a ``numpy.ndarray`` of dtype ``bool`` and shape
            ``(H, W)`` with ``H >= 1`` and ``W >= 1``. An all-``False`` mask is valid.
        name: how the argument is called in error messages (``"pred"``, ``"gt"`` ...).

    Raises:
        InputTypeError: ``mask`` is not a numpy array, or its dtype is not ``bool``.
        InvalidInputError: ``mask`` is not 2-D, or has a zero-length axis.
    """
    if not isinstance(mask, np.ndarray):
        hint = ""
        if _looks_like_tensor(mask):
            hint = " (for a torch tensor use `t.detach().cpu().numpy()`)"
        raise InputTypeError(
            f"{name} must be a numpy.ndarray of dtype bool and shape (H, W), got "
            f"{type(mask).__name__}. Convert it with numpy.asarray(...){hint}."
        )
    if mask.dtype != np.bool_:
        raise InputTypeError(
            f"{name} must have dtype bool, got {mask.dtype}. Binarise it explicitly, e.g. "
            f"`{name} > 0.5` for probabilities or `{name} != 0` for 0/1 or 0/255 integer masks."
        )
    if mask.ndim != 2:
        raise InvalidInputError(
            f"{name} must be 2-D with shape (H, W), got shape {tuple(mask.shape)}. For a batch, "
            f"call once per mask; for a (1, H, W) or (H, W, 1) array, drop the singleton axis "
            f"with numpy.squeeze."
        )
    if mask.size == 0:
        raise InvalidInputError(
            f"{name} has a zero-length axis (shape {tuple(mask.shape)}); a mask must be at least "
            f"1x1. An empty mask is an all-False (H, W) array, not a zero-size one."
        )
    return mask


def check_same_shape(pred: np.ndarray, gt: np.ndarray) -> None:
    """Raise :class:`InvalidInputError` if the two (H, W) masks differ in shape."""
    if pred.shape != gt.shape:
        raise InvalidInputError(
            f"pred and gt must have the same (H, W) shape, got pred {tuple(pred.shape)} and gt "
            f"{tuple(gt.shape)}. Resize the prediction to the ground-truth resolution (nearest "
            f"neighbour) before scoring."
        )


def _looks_like_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch")
