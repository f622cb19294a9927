"""Time the CPU sets of a build on the build machine, so ``backend="auto"`` on a CPU can pick the
fastest faithful one (``families.genmask.engines.choose_cpu_set``).

Each set in ``CPU_TIMED_SETS`` that the build wrote runs its three ONNX graphs under ONNX
Runtime's CPU provider on one check input (batch 1, one prompt): ``warmup`` untimed runs, then
``repeats`` timed ones of the whole chain (VAE encoder -> DiT -> mask head). The manifest's
``cpu_timing`` records the CPU model, threads, onnxruntime version and the p50/p90/min
milliseconds per set; they describe the build machine, and a Segmenter on another CPU says so.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genmask_sdk.runtime.hardware import cpu_model
from genmask_sdk.families.genmask.export.options import CPU_TIMED_SETS, SETS

WARMUP = 2
REPEATS = 5


def time_cpu_sets(paths: dict[str, dict[str, Path]], feeds, *, warmup: int = WARMUP, repeats: int = REPEATS,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Time each set of ``paths`` (set -> stage -> ONNX file) on the first sample of ``feeds``
    (``calibration.Feeds``); returns the manifest's ``cpu_timing`` entry."""
    import onnxruntime

    from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner

    pixels = np.ascontiguousarray(feeds.pixels[:1].numpy())
    length = int(feeds.context_mask[0].sum())
    context = np.ascontiguousarray(feeds.context[:1, :length].numpy())
    context_mask = np.ascontiguousarray(feeds.context_mask[:1, :length].numpy())
    results: dict[str, Any] = {}
    for precision, files in paths.items():
        runners = {stage: OnnxRuntimeRunner(path, provider="cpu").load() for stage, path in files.items()}
        try:
            def chain() -> None:
                (z_img,) = runners["vae_encoder"].infer({"pixels": pixels}).values()
                (x0,) = runners["dit"].infer({"z_img": np.asarray(z_img), "context": context,
                                              "context_mask": context_mask}).values()
                runners["mask_head"].infer({"latent": np.asarray(x0)})

            for _ in range(warmup):
                chain()
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                chain()
                seconds.append(time.perf_counter() - start)
        finally:
            for runner in runners.values():
                runner.close()
        ms = 1000.0 * np.asarray(seconds)
        results[precision] = {"p50_ms": round(float(np.percentile(ms, 50)), 3),
                              "p90_ms": round(float(np.percentile(ms, 90)), 3), "min_ms": round(float(ms.min()), 3)}
        log(f"CPU timing of the {precision} set (batch 1, one prompt): p50 {results[precision]['p50_ms']:.1f} ms")
    return {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
            "threads": "onnxruntime default (one per physical core)", "batch": 1, "warmup": warmup,
            "repeats": repeats, "stages": list(SETS["fp32"]), "sets": results}


def timed_sets(precisions) -> list[str]:
    """The requested sets that are timed on the CPU, in ``CPU_TIMED_SETS`` order."""
    return [p for p in CPU_TIMED_SETS if p in precisions]
