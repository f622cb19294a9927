"""The referring evaluation's report: present targets scored by IoU, absent ones by whether a mask
was predicted, the result score's separation, and the Markdown tables."""

from __future__ import annotations

import numpy as np
import pytest

from genmask_sdk.data import ABSENT_KIND
from genmask_sdk.families.genmask.eval.referring import (
    ReferringReport,
    breakdown_table,
    evaluate_scenes,
    held_out_scenes,
    mask_score,
    scores_table,
)


def square(on: bool, value: float = 4.0) -> np.ndarray:
    logits = np.full((8, 8), -value, dtype=np.float32)
    if on:
        logits[2:6, 2:6] = value
    return logits


def test_mask_score_is_the_mean_sigmoid_inside_and_zero_when_empty():
    assert mask_score(square(False)) == 0.0
    assert mask_score(square(True, 4.0)) == pytest.approx(1 / (1 + np.exp(-4.0)))


def test_present_and_absent_are_counted_apart():
    report = ReferringReport()
    gt = square(True) > 0
    report.add(square(True), gt, "attribute", 2)  # right
    report.add(square(False), gt, "relation", 3)  # empty for a present target
    report.add(square(False), np.zeros((8, 8), bool), ABSENT_KIND)  # right: nothing
    report.add(square(True, 0.5), np.zeros((8, 8), bool), ABSENT_KIND)  # a mask for nothing
    summary = report.summary()
    assert summary["present_count"] == 2 and summary["absent_count"] == 2
    assert summary["present"]["miou"] == pytest.approx(0.5)  # absent ones are not in the mIoU
    assert summary["empty_for_present"] == pytest.approx(0.5) and summary["mask_for_absent"] == pytest.approx(0.5)
    assert set(summary["present"]["groups"]) == {"attribute", "relation"}
    assert set(summary["by_objects"]["groups"]) == {"2 objects", "3 objects"}
    assert set(summary["by_size"]["groups"]) == {"large (>=6 %)"}  # 16 of 64 pixels
    # scores: present 0.982 and 0; absent 0 and 0.62 -> pairs: 2 wins, 1 tie (0 vs 0), 1 loss
    assert summary["score_auroc_present_vs_absent"] == pytest.approx((2 + 0.5) / 4)
    table = scores_table({"model": report})
    assert "| **all present** | 2 |" in table and "| absent targets: mask predicted | 2 | 0.500 |" in table
    assert "| relation | 1 |" in breakdown_table(report.present, "kind")


def test_held_out_scenes_carry_absent_targets_and_the_evaluation_sees_them():
    scenes = list(held_out_scenes(30, size=64))
    kinds = [e.kind for s in scenes for e in s.expressions]
    assert ABSENT_KIND in kinds

    def nothing(image, prompts):  # predicts an empty mask for every prompt
        return np.full((len(prompts), *image.shape[:2]), -1.0, dtype=np.float32)

    summary = evaluate_scenes(nothing, scenes, progress=False).summary()
    assert summary["absent_count"] == kinds.count(ABSENT_KIND) and summary["mask_for_absent"] == 0.0
    assert summary["empty_for_present"] == 1.0 and summary["present"]["miou"] == 0.0
