"""Accuracy benchmark: mIoU/gIoU and oIoU/cIoU per backend and precision, with fidelity to the
PyTorch fp32 reference.

Datasets: the demo's held-out procedural scenes (``held_out_scenes``: a seed training never used)
and, when ``refer_root`` points at a local copy in the ``refer`` layout, RefCOCO / RefCOCO+ /
RefCOCOg splits (``genmask_sdk.families.genmask.eval.refer``). Every backend sees the same image and prompts in
lock step, so fidelity (IoU of each backend's mask with the reference's mask; max |logit
difference|) is measured sample by sample without storing predictions.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from genmask_sdk.bench.latency import at_resolution, load_model, prepare_artifacts
from genmask_sdk.bench.system import hardware, versions
from genmask_sdk.bench.targets import REFERENCE, TargetUnavailable, open_target, parse_targets

SCHEMA = "genmask-bench-accuracy/1"


@dataclass
class AccuracySettings:
    """Options of ``run_accuracy`` (``benchmarks/accuracy.py --help``)."""

    model: str = "demo"
    embedder: str | None = None
    resolution: int | None = None
    backends: str = ("torch-eager,ort-cpu-fp32,ort-cpu-fp16,ort-cpu-int8,ort-cpu-fp8,ort-cuda-fp32,ort-cuda-fp16,trt-fp16,"
                     "trt-int8,trt-fp8")
    scenes: int = 200
    seed: int | None = None
    refer_root: str | None = None
    refer_datasets: list[str] = field(default_factory=lambda: ["refcoco", "refcoco+", "refcocog"])
    refer_splits: list[str] | None = None
    refer_limit: int | None = None
    device: str = "cpu"
    threads: int | None = None
    engines: str | None = None
    engines_root: str = "engines"
    work_dir: str | None = None
    build: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: [8])  # max prompts per DiT call (engine build)
    progress: bool = True
    quick: bool = False

    def apply_quick(self) -> None:
        self.scenes = min(self.scenes, 4)
        self.refer_limit = min(self.refer_limit or 5, 5)


@dataclass
class Sample:
    """One image and its expressions: texts, ground truths and group tags."""

    image: np.ndarray
    texts: list[str]
    masks: list[np.ndarray]
    groups: list[str]


@dataclass
class Dataset:
    name: str
    description: str
    total: int  # progress units: scenes (demo) or expressions (refer)
    samples: Callable[[], Iterator[Sample]]
    per_expression: bool = False


def demo_dataset(n_scenes: int, seed: int, size: int) -> Dataset:
    from genmask_sdk.families.genmask.eval import held_out_scenes

    def samples() -> Iterator[Sample]:
        for scene in held_out_scenes(n_scenes, seed, size):
            if scene.expressions:
                yield Sample(scene.image, [e.text for e in scene.expressions],
                             [np.asarray(e.mask, dtype=bool) for e in scene.expressions],
                             [e.kind for e in scene.expressions])

    return Dataset(f"demo held-out scenes (seed {seed}, {n_scenes} scenes)",
                   f"Procedural scenes from `held_out_scenes({n_scenes}, seed={seed}, size={size})`, a seed the demo "
                   "training never used; groups are expression kinds.", n_scenes, samples)


def refer_datasets(root: str, names: Iterable[str], splits: list[str] | None, limit: int | None) -> list[Dataset | dict]:
    """One Dataset per (dataset, split); a dict with status/reason where one cannot be read."""
    from genmask_sdk.families.genmask.eval.refer import DATASETS, ReferDataset

    found: list[Dataset | dict] = []
    for item in names:
        name, _, split_by = item.partition(":")  # "refcocog:google" picks refs(google).p
        try:
            data = ReferDataset(root, name, split_by or None)
        except Exception as exc:  # noqa: BLE001 - recorded per dataset
            found.append({"name": item, "status": "skipped", "reason": f"{type(exc).__name__}: {exc}"})
            continue
        for split in splits or DATASETS.get(name, ("", ("val",)))[1]:
            count = data.count(split, limit)
            if not count:
                found.append({"name": f"{data.name} {split}", "status": "skipped", "reason": f"no refs in split {split!r}"})
                continue

            def samples(data=data, split=split) -> Iterator[Sample]:
                for image in data.images(split, limit):
                    pixels = data.load_image(image)
                    yield Sample(pixels, [e.text for e in image.expressions],
                                 [data.mask(e.ann_id) for e in image.expressions], [split] * len(image.expressions))

            found.append(Dataset(f"{data.name} {split}",
                                 f"{count} expressions of `{root}` {name} split {split}"
                                 + (f" (first {limit})" if limit else "") + ".", count, samples, True))
    return found


class _Fidelity:
    def __init__(self) -> None:
        self.ious: list[float] = []
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.pixels = 0

    def add(self, logits: np.ndarray, reference: np.ndarray) -> None:
        from genmask_sdk.metrics import mask_iou

        self.ious.append(mask_iou(logits > 0, reference > 0))
        diff = np.abs(logits.astype(np.float64) - reference.astype(np.float64))
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.sum_abs += float(diff.sum())
        self.pixels += diff.size

    def summary(self) -> dict[str, Any]:
        ious = np.asarray(self.ious, dtype=np.float64)
        return {"count": int(ious.size), "mask_iou_mean": float(ious.mean()) if ious.size else None,
                "mask_iou_min": float(ious.min()) if ious.size else None,
                "identical_masks_fraction": float(np.mean(ious >= 1.0)) if ious.size else None,
                "max_abs_logit_diff": self.max_abs, "mean_abs_logit_diff": self.sum_abs / max(1, self.pixels)}


def evaluate(dataset: Dataset, segmenters: dict[str, Any], progress: bool) -> dict[str, dict[str, Any]]:
    """Lock-step evaluation of every segmenter on ``dataset`` -> per-target results."""
    from tqdm.auto import tqdm

    from genmask_sdk.metrics import SegmentationScores

    scores = {name: SegmentationScores() for name in segmenters}
    fidelity = {name: _Fidelity() for name in segmenters if name != REFERENCE}
    seconds = {name: 0.0 for name in segmenters}
    errors: dict[str, str] = {}
    with tqdm(total=dataset.total, desc=dataset.name[:40], disable=not progress, file=sys.stderr) as bar:
        for sample in dataset.samples():
            reference = None
            for name, segmenter in segmenters.items():
                if name in errors:
                    continue
                try:
                    start = time.perf_counter()
                    results = segmenter.predict(sample.image, sample.texts)
                    seconds[name] += time.perf_counter() - start
                except Exception as exc:  # noqa: BLE001 - recorded, never hidden
                    errors[name] = f"{type(exc).__name__}: {str(exc).strip()[:1000]}"
                    if name == REFERENCE:
                        raise
                    continue
                logits = [np.asarray(r.logits, dtype=np.float32) for r in results]
                for row, gt, group in zip(logits, sample.masks, sample.groups):
                    scores[name].add(row > 0, gt, group=str(group))
                if name == REFERENCE:
                    reference = logits
                else:
                    for row, ref in zip(logits, reference):
                        fidelity[name].add(row, ref)
            bar.update(len(sample.texts) if dataset.per_expression else 1)
    out = {}
    for name in segmenters:
        if name in errors:
            out[name] = {"status": "failed", "reason": errors[name]}
            continue
        count = scores[name].count
        out[name] = {"status": "ok", "scores": scores[name].summary(),
                     "ms_per_sample": 1000.0 * seconds[name] / max(1, count), "seconds": seconds[name]}
        if name in fidelity:
            out[name]["fidelity"] = fidelity[name].summary()
    return out


def open_segmenters(specs, artifacts, model, embedder, device, settings, log) -> tuple[dict[str, Any], list[dict]]:
    """Open every target as a ``Segmenter``; (opened by name, entries of the skipped/failed)."""
    from genmask_sdk.families.genmask.segmenter import Segmenter

    opened, problems = {}, []
    for spec in specs:
        try:
            target = open_target(spec, artifacts, model=model, device=device, threads=settings.threads, log=log)
        except TargetUnavailable as exc:
            problems.append({"target": spec.name, "label": spec.label, "status": "skipped", "reason": str(exc)})
            log(f"{spec.name}: skipped: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001
            if spec.name == REFERENCE:
                raise
            problems.append({"target": spec.name, "label": spec.label, "status": "failed",
                             "reason": f"{type(exc).__name__}: {str(exc).strip()[:1000]}"})
            log(f"{spec.name}: FAILED to open: {exc}")
            continue
        info = {"backend": spec.family, "precision": spec.precision, "provider": spec.variant, "fallbacks": [],
                "files": {}, "source": {"kind": "benchmark", "path": None}, "max_batch": max(settings.batch_sizes),
                "max_prompt_tokens": model.config.embedder.max_prompt_tokens, "manifest": None}
        opened[spec.name] = Segmenter(target.pipeline, embedder, model.config, info)
    return opened, problems


def run_accuracy(settings: AccuracySettings, log: Callable[[str], None] | None = None,
                 argv: list[str] | None = None) -> dict[str, Any]:
    from genmask_sdk.families.genmask.eval import HELD_OUT_SEED

    log = log or (lambda line: print(f"[accuracy] {line}", file=sys.stderr, flush=True))
    if settings.quick:
        settings.apply_quick()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    specs = [s for s in parse_targets(settings.backends)]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    started = time.perf_counter()
    model, source = load_model(settings.model, settings.embedder, 0)
    source["native_resolution"] = model.config.resolution
    resolution = settings.resolution or model.config.resolution
    at_resolution(model.to(device), resolution)
    own_work = settings.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="genmask-acc-")) if own_work else Path(settings.work_dir)
    seed = HELD_OUT_SEED if settings.seed is None else settings.seed
    result: dict[str, Any] = {
        "schema": SCHEMA, "kind": "accuracy", "created": created, "command": argv,
        "settings": {**asdict(settings), "seed": seed, "resolution": resolution,
                     "backends": [s.name for s in specs], "reference": REFERENCE},
        "model": {**source, "config": model.config.to_dict()},
        "hardware": hardware(), "versions": versions(), "datasets": [],
    }
    try:
        latency_like = _LatencyView(settings)
        artifacts = prepare_artifacts(model, source, resolution, "pipeline", specs, latency_like, work_dir, device, log)
        embedder = model.embedder
        segmenters, problems = open_segmenters(specs, artifacts, model, embedder, device, settings, log)
        datasets: list[Dataset | dict] = []
        if settings.scenes > 0:
            datasets.append(demo_dataset(settings.scenes, seed, resolution))
        if settings.refer_root:
            datasets += refer_datasets(settings.refer_root, settings.refer_datasets, settings.refer_splits,
                                       settings.refer_limit)
        for dataset in datasets:
            if isinstance(dataset, dict):
                result["datasets"].append(dataset)
                continue
            log(f"evaluating {dataset.name} on {', '.join(segmenters)}")
            start = time.perf_counter()
            per_target = evaluate(dataset, segmenters, settings.progress)
            entries = []
            for spec in specs:
                if spec.name in per_target:
                    entries.append({"target": spec.name, "label": spec.label, "family": spec.family,
                                    "precision": spec.precision, "reference": spec.name == REFERENCE,
                                    **per_target[spec.name]})
            entries += [dict(p) for p in problems]
            result["datasets"].append({"name": dataset.name, "description": dataset.description, "status": "ok",
                                       "seconds": round(time.perf_counter() - start, 1), "backends": entries})
        for segmenter in segmenters.values():
            segmenter.close()
        result["artifacts"] = {"directory": str(artifacts.directory), "methods": artifacts.methods,
                               "build_seconds": artifacts.build_seconds}
    finally:
        if own_work:
            shutil.rmtree(work_dir, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


class _LatencyView:
    """The few settings ``latency.prepare_artifacts`` reads, from AccuracySettings."""

    def __init__(self, settings: AccuracySettings) -> None:
        self.engines = settings.engines
        self.engines_root = settings.engines_root
        self.resolutions = [settings.resolution] if settings.resolution else None
        self.build = settings.build
        self.batch_sizes = settings.batch_sizes
        self.progress = settings.progress
        self.int8_calib_samples = 8  # random-weight models only: int8 calibrated on random inputs

