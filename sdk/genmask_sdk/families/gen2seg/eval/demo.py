"""Evaluate a gen2seg model on held-out instance scenes: ``python -m genmask_sdk.families.gen2seg.eval.demo``.

Everything goes through ``InstanceSegmenter`` (PyTorch: ``from_pretrained``; engines:
``from_engines`` with ``--engines DIR --precision P...``) and its own prompt code
(``predict(points=...)``, ``segment_everything()``), on ``--scenes`` scenes of the held-out seed
(``genmask_sdk.data.instances.HELD_OUT_SEED``, outside the training seeds). Per ground-truth
instance:

* **single-point IoU**: one positive point at the instance's most interior pixel (the maximum of
  the Euclidean distance transform of its mask, the image border counting as outside; ties: the
  first in row-major order);
* **multi-point IoU**: ``MULTI_POINTS`` positive points: the most interior pixel, then greedily
  the pixel farthest from the points chosen so far among the *deep interior* (distance transform
  >= half its maximum);
* **segment-everything recall@τ**: whether some mask of ``segment_everything()`` (default
  options) overlaps the instance with IoU >= τ, for τ = 0.5 and 0.75.

mIoU is the mean over instances (not over scenes). Results are given overall and by size class
(``small`` < 2 %, ``medium`` 2–6 %, ``large`` >= 6 % of the image area; ``data.instances``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from genmask_sdk.data.instances import (
    HELD_OUT_SEED,
    INSTANCE_SIZE_CLASSES,
    InstanceScene,
    held_out_instance_scenes,
)
from genmask_sdk.errors import ConfigError
from genmask_sdk.io import atomic_write_text

MULTI_POINTS = 3
RECALL_THRESHOLDS = (0.5, 0.75)
DEFAULT_OUT = Path("benchmarks/results/gen2seg_demo_eval.json")


# ------------------------------------------------------------------------------------ points
def distance_map(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest pixel outside (the border counts as
    outside): float64 (H, W), 0 outside the mask."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    return ndimage.distance_transform_edt(padded)[1:-1, 1:-1]


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the most interior pixel of a non-empty bool mask (first maximum, row-major)."""
    row, col = np.unravel_index(int(np.argmax(distance_map(mask))), mask.shape)
    return int(col), int(row)


def interior_points(mask: np.ndarray, count: int = MULTI_POINTS) -> list[tuple[int, int]]:
    """Up to ``count`` distinct (x, y) interior points: the most interior pixel, then greedily the
    deep-interior pixel (distance >= half the maximum) farthest from those already chosen."""
    depth = distance_map(mask)
    rows, cols = np.nonzero(depth >= max(depth.max() / 2.0, min(1.0, depth.max())))
    candidates = np.stack([cols, rows], axis=1).astype(np.float64)
    chosen = [interior_point(mask)]
    nearest = np.hypot(*(candidates - chosen[0]).T)
    while len(chosen) < count and nearest.max() > 0:
        best = int(np.argmax(nearest))
        chosen.append((int(candidates[best, 0]), int(candidates[best, 1])))
        nearest = np.minimum(nearest, np.hypot(*(candidates - chosen[-1]).T))
    return chosen


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (0 when both are empty)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


# ------------------------------------------------------------------------------------ evaluation
def evaluate_scene(segmenter: Any, scene: InstanceScene) -> list[dict[str, Any]]:
    """One record per instance: size class, area, single / multi IoU, best segment-everything IoU."""
    segmenter.set_image(scene.image)
    found = [result.mask for result in segmenter.segment_everything()]
    records = []
    for obj in scene.objects:
        single = segmenter.predict(points=[interior_point(obj.mask)]).mask
        multi = segmenter.predict(points=interior_points(obj.mask)).mask
        records.append({"size": obj.size_class, "area": obj.area_px, "single_iou": iou(single, obj.mask),
                        "multi_iou": iou(multi, obj.mask),
                        "everything_iou": max((iou(m, obj.mask) for m in found), default=0.0)})
    segmenter.reset_image()
    return records


