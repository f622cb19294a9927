"""The TensorRT part of a build: one strongly typed plan per graph of every requested set.

``--tensorrt auto`` builds plans when ``tensorrt_available()`` says so and otherwise prints why
and the ``trtexec`` command per graph (to build on the device); ``on`` makes a missing TensorRT an
error; ``off`` skips plans. Profiles: batch 1..max_batch, prompt length 1..max_prompt_tokens. All
plans share the timing cache ``<engines>/timing.cache``. Each plan is checked against PyTorch
like the ONNX files (fp32 plans against the fp16 tolerance: TensorRT may use TF32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from genmask_sdk.errors import BackendUnavailableError
# build_plan is called through this module (families' TensorRT steps; tests replace it here).
from genmask_sdk.export.tensorrt_build import TensorRTBuildConfig, build_plan, tensorrt_available, trtexec_command  # noqa: F401

TIMING_CACHE = "timing.cache"
OFF_REASON = "disabled with --tensorrt off"


def availability(mode: str) -> tuple[bool, str]:
    """Whether plans are built under ``--tensorrt mode`` and why not; ``on`` without TensorRT raises
    BackendUnavailableError. Imports torch only where the ``tensorrt`` module is installed."""
    if mode == "off":
        return False, OFF_REASON
    available, reason = tensorrt_available()
    if mode == "on" and not available:
        raise BackendUnavailableError(f"--tensorrt on, but no TensorRT plan can be built here: {reason}")
    return available, reason


def plan_file(onnx_file: str) -> str:
    return onnx_file.replace(".onnx", ".plan")


def plan_config(profiles: Mapping[str, Sequence[Sequence[int]]], workspace_gib: float,
                timing_cache: Path) -> TensorRTBuildConfig:
    """How the plan of a graph with these (min, opt, max) ``profiles`` is built."""
    return TensorRTBuildConfig(workspace_bytes=int(workspace_gib * (1 << 30)),
                               profiles={k: tuple(tuple(s) for s in v) for k, v in profiles.items()},
                               timing_cache=timing_cache)


def skipped_summary(reason: str, graphs: Sequence[Mapping[str, Any]], workspace_gib: float) -> dict:
    """The manifest's ``tensorrt`` entry of a build without plans: why, and for each ONNX graph
    (its manifest record) the trtexec command that builds its plan on the device."""
    commands = {g["file"]: trtexec_command(g["file"], plan_file(g["file"]),
                                           plan_config(g["profiles"], workspace_gib, Path(TIMING_CACHE)))
                for g in graphs}
    return {"built": False, "reason": reason, "trtexec": commands}


def log_skipped(summary: dict, out: Path, log: Callable[[str], None]) -> None:
    """Say why no plans were built and how to build them on the device (``skipped_summary``)."""
    log(f"TensorRT plans skipped: {summary['reason']}")
    log(f"to build them on the device, run in {out}:")
    for command in summary["trtexec"].values():
        log(f"  {command}")


#: FP8 tensor cores: Ada (8.9), Hopper (9.0), Blackwell (10.x, 12.x). Jetson Orin is 8.7.
FP8_MIN_CAPABILITY = (8, 9)


def fp8_refusal(capability: Sequence[int]) -> str | None:
    """Why a GPU of ``capability`` (major, minor) gets no FP8 plans, or None if it has FP8."""
    major, minor = (list(capability) + [0, 0])[:2]
    if (major, minor) >= FP8_MIN_CAPABILITY:
        return None
    orin = " — Jetson Orin" if (major, minor) == (8, 7) else ""
    return (f"FP8 needs compute capability >= 8.9 (Ada, Hopper, Blackwell); this GPU is {major}.{minor}{orin}. "
            "Build the fp16 or int8 set for it")


def current_target() -> tuple[str, list[int]]:
    import torch

    from genmask_sdk.runtime.trt_api import import_tensorrt

    return str(import_tensorrt().__version__), list(torch.cuda.get_device_capability())


def plan_target(record: dict) -> tuple[str, list[int]]:
    return str(record.get("tensorrt_version")), list(record.get("compute_capability") or [])

