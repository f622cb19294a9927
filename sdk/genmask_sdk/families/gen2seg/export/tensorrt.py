"""The TensorRT part of a gen2seg build: one strongly typed plan per ONNX graph of the requested sets.

Same rules as GenMask's (``tensorrt_steps``): ``tensorrt="auto"`` builds plans where
``tensorrt_available()`` says so and otherwise records why plus the ``trtexec`` command per graph;
``"on"`` makes a missing TensorRT a BackendUnavailableError before anything is exported; ``"off"``
skips plans. Precision lives in the ONNX graph (strongly typed network: no builder precision
flags): an fp16 graph gives an fp16 plan, an int8 Q/DQ graph an int8 plan. Profiles: batch
1..max_batch at the fixed S×S. All plans share ``<engines>/timing.cache``.

Each plan is checked right after it is built, like the ONNX files: run with TensorRT on the same
reference inputs and compared with the float32 PyTorch stage (fp32 plans against the fp16
tolerance: TensorRT may use TF32). The caller then checks every set end to end through the runtime
(``runtime.gen2seg.EngineColorizer`` with TensorRT runners) against the PyTorch colour maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from genmask_sdk.export.manifest import file_record
from genmask_sdk.export.tensorrt_build import build_plan
from genmask_sdk.export.tensorrt_steps import TIMING_CACHE, availability, plan_config, plan_file, skipped_summary

__all__ = ["TIMING_CACHE", "availability", "build_gen2seg_plan", "plan_file", "skipped_summary", "summary_built"]


def build_gen2seg_plan(source: Mapping[str, Any], onnx_path: Path, plan_path: Path, workspace_gib: float,
                       timing_cache: Path, check: Callable[[Path], dict], *, progress: bool = True) -> dict:
    """Build the plan of one ONNX graph (``source``: its manifest record) and check it.

    ``check(plan_path)`` returns the fidelity record (or raises FidelityError). Returns the
    plan's manifest record (file, sha256, source graph, profiles, TensorRT version, GPU, fidelity)."""
    config = plan_config(source["profiles"], workspace_gib, timing_cache)
    info = build_plan(onnx_path, plan_path, config, progress=progress)
    fidelity = check(plan_path)
    return {"stage": source["stage"], "precision": source["precision"], "runtime": "tensorrt",
            **file_record(plan_path), "external_data": [], "source": source["file"],
            "source_sha256": source["sha256"], "inputs": source["inputs"], "outputs": source["outputs"],
            "profiles": source["profiles"], "workspace_bytes": config.workspace_bytes,
            "tensorrt_version": info.tensorrt_version,
            "compute_capability": list(info.compute_capability) if info.compute_capability else None,
            "version_compatible": info.version_compatible, "build_seconds": round(info.build_seconds, 2),
            "fidelity": fidelity}


def plan_output(plan_path: Path, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """The single output of a plan on the current CUDA device (``fidelity.run_plan``)."""
    from genmask_sdk.export.fidelity import run_plan

    return run_plan(plan_path, dict(feeds))


def summary_built(reason: str) -> dict:
    """The manifest's ``tensorrt`` entry of a build with plans."""
    return {"built": True, "reason": reason, "timing_cache": TIMING_CACHE}