def evaluate(segmenter: Any, scenes: Iterable[InstanceScene], total: int | None = None,
             progress: bool = True) -> list[dict[str, Any]]:
    """Instance records over ``scenes`` (see ``evaluate_scene``)."""
    from tqdm.auto import tqdm

    records: list[dict[str, Any]] = []
    for scene in tqdm(scenes, total=total, desc="scenes", disable=not progress):
        records.extend(evaluate_scene(segmenter, scene))
    return records


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Metrics overall and per size class: ``instances``, ``single_point_miou``,
    ``multi_point_miou``, ``recall@0.5``, ``recall@0.75`` (floats in [0, 1])."""
    groups = {"all": records, **{size: [r for r in records if r["size"] == size] for size in INSTANCE_SIZE_CLASSES}}
    summary = {}
    for name, group in groups.items():
        if not group:
            summary[name] = {"instances": 0}
            continue
        row = {"instances": len(group),
               "single_point_miou": float(np.mean([r["single_iou"] for r in group])),
               "multi_point_miou": float(np.mean([r["multi_iou"] for r in group]))}
        for threshold in RECALL_THRESHOLDS:
            row[f"recall@{threshold}"] = float(np.mean([r["everything_iou"] >= threshold for r in group]))
        summary[name] = row
    return summary


def prompt_settings(segmenter: Any) -> dict[str, Any]:
    """The point-prompt parameters ``segmenter`` runs with (and where they came from: the
    checkpoint's ``prompt_config.json`` or the published defaults) and the default
    segment-everything options the evaluation uses."""
    import inspect

    from genmask_sdk.families.gen2seg.everything import segment_everything

    everything = {name: p.default for name, p in inspect.signature(segment_everything).parameters.items()
                  if name not in ("color_map", "config")}
    info = segmenter.describe()
    return {"prompt_config": info["prompt_config"], "prompt_config_source": info["prompt_config_source"],
            "segment_everything": everything}


# -------------------------------------------------------------------- prompt defaults (validation)
#: The grid searched when a checkpoint's prompt defaults are chosen: the mask threshold (0-255
#: score units; published: 3) and the joint bilateral filter's colour sigma (published: 75).
PROMPT_GRID: dict[str, tuple[float, ...]] = {"threshold": (3, 6, 10, 15),
                                             "bilateral_sigma_color": (2.5, 5, 10, 25, 75)}


def select_prompt_config(segmenter: Any, scenes: Iterable[InstanceScene],
                         grid: Mapping[str, Iterable[float]] | None = None,
                         base: Any = None) -> tuple[Any, dict[str, Any]]:
    """Choose the point-prompt parameters that maximise single-point mIoU on *validation* scenes.

    ``segmenter``: an ``InstanceSegmenter`` (its colour maps are computed once per scene);
    ``scenes``: validation scenes, never the held-out ones (the caller's choice of seed);
    ``grid``: ``{PromptConfig field: candidate values}`` (default ``PROMPT_GRID``), searched
    exhaustively; ``base``: the ``PromptConfig`` whose other fields are kept (default
    ``PromptConfig()``). Returns ``(best PromptConfig, selection record)``; ties keep the first
    candidate in grid order. The record lists every candidate's mIoU and the instance count.
    """
    import dataclasses
    import itertools

    from genmask_sdk.families.gen2seg.prompts import PromptConfig, point_prompt_mask

    base = PromptConfig() if base is None else base
    grid = {name: [float(v) for v in values] for name, values in (PROMPT_GRID if grid is None else grid).items()}
    unknown = sorted(set(grid) - {f.name for f in dataclasses.fields(PromptConfig)})
    if unknown or not grid or not all(grid.values()):
        raise ConfigError(f"the prompt grid needs PromptConfig fields with at least one value each; got {grid} "
                          f"(unknown: {unknown}).")
    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    configs = [dataclasses.replace(base, **combo) for combo in combos]
    ious: list[list[float]] = [[] for _ in configs]
    for scene in scenes:
        colours = segmenter.colorize(scene.image)
        for obj in scene.objects:
            point = [interior_point(obj.mask)]
            for values, config in zip(ious, configs):
                values.append(iou(point_prompt_mask(colours, point, config=config)[0], obj.mask))
    if not ious[0]:
        raise ConfigError("select_prompt_config got no validation instances.")
    scores = [float(np.mean(values)) for values in ious]
    best = int(np.argmax(scores))
    record = {"metric": "single_point_miou", "grid": grid, "instances": len(ious[0]), "chosen": combos[best],
              "chosen_score": round(scores[best], 4),
              "candidates": [{**combo, "score": round(score, 4)} for combo, score in zip(combos, scores)]}
    return configs[best], record


def markdown_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """One row per (model, size class): the four metrics and the instance count."""
    lines = ["| model | objects | instances | 1-point mIoU | 3-point mIoU | everything R@0.5 | everything R@0.75 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for model, summary in results.items():
        for group, row in summary.items():
            if not row.get("instances"):
                continue
            lines.append(f"| {model} | {group} | {row['instances']} | {row['single_point_miou']:.3f} | "
                         f"{row['multi_point_miou']:.3f} | {row['recall@0.5']:.3f} | {row['recall@0.75']:.3f} |")
    return "\n".join(lines)


def open_segmenters(checkpoint: str | None, engines: Path | None, precisions: list[str]):
    """(label, InstanceSegmenter) pairs: the PyTorch checkpoint, then one per engine precision."""
    from genmask_sdk.families.gen2seg.segmenter import InstanceSegmenter

    if checkpoint:
        yield f"PyTorch fp32 ({checkpoint})", InstanceSegmenter.from_pretrained(checkpoint)
    if engines is not None:
        for precision in precisions:
            yield f"engines {precision}", InstanceSegmenter.from_engines(engines, precision=precision)


def run(checkpoint: str | None, engines: Path | None, precisions: list[str], n_scenes: int, seed: int,
        progress: bool = True) -> dict[str, Any]:
    """Evaluate every requested model on the same scenes; returns the JSON-ready report."""
    scenes = held_out_instance_scenes(n_scenes, seed=seed)
    report: dict[str, Any] = {"scenes": n_scenes, "seed": seed, "prompting": {}, "models": {}, "seconds": {}}
    for label, segmenter in open_segmenters(checkpoint, engines, precisions):
        with segmenter:
            report["prompting"][label] = prompt_settings(segmenter)
            started = time.time()
            records = evaluate(segmenter, scenes, total=n_scenes, progress=progress)
            report["seconds"][label] = round(time.time() - started, 1)
            report["models"][label] = summarise(records)
    base = next(iter(report["models"].values()), None)
    if base and len(report["models"]) > 1:  # engine accuracy relative to the first model (PyTorch)
        report["relative_single_point_miou"] = {
            label: summary["all"]["single_point_miou"] / base["all"]["single_point_miou"]
            for label, summary in report["models"].items()}
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m genmask_sdk.families.gen2seg.eval.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo-gen2seg",
                        help="'demo-gen2seg', a gen2seg checkpoint directory or hub id; '' to skip PyTorch")
    parser.add_argument("--engines", type=Path, default=None, help="a gen2seg engines directory to evaluate too")
    parser.add_argument("--precision", nargs="+", default=["fp32"], help="engine precisions (with --engines)")
    parser.add_argument("--scenes", type=int, default=500, help="held-out scenes")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out seed (outside the training seeds)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report; the Markdown table goes beside it")
    parser.add_argument("--summary", type=Path, default=None,
                        help="also record the PyTorch results under 'eval' in this training_summary.json")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    report = run(args.checkpoint or None, args.engines, args.precision, args.scenes, args.seed)
    table = markdown_table(report["models"])
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2))
    atomic_write_text(args.out.with_suffix(".md"), f"{args.scenes} held-out scenes (seed {args.seed}).\n\n{table}\n")
    if args.summary is not None and report["models"]:
        data = json.loads(args.summary.read_text())
        first = next(iter(report["models"]))
        data["eval"] = {"scenes": args.scenes, "seed": args.seed, "model": first, **report["models"][first]}
        atomic_write_text(args.summary, json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
