"""Intersection-over-union metrics for referring segmentation.

Conventions of the referring-segmentation literature (RefCOCO, RefCOCO+, G-Ref, gRefCOCO):

* **mIoU**, also called **gIoU** (generalised IoU in GRES / gRefCOCO papers): the *mean of the
  per-sample IoU*. Each sample (image-expression pair) counts equally, whatever its object size.
* **oIoU**, also called **cIoU** (cumulative IoU, LAVT / CRIS / GRES papers): the *total
  intersection divided by the total union*, summed over all samples. Large objects weigh more.
* **Pr@X** (precision at threshold X, X in {0.5, 0.6, 0.7, 0.8, 0.9}): the fraction of samples
  whose IoU is at least X (``IoU >= X``, as in the LAVT evaluation code that later work copied).

All values here are fractions in [0, 1]; papers usually print them multiplied by 100.

Empty masks: the IoU of two empty masks (union 0) is defined as **1.0** (the model correctly
predicted "no object", which matters for the no-target expressions of gRefCOCO). An empty
prediction against a non-empty ground truth, or the reverse, has IoU 0.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Hashable, Iterable

import numpy as np

from genmask_sdk.errors import InvalidInputError
from genmask_sdk.metrics._validate import check_binary_mask, check_same_shape

#: Pr@X thresholds reported by RefCOCO papers.
DEFAULT_PRECISION_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)

#: IoU of a sample whose prediction and ground truth are both empty (union == 0).
EMPTY_UNION_IOU: float = 1.0


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts of the intersection and the union of two masks.

    Args:
        pred: predicted mask, ``numpy.ndarray``, dtype ``bool``, shape ``(H, W)``.
        gt: ground-truth mask, same dtype and shape as ``pred``.

    Returns:
        ``(intersection, union)`` as Python ints with ``0 <= intersection <= union <= H * W``.

    Raises:
        InputTypeError: an argument is not a bool numpy array.
        InvalidInputError: an argument is not 2-D, is zero-size, or the shapes differ.
    """
    check_binary_mask(pred, "pred")
    check_binary_mask(gt, "gt")
    check_same_shape(pred, gt)
    intersection = int(np.count_nonzero(pred & gt))
    union = int(np.count_nonzero(pred | gt))
    return intersection, union


