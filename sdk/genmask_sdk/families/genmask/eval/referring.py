"""Referring-segmentation evaluation over any predictor (PyTorch reference, Segmenter backends)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from genmask_sdk.data import ABSENT_KIND, ReferringDataset
from genmask_sdk.metrics import SegmentationScores

# (image uint8 HxWx3, prompts) -> logits (P, H, W) float array; mask = logits > 0
Predictor = Callable[[np.ndarray, Sequence[str]], np.ndarray]

HELD_OUT_SEED = 10_000  # training uses seeds 0 (scenes) and 1 (captions)


def mask_score(logits: np.ndarray) -> float:
    """The SDK's result score: mean ``sigmoid(logits)`` over the mask's pixels (logit > 0), 0.0
    for an empty mask (same definition as ``MaskResult.score``)."""
    inside = logits > 0
    if not inside.any():
        return 0.0
    return float(np.mean(1.0 / (1.0 + np.exp(-logits[inside].astype(np.float64)))))


@dataclass
class ReferringReport:
    """Scores of one predictor on scenes with present and absent targets.

    ``present``: IoU of expressions whose target is in the scene, grouped by kind (the overall
    mIoU is over present targets only). Absent targets (empty ground truth) are counted apart:
    a prediction is right when its mask is empty. ``present_scores`` / ``absent_scores`` hold
    each prediction's score (see :func:`mask_score`).
    """

    present: SegmentationScores = field(default_factory=SegmentationScores)
    by_size: SegmentationScores = field(default_factory=SegmentationScores)
    by_objects: SegmentationScores = field(default_factory=SegmentationScores)
    present_empty: int = 0
    absent: int = 0
    absent_with_mask: int = 0
    present_scores: list = field(default_factory=list)
    absent_scores: list = field(default_factory=list)

    def add(self, logits: np.ndarray, gt: np.ndarray, kind: str, n_objects: int | None = None) -> None:
        """One prediction: logits (H, W) float (mask = logits > 0), ground truth (H, W) bool,
        the expression's kind, and the number of objects in its scene (for ``by_objects``)."""
        found = bool((logits > 0).any())
        if kind == ABSENT_KIND:
            self.absent += 1
            self.absent_with_mask += found
            self.absent_scores.append(mask_score(logits))
            return
        self.present.add(logits > 0, gt, group=kind)
        self.by_size.add(logits > 0, gt, group=size_bin(gt))
        if n_objects is not None:
            self.by_objects.add(logits > 0, gt, group=f"{n_objects} object{'s' * (n_objects > 1)}")
        self.present_empty += not found
        self.present_scores.append(mask_score(logits))

    def summary(self) -> dict:
        """Plain dict: ``present`` (SegmentationScores.summary()), ``empty_for_present`` and
        ``mask_for_absent`` rates in [0, 1], counts, and the score's separation (AUROC of score
        between present and absent targets; NaN without both)."""
        return {
            "present": self.present.summary(),
            "by_size": self.by_size.summary(),
            "by_objects": self.by_objects.summary(),
            "present_count": self.present.count,
            "empty_for_present": self.present_empty / max(1, self.present.count),
            "absent_count": self.absent,
            "mask_for_absent": self.absent_with_mask / self.absent if self.absent else float("nan"),
            "score_mean_present": float(np.mean(self.present_scores)) if self.present_scores else float("nan"),
            "score_mean_absent": float(np.mean(self.absent_scores)) if self.absent_scores else float("nan"),
            "score_auroc_present_vs_absent": _auroc(self.present_scores, self.absent_scores),
        }


def size_bin(gt: np.ndarray) -> str:
    """Target size class by the share of the image it covers: small < 2 % <= medium < 6 % <= large."""
    share = float(np.mean(gt))
    return "small (<2 %)" if share < 0.02 else "medium (2-6 %)" if share < 0.06 else "large (>=6 %)"


def _auroc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting half."""
    if not len(positives) or not len(negatives):
        return float("nan")
    pos, neg = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg))


def evaluate_scenes(predict: Predictor, scenes: Iterable, total: int | None = None,
                    progress: bool = True, desc: str = "evaluate") -> ReferringReport:
    """Score every expression of every scene: present targets by kind, absent ones apart."""
    report = ReferringReport()
    for scene in tqdm(scenes, total=total, desc=desc, disable=not progress):
        if not scene.expressions:
            continue
        logits = np.asarray(predict(scene.image, [e.text for e in scene.expressions]))
        for expression, row in zip(scene.expressions, logits):
            report.add(row, np.asarray(expression.mask, dtype=bool), expression.kind, len(scene.objects))
    return report


def held_out_scenes(n_scenes: int = 500, seed: int = HELD_OUT_SEED, size: int = 128) -> ReferringDataset:
    """The held-out split: scenes from a seed the demo training never used."""
    return ReferringDataset(seed, n_scenes, size)


def breakdown_table(scores: SegmentationScores, label: str) -> str:
    """Markdown table of one SegmentationScores' groups: n, mIoU, oIoU."""
    lines = [f"| {label} | n | mIoU | oIoU |", "|---|---:|---:|---:|"]
    groups = scores.summary()["groups"]
    for name in sorted(groups):
        lines.append(f"| {name} | {groups[name]['count']} | {groups[name]['miou']:.3f} | {groups[name]['oiou']:.3f} |")
    return "\n".join(lines)


def scores_table(columns: dict[str, "SegmentationScores | ReferringReport"]) -> str:
    """Markdown table: one row per expression kind (and overall), mIoU / oIoU per column; for
    reports, present targets only, followed by the absent-target and empty-mask rates."""
    reports = columns
    columns = {name: c.present if isinstance(c, ReferringReport) else c for name, c in columns.items()}
    kinds = sorted({g for s in columns.values() for g in s.groups})
    header = "| expressions | n | " + " | ".join(f"{name} mIoU | {name} oIoU" for name in columns) + " |"
    rule = "|---|---:|" + "---:|---:|" * len(columns)
    lines = [header, rule]
    first = next(iter(columns.values()))
    for kind in [None, *kinds]:
        count = first.count if kind is None else first.summary()["groups"][kind]["count"]
        cells = []
        for scores in columns.values():
            part = scores.summary() if kind is None else scores.summary()["groups"][kind]
            cells.append(f"{part['miou']:.3f} | {part['oiou']:.3f}")
        lines.append(f"| {kind or '**all present**'} | {count} | " + " | ".join(cells) + " |")
    if all(isinstance(r, ReferringReport) for r in reports.values()):
        summaries = [r.summary() for r in reports.values()]
        lines.append(f"| absent targets: mask predicted | {summaries[0]['absent_count']} | "
                     + " | ".join(f"{s['mask_for_absent']:.3f} | " for s in summaries) + " |")
        lines.append(f"| present targets: empty mask | {summaries[0]['present_count']} | "
                     + " | ".join(f"{s['empty_for_present']:.3f} | " for s in summaries) + " |")
    return "\n".join(lines)
