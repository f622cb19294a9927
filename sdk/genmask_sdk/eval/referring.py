"""Referring-segmentation evaluation over any predictor (PyTorch reference, Segmenter backends)."""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from ..data import ReferringDataset
from ..metrics import SegmentationScores

# (image uint8 HxWx3, prompts) -> logits (P, H, W) float array; mask = logits > 0
Predictor = Callable[[np.ndarray, Sequence[str]], np.ndarray]

HELD_OUT_SEED = 10_000  # training uses seeds 0 (scenes) and 1 (captions)


def evaluate_scenes(predict: Predictor, scenes: Iterable, total: int | None = None,
                    progress: bool = True, desc: str = "evaluate") -> SegmentationScores:
    """Score every expression of every scene, grouped by expression kind."""
    scores = SegmentationScores()
    for scene in tqdm(scenes, total=total, desc=desc, disable=not progress):
        if not scene.expressions:
            continue
        logits = np.asarray(predict(scene.image, [e.text for e in scene.expressions]))
        for expression, row in zip(scene.expressions, logits):
            scores.add(row > 0, np.asarray(expression.mask, dtype=bool), group=expression.kind)
    return scores


def held_out_scenes(n_scenes: int = 500, seed: int = HELD_OUT_SEED, size: int = 128) -> ReferringDataset:
    """The held-out split: scenes from a seed the demo training never used."""
    return ReferringDataset(seed, n_scenes, size)


def scores_table(columns: dict[str, SegmentationScores]) -> str:
    """Markdown table: one row per expression kind (and overall), mIoU / oIoU per column."""
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
        lines.append(f"| {kind or '**all**'} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