def iou_from_counts(intersection: int, union: int) -> float:
    """IoU in [0, 1] from pixel counts; ``union == 0`` (both masks empty) gives 1.0."""
    if union == 0:
        return EMPTY_UNION_IOU
    return intersection / union


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two binary masks.

    Args:
        pred: predicted mask, ``numpy.ndarray``, dtype ``bool``, shape ``(H, W)``.
        gt: ground-truth mask, same dtype and shape as ``pred``.

    Returns:
        IoU as a Python float in [0, 1]. Two empty masks give **1.0** by definition (see the
        module docstring).

    Raises:
        InputTypeError: an argument is not a bool numpy array.
        InvalidInputError: an argument is not 2-D, is zero-size, or the shapes differ.
    """
    return iou_from_counts(*intersection_union(pred, gt))


@dataclass
class _Tally:
    """Running totals of one set of samples (all samples, or one group)."""

    ious: list[float] = field(default_factory=list)
    total_intersection: int = 0
    total_union: int = 0

    def add(self, intersection: int, union: int) -> float:
        iou = iou_from_counts(intersection, union)
        self.ious.append(iou)
        self.total_intersection += intersection
        self.total_union += union
        return iou

    @property
    def count(self) -> int:
        return len(self.ious)

    def mean_iou(self) -> float:
        return math.fsum(self.ious) / self.count if self.count else math.nan

    def cumulative_iou(self) -> float:
        if not self.count:
            return math.nan
        # Every sample had an empty union: same convention as the per-sample IoU.
        return iou_from_counts(self.total_intersection, self.total_union)

    def precision_at(self, thresholds: tuple[float, ...]) -> dict[float, float]:
        if not self.count:
            return {thr: math.nan for thr in thresholds}
        ious = np.asarray(self.ious, dtype=np.float64)
        return {thr: float(np.mean(ious >= thr)) for thr in thresholds}

    def summary(self, thresholds: tuple[float, ...]) -> dict[str, object]:
        miou = self.mean_iou()
        oiou = self.cumulative_iou()
        return {
            "count": self.count,
            "miou": miou,
            "giou": miou,
            "oiou": oiou,
            "ciou": oiou,
            "precision": {
                precision_key(thr): value for thr, value in self.precision_at(thresholds).items()
            },
        }


def precision_key(threshold: float) -> str:
    """Name of a Pr@X entry in :meth:`SegmentationScores.summary`, e.g. ``"Pr@0.5"``."""
    return f"Pr@{threshold:g}"


def _normalise_thresholds(thresholds: float | Iterable[float]) -> tuple[float, ...]:
    if isinstance(thresholds, Real) and not isinstance(thresholds, bool):
        thresholds = (thresholds,)
    try:
        values = tuple(thresholds)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidInputError(
            f"thresholds must be a number or an iterable of numbers in [0, 1], got "
            f"{type(thresholds).__name__}; e.g. (0.5, 0.6, 0.7, 0.8, 0.9)."
        ) from None
    for value in values:
        if (
            not isinstance(value, Real)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not 0.0 <= value <= 1.0
        ):
            raise InvalidInputError(
                f"every IoU threshold must be a finite number in [0, 1], got {value!r}. Pass "
                f"fractions (0.5), not percentages (50)."
            )
    return tuple(float(v) for v in values)


class SegmentationScores:
    """Accumulates per-sample IoU and reports mIoU/gIoU, oIoU/cIoU and Pr@X, overall and per group.

    Feed one (prediction, ground truth) pair per :meth:`add` call. Optionally tag each sample with
    a ``group`` (for example the expression kind ``"spatial"``, or the split ``"testA"``); every
    statistic is then also kept for that group.

    Names (see the module docstring for the literature conventions):

    * :attr:`miou` == :attr:`giou`: mean over samples of the per-sample IoU.
    * :attr:`oiou` == :attr:`ciou`: sum of intersections / sum of unions over all samples.
    * :meth:`precision_at`: fraction of samples with IoU >= threshold.

    All scores are Python floats in [0, 1], or NaN when no sample has been added. A sample whose
    prediction and ground truth are both empty has IoU 1.0 and adds nothing to the cumulative
    totals; if *every* sample is like that, oIoU is 1.0 as well.

    Example::

        scores = SegmentationScores()
        for pred, gt, kind in samples:
            scores.add(pred, gt, group=kind)
        print(scores.summary())
    """

    def __init__(self) -> None:
        self._overall = _Tally()
        self._groups: dict[Hashable, _Tally] = {}

    def add(self, pred: np.ndarray, gt: np.ndarray, group: Hashable | None = None) -> float:
        """Score one sample and add it to the totals (and to ``group``'s totals if given).

        Args:
            pred: predicted mask, ``numpy.ndarray``, dtype ``bool``, shape ``(H, W)``.
            gt: ground-truth mask, same dtype and shape as ``pred``.
            group: optional hashable tag (use a ``str`` if the summary is saved as JSON).

        Returns:
            the sample's IoU, a Python float in [0, 1].
        """
        intersection, union = intersection_union(pred, gt)
        if group is not None:
            self._groups.setdefault(group, _Tally()).add(intersection, union)
        return self._overall.add(intersection, union)

    # --- overall statistics -------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of samples added."""
        return self._overall.count

    @property
    def miou(self) -> float:
        """Mean of the per-sample IoU in [0, 1] (a.k.a. gIoU); NaN if no sample was added."""
        return self._overall.mean_iou()

    @property
    def giou(self) -> float:
        """Alias of :attr:`miou` (the gIoU of GRES / gRefCOCO papers)."""
        return self.miou

    @property
    def oiou(self) -> float:
        """Total intersection / total union in [0, 1] (a.k.a. cIoU); NaN if no sample was added."""
        return self._overall.cumulative_iou()

    @property
    def ciou(self) -> float:
        """Alias of :attr:`oiou` (the cumulative IoU of LAVT / CRIS / GRES papers)."""
        return self.oiou

    @property
    def groups(self) -> tuple[Hashable, ...]:
        """The group tags seen so far, in order of first appearance."""
        return tuple(self._groups)

    def per_sample_ious(self, group: Hashable | None = None) -> np.ndarray:
        """Per-sample IoU values in order of :meth:`add`, float64 array of shape ``(count,)``."""
        return np.asarray(self._tally(group).ious, dtype=np.float64)

    def precision_at(
        self,
        thresholds: float | Iterable[float] = DEFAULT_PRECISION_THRESHOLDS,
        group: Hashable | None = None,
    ) -> dict[float, float]:
        """Pr@X: the fraction of samples with IoU >= X, for each threshold X.

        Args:
            thresholds: one threshold or an iterable of them, each a fraction in [0, 1]; default
                ``(0.5, 0.6, 0.7, 0.8, 0.9)`` as in RefCOCO papers.
            group: restrict to one group (``None``: all samples).

        Returns:
            ``{threshold: precision}`` with float thresholds and precisions in [0, 1] (NaN if the
            selection is empty).

        Raises:
            InvalidInputError: a threshold is outside [0, 1], or ``group`` was never seen.
        """
        return self._tally(group).precision_at(_normalise_thresholds(thresholds))

    def summary(
        self, thresholds: float | Iterable[float] = DEFAULT_PRECISION_THRESHOLDS
    ) -> dict[str, object]:
        """All statistics as a plain dict (JSON-serialisable when group tags are strings).

        Returns::

            {
                "count": int,
                "miou": float, "giou": float,   # same value: mean of per-sample IoU
                "oiou": float, "ciou": float,   # same value: cumulative IoU
                "precision": {"Pr@0.5": float, ..., "Pr@0.9": float},
                "groups": {group: {same keys as above, without "groups"}},
            }

        Scores are fractions in [0, 1] (NaN when there is no sample).
        """
        normalised = _normalise_thresholds(thresholds)
        result = self._overall.summary(normalised)
        result["groups"] = {
            group: tally.summary(normalised) for group, tally in self._groups.items()
        }
        return result

    def _tally(self, group: Hashable | None) -> _Tally:
        if group is None:
            return self._overall
        try:
            return self._groups[group]
        except KeyError:
            raise InvalidInputError(
                f"unknown group {group!r}; groups seen so far: {list(self._groups)}. Pass the "
                f"same tag that was given to add(..., group=...), or None for all samples."
            ) from None

    def __repr__(self) -> str:
        return (
            f"SegmentationScores(count={self.count}, miou={self.miou:.4f}, "
            f"oiou={self.oiou:.4f}, groups={len(self._groups)})"
        )
