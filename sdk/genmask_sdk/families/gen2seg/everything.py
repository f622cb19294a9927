"""*Segment everything* on a gen2seg instance colour map: a grid of single-point prompts.

Like SAM's automatic mask generator, with the steps adapted to colour maps:

1. **Grid**: ``grid × grid`` points at the centres of equal cells, rounded to the nearest pixel
   (so a point never sits exactly between two pixels), duplicates removed.
2. **Query colour**: the Gaussian-weighted mean colour around the point
   (:func:`~genmask_sdk.families.gen2seg.prompts.query_color`), as for a user's click. **Edge points**:
   when no pixel of the map is within ``max_query_gap`` RGB units of that colour, the Gaussian
   window straddles an edge and averages colours into one that exists nowhere; the unclamped
   similarity would then accept a wide range of colours (prompts module docs), so such a point
   prompts with its own pixel's colour instead. Inside a flat region the gap is 0. (On a flat
   map this also finds regions narrower than the Gaussian window, about 6 sigma.)
3. **Skip background**: a point whose query colour has a Euclidean norm below
   ``background_level`` RGB units (default 10, about 2 % of white's norm 441.7) is on the black
   background: gen2seg paints the background (0, 0, 0), and decoded maps are rarely exactly 0.
4. **Prompt**: one positive point, exactly as :func:`~genmask_sdk.families.gen2seg.prompts
   .point_prompt_mask`, except that the query colour is rounded to 0.01 RGB units so that all
   the points on one flat region share one score computation. With ``config.connected`` (the
   default) the candidate is the connected part of that mask holding the point, so two objects
   of one colour are two candidates.
5. **Quality**: ``stability`` = IoU of the masks thresholded at ``threshold + stability_offset``
   and at ``threshold − stability_offset`` (lower bound clipped at 0), both on the final score in
   0–255 units and within the candidate's connected parts; the high mask lies inside the low one,
   so it is ``area(high) / area(low)``. ``score`` = mean of the score map ([0, 1]) over the mask.
   Masks with fewer than ``min_area`` pixels, ``stability < min_stability``, or whose mean colour
   is background (norm below ``background_level``) are dropped. The stability filter is off by
   default (``min_stability=0``): on held-in validation scenes of the demo model, a map whose
   object colours vary by a few RGB units inside an object gives true objects stabilities far
   below 0.9 (the earlier default), and the filter discarded nearly all of them
   (benchmarks/README.md).
6. **Suppress**: greedy, by descending (score, stability, area): a mask is dropped when its IoU
   with an already kept mask exceeds ``iou_dedup``, or when more than ``max_overlap`` of its
   area lies inside one (a fragment of a kept object: a noisy map gives an object several
   slightly different colours, and a point prompt on each selects a part of it).
7. **Sort** by area, largest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from genmask_sdk.errors import ConfigError, InputTypeError
from genmask_sdk.families.gen2seg.prompts import (
    ColorMap,
    PromptConfig,
    _part_labels,
    _query_color,
    as_color_map,
    colour_distance,
    min_colour_distance,
    parts_touching,
    score_map_255,
    similarity_from_distance,
)

__all__ = ["InstanceMask", "MAX_GRID", "segment_everything"]

#: The largest grid (points per side): 64² = 4096 single-point prompts, at most one full-map pass
#: per distinct query colour. Larger grids are refused (a typed error) rather than run for hours.
MAX_GRID = 64


@dataclass(frozen=True)
class InstanceMask:
    """One object found by :func:`segment_everything`.

    mask: bool H×W. score: mean of the [0, 1] score map over the mask. stability: IoU of the
    masks at threshold ± offset, in [0, 1]. point: (x, y) pixel of the first grid point that
    produced the mask (x right, y down). area: mask pixels. bbox: (x0, y0, x1, y1), inclusive
    x0/y0, exclusive x1/y1, in pixels (``mask[y0:y1, x0:x1]`` holds the whole mask).
    """

    mask: np.ndarray
    score: float
    stability: float
    point: tuple[int, int]
    area: int
    bbox: tuple[int, int, int, int]


def grid_points(height: int, width: int, grid: int) -> list[tuple[int, int]]:
    """``grid × grid`` cell centres as integer (x, y) pixels, row by row (y, then x), no duplicates."""
    xs = np.clip(np.rint((np.arange(grid) + 0.5) * width / grid - 0.5), 0, width - 1).astype(int)
    ys = np.clip(np.rint((np.arange(grid) + 0.5) * height / grid - 0.5), 0, height - 1).astype(int)
    return list(dict.fromkeys((int(x), int(y)) for y in ys for x in xs))


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a non-empty bool mask: inclusive start, exclusive end, pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def stability_score(score_255: np.ndarray, threshold: float, offset: float,
                    within: np.ndarray | None = None) -> float:
    """IoU between the masks ``score_255 > threshold + offset`` and ``> max(threshold − offset, 0)``
    (the first lies inside the second), counted within the bool mask ``within`` when given (its
    connected parts: the low mask's parts that touch it)."""
    low_mask = score_255 > max(threshold - offset, 0.0)
    high_mask = score_255 > threshold + offset
    if within is not None:
        low_mask = parts_touching(low_mask, within)
        high_mask &= low_mask
    low = np.count_nonzero(low_mask)
    return np.count_nonzero(high_mask) / low if low else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def _check_parameters(grid: Any, iou_dedup: Any, min_area: Any, stability_offset: Any, min_stability: Any,
                      background_level: Any, max_query_gap: Any) -> None:
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or not 1 <= grid <= MAX_GRID:
        raise ConfigError(f"grid must be an integer in [1, {MAX_GRID}] (points per side; {MAX_GRID}² = "
                          f"{MAX_GRID * MAX_GRID} point prompts at most), got {grid!r}")
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 0:
        raise ConfigError(f"min_area must be an integer >= 0 (pixels), got {min_area!r}")
    for name, value, low, high in (("iou_dedup", iou_dedup, 0.0, 1.0), ("min_stability", min_stability, 0.0, 1.0),
                                   ("stability_offset", stability_offset, 0.0, 255.0),
                                   ("background_level", background_level, 0.0, 442.0),
                                   ("max_query_gap", max_query_gap, 0.0, 442.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not low <= value <= high:
            raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")


def segment_everything(color_map: Any, config: PromptConfig = PromptConfig(), grid: int = 16,
                       iou_dedup: float = 0.7, min_area: int = 16, stability_offset: float = 2.0,
                       min_stability: float = 0.0, background_level: float = 10.0,
                       max_query_gap: float = 1.0, max_overlap: float = 0.5) -> list[InstanceMask]:
    """Every object of a gen2seg instance colour map, each once, largest first.

    color_map: H×W×3 RGB, uint8 or float in [0, 255]. config: the point-prompt parameters
    (``config.connected``: a candidate is the connected part holding its grid point).
    grid: points per side, 1..``MAX_GRID``. iou_dedup: masks overlapping a better one by more than
    this IoU are dropped. max_overlap: masks with more than this fraction of their area inside a
    better one are dropped. min_area: smallest kept mask, pixels. stability_offset, min_stability:
    see the module docs (offset in 0–255 score units around ``config.threshold``; 0 = no stability
    filter). background_level: colour norm (0–255 RGB units) below which a query or a mask's mean
    colour counts as background. max_query_gap: RGB distance from a query to the nearest colour in
    the map above which the point is taken as lying on an edge and prompts with its own pixel's colour.
    Returns a list of :class:`InstanceMask` (empty for an all-black map).

    Memory: one full-size score map at a time (the grid points are grouped by query colour) and
    candidates cropped to their bounding boxes; only the masks returned are full size.
    """
    if not isinstance(config, PromptConfig):
        raise InputTypeError(f"config must be a PromptConfig, got {type(config).__name__}")
    _check_parameters(grid, iou_dedup, min_area, stability_offset, min_stability, background_level, max_query_gap)
    _check_fraction("max_overlap", max_overlap)
    cmap = as_color_map(color_map)
    candidates: dict[tuple, _Candidate | None] = {}
    for query, points in _points_by_query(cmap, int(grid), config, background_level, max_query_gap).items():
        _query_candidates(cmap, query, points, config, stability_offset, candidates)
    kept = [c for c in candidates.values() if c is not None and c.area >= min_area and c.stability >= min_stability
            and not _is_background(cmap, c, background_level)]
    kept.sort(key=lambda c: c.order)  # the grid order the candidates were first met in (ties in suppression)
    return [c.full() for c in sorted(_suppress(kept, iou_dedup, max_overlap), key=lambda c: -c.area)]


@dataclass(frozen=True)
class _Candidate:
    """A candidate mask cropped to its bounding box: ``crop`` bool (y1 - y0, x1 - x0) at ``bbox``
    (x0, y0, x1, y1) of an (H, W) map; ``order`` = index of the grid point that first produced it."""

    crop: np.ndarray
    bbox: tuple[int, int, int, int]
    shape: tuple[int, int]
    score: float
    stability: float
    point: tuple[int, int]
    area: int
    order: int

    def full(self) -> InstanceMask:
        mask = np.zeros(self.shape, dtype=bool)
        x0, y0, x1, y1 = self.bbox
        mask[y0:y1, x0:x1] = self.crop
        return InstanceMask(mask=mask, score=self.score, stability=self.stability, point=self.point,
                            area=self.area, bbox=self.bbox)


def _points_by_query(cmap: ColorMap, grid: int, config: PromptConfig, background_level: float,
                     max_query_gap: float) -> dict[tuple[float, ...], list[tuple[int, tuple[int, int]]]]:
    """Query colour -> [(grid index, (x, y)), ...] of the grid points that prompt with it, in grid
    order; background points left out (module docs, steps 1–3)."""
    resolved: dict[tuple[float, ...], tuple[float, ...]] = {}   # Gaussian query -> query used
    groups: dict[tuple[float, ...], list[tuple[int, tuple[int, int]]]] = {}
    for index, (x, y) in enumerate(grid_points(cmap.height, cmap.width, grid)):
        gaussian = _rounded_key(_query_color(cmap, x, y, config.sigma))
        if gaussian not in resolved:
            resolved[gaussian] = _query_for_point(cmap, gaussian, (x, y), max_query_gap)
        query = resolved[gaussian]
        if np.linalg.norm(query) >= background_level:
            groups.setdefault(query, []).append((index, (x, y)))
    return groups


def _query_candidates(cmap: ColorMap, query: tuple[float, ...], points: list[tuple[int, tuple[int, int]]],
                      config: PromptConfig, stability_offset: float, candidates: dict) -> None:
    """Add the candidates of the grid ``points`` that share ``query`` (one score map for all of them);
    ``candidates`` is keyed by (query, connected part or whole-mask key)."""
    score = similarity_from_distance(colour_distance(cmap, np.array(query)), config, in_place=True)
    final = score_map_255(score, None, cmap, config)
    del score
    mask = final > config.threshold
    if not config.connected:
        key = (query, _mask_key(mask))
        if key not in candidates:
            index, point = points[0]
            candidates[key] = _candidate(final, mask, point, index, config, stability_offset, None)
        return
    labels = _part_labels(mask) if mask.any() else None
    for index, point in points:
        label = _label_at(labels, mask, point)
        key = (query, label)
        if key not in candidates:
            part = (labels == label) if label else np.zeros(mask.shape, dtype=bool)
            candidates[key] = _candidate(final, part, point, index, config, stability_offset, part)


def _label_at(labels: np.ndarray | None, mask: np.ndarray, point: tuple[int, int]) -> int:
    """The connected part holding ``point``, or the part of the mask pixel nearest to it (as
    ``parts_holding``); 0 for an empty mask."""
    if labels is None:
        return 0
    x, y = point
    label = int(labels[y, x])
    if label == 0:
        rows, cols = np.nonzero(mask)
        nearest = int(np.argmin((cols - x) ** 2 + (rows - y) ** 2))
        label = int(labels[rows[nearest], cols[nearest]])
    return label


def _check_fraction(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")


def _mask_key(mask: np.ndarray) -> tuple[int, int]:
    """Identifies a candidate among those of one query: (first pixel index, area)."""
    flat = np.flatnonzero(mask.ravel())
    return (int(flat[0]), int(flat.size)) if flat.size else (-1, 0)


def _rounded_key(colour: np.ndarray) -> tuple[float, ...]:
    return tuple(float(value) for value in np.round(colour, 2))


def _query_for_point(cmap: ColorMap, gaussian: tuple[float, ...], point: tuple[int, int],
                     max_query_gap: float) -> tuple[float, ...]:
    """The Gaussian query colour if some pixel is within ``max_query_gap`` of it, else the point's
    own pixel colour (an edge point, see the module docs)."""
    if min_colour_distance(cmap, np.array(gaussian)) <= max_query_gap:
        return gaussian
    x, y = point
    return _rounded_key(cmap.colors(y, x))


def _candidate(final: np.ndarray, mask: np.ndarray, point: tuple[int, int], order: int, config: PromptConfig,
               stability_offset: float, within: np.ndarray | None) -> _Candidate | None:
    """The candidate ``mask`` (bool H×W) of one grid point, scored on ``final`` (0–255): score =
    mean of ``final / 255`` over the mask; stability = area above ``threshold + offset`` over the
    area above ``max(threshold − offset, 0)``, both counted within ``within``'s connected parts
    (``config.connected``) or over the whole map. Kept cropped to its bounding box."""
    area = int(np.count_nonzero(mask))
    if area == 0:
        return None
    x0, y0, x1, y1 = mask_bbox(mask)
    crop = mask[y0:y1, x0:x1].copy()
    return _Candidate(crop=crop, bbox=(x0, y0, x1, y1), shape=mask.shape,
                      score=float(final[y0:y1, x0:x1][crop].mean() / 255.0),
                      stability=float(stability_score(final, config.threshold, stability_offset, within)),
                      point=point, area=area, order=order)


def _is_background(cmap: ColorMap, candidate: _Candidate, background_level: float) -> bool:
    x0, y0, x1, y1 = candidate.bbox
    return float(np.linalg.norm(cmap.colors(slice(y0, y1), slice(x0, x1))[candidate.crop].mean(axis=0))) \
        < background_level


def _overlap(a: _Candidate, b: _Candidate) -> int:
    """Pixels two cropped candidates share."""
    x0, y0 = max(a.bbox[0], b.bbox[0]), max(a.bbox[1], b.bbox[1])
    x1, y1 = min(a.bbox[2], b.bbox[2]), min(a.bbox[3], b.bbox[3])
    if x0 >= x1 or y0 >= y1:
        return 0
    crop_a = a.crop[y0 - a.bbox[1]:y1 - a.bbox[1], x0 - a.bbox[0]:x1 - a.bbox[0]]
    crop_b = b.crop[y0 - b.bbox[1]:y1 - b.bbox[1], x0 - b.bbox[0]:x1 - b.bbox[0]]
    return int(np.count_nonzero(crop_a & crop_b))


def _suppress(candidates: list[_Candidate], iou_dedup: float, max_overlap: float) -> list[_Candidate]:
    """Greedy, by descending (score, stability, area): a candidate is dropped when its IoU with a
    kept mask exceeds ``iou_dedup`` or more than ``max_overlap`` of its area lies inside one."""
    kept: list[_Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (-c.score, -c.stability, -c.area)):
        if all(_iou(candidate, other, shared) <= iou_dedup and shared <= max_overlap * candidate.area
               for other in kept for shared in (_overlap(candidate, other),)):
            kept.append(candidate)
    return kept


def _iou(a: _Candidate, b: _Candidate, shared: int) -> float:
    union = a.area + b.area - shared
    return shared / union if union else 0.0
