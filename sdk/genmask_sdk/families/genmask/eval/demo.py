"""Evaluate a checkpoint on held-out procedural scenes: ``python -m genmask_sdk.families.genmask.eval.demo``.

Prints (and optionally writes) a Markdown table of mIoU and oIoU, overall and per expression kind,
for the PyTorch reference of the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from genmask_sdk.io import atomic_write_text
from genmask_sdk.families.genmask.modeling import GenMaskModel
from genmask_sdk.families.genmask.eval.referring import (
    HELD_OUT_SEED,
    breakdown_table,
    evaluate_scenes,
    held_out_scenes,
    scores_table,
)


def reference_predictor(model: GenMaskModel):
    """(image uint8 HxWx3, prompts) -> logits (P, H, W) numpy, through the PyTorch reference."""

    def predict(image: np.ndarray, prompts):
        return model.segment(image, list(prompts)).cpu().numpy()

    return predict


def evaluate_checkpoint(checkpoint: str = "demo", n_scenes: int = 500, seed: int = HELD_OUT_SEED,
                        progress: bool = True) -> dict:
    model = GenMaskModel.from_pretrained(checkpoint)
    size = model.config.resolution
    started = time.time()
    report = evaluate_scenes(reference_predictor(model), held_out_scenes(n_scenes, seed, size), total=n_scenes,
                             progress=progress)
    return {"report": report, "seconds": time.time() - started, "checkpoint": str(checkpoint)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genmask_sdk.families.genmask.eval.demo", description=__doc__)
    parser.add_argument("--checkpoint", default="demo", help="'demo', a checkpoint directory or hub id")
    parser.add_argument("--scenes", type=int, default=500, help="number of held-out scenes")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out seed (training used 0 and 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table (and .json) here")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = evaluate_checkpoint(args.checkpoint, args.scenes, args.seed)
    report = result["report"]
    summary = report.summary()
    table = "\n\n".join([
        scores_table({"PyTorch fp32": report}),
        breakdown_table(report.by_size, "target size (present)"),
        breakdown_table(report.by_objects, "objects in the scene (present)"),
        f"Score (mean sigmoid inside the mask, 0 for an empty mask): mean {summary['score_mean_present']:.3f} for "
        f"present targets, {summary['score_mean_absent']:.3f} for absent ones; AUROC present vs absent "
        f"{summary['score_auroc_present_vs_absent']:.3f}.",
    ])
    print(table)
    print(f"\n{args.scenes} scenes from seed {args.seed}, {result['seconds']:.1f} s")
    if args.out:
        atomic_write_text(args.out, table + "\n")
        atomic_write_text(args.out.with_suffix(".json"), json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
