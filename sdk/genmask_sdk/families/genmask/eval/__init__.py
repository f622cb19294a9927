"""Accuracy evaluation (held-out procedural scenes; RefCOCO-style data in benchmarks/)."""

from genmask_sdk.families.genmask.eval.referring import (
    HELD_OUT_SEED,
    evaluate_scenes,
    held_out_scenes,
    scores_table,
)

__all__ = ["HELD_OUT_SEED", "evaluate_scenes", "held_out_scenes", "scores_table"]
