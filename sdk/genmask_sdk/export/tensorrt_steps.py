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
from genmask_sdk.export.manifest import file_record
from genmask_sdk.families.genmask.export.options import CPU_SETS, SETS
from genmask_sdk.export.tensorrt_build import TensorRTBuildConfig, build_plan, tensorrt_available, trtexec_command

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


class TensorRTStep:
    """Decides whether plans are built (``decide``), builds or describes them (``run``)."""

    def __init__(self, build) -> None:
        self.build = build
        self.available = False
        self.reason = ""
        self.refused: dict[str, str] = {}  # precision set -> why this GPU gets no plans for it
        self.summary: dict = {}
        self.plans: dict[tuple[str, str], str] = {}  # (stage, precision of the graph) -> plan file

    def decide(self) -> None:
        """Settle availability before any export; ``--tensorrt on`` without TensorRT raises."""
        self.available, self.reason = availability(self.build.opts.tensorrt)
        if self.available and "fp8" in self.build.opts.precisions:
            reason = fp8_refusal(_current_target()[1])
            if reason and self.build.opts.tensorrt == "on":
                raise BackendUnavailableError(f"--tensorrt on with --precisions fp8: {reason}")
            if reason:
                self.refused["fp8"] = reason

    def _graphs(self) -> list[tuple[str, str]]:
        wanted = {(s, p) for q in self.build.opts.precisions if q not in self.refused and q not in CPU_SETS
                  for s, p in SETS[q].items()}
        return [key for key in self.build.records if (key[0], key[1]) in wanted and key[2] == "onnx"]

    def _config(self, stage: str) -> TensorRTBuildConfig:
        return plan_config(self.build.profiles(stage), self.build.opts.workspace_gib, self.build.out / TIMING_CACHE)

    def run(self, previous) -> None:
        build = self.build
        graphs = [(stage, precision) for stage, precision, _ in self._graphs()]
        if not self.available:
            records = [build.records[(stage, precision, "onnx")] for stage, precision in graphs]
            self.summary = skipped_summary(self.reason, records, build.opts.workspace_gib)
            log_skipped(self.summary, build.out, build.log)
            return
        for precision, reason in self.refused.items():
            build.log(f"no TensorRT plans for the {precision} set: {reason} (its ONNX files are kept for FP8 GPUs)")
        for stage, precision in graphs:
            self._plan(stage, precision, previous)
        self.summary = {"built": True, "reason": self.reason, "timing_cache": TIMING_CACHE}
        if self.refused:
            self.summary["refused"] = dict(self.refused)

    def _plan(self, stage: str, precision: str, previous) -> None:
        from genmask_sdk.export.fidelity import check_graph  # torch: this module itself stays importable without it

        build = self.build
        source = build.records[(stage, precision, "onnx")]
        name = plan_file(source["file"])
        config = self._config(stage)
        old = build.reusable(previous, stage, precision, "tensorrt")
        current = _current_target()
        if old is not None and old.get("source_sha256") == source["sha256"] and old.get("profiles") == source["profiles"] \
                and old.get("workspace_bytes") == config.workspace_bytes and _target(old) == current:
            build.log(f"reused {name} (same graph, profiles and TensorRT/GPU; sha256 verified)")
            build.records[(stage, precision, "tensorrt")] = old
            build.reused.append(name)
            self.plans[(stage, precision)] = name
            return
        staged_onnx = build.staging.path(source["file"])
        onnx_path = staged_onnx if staged_onnx.is_file() else build.out / source["file"]
        plan_path = build.staging.path(name)
        build.log(f"building TensorRT plan {name}")
        info = build_plan(onnx_path, plan_path, config, progress=build.opts.progress)
        fidelity = check_graph(plan_path, stage, precision, build.reference(), build.model.decode_mask, runtime="tensorrt")
        build.records[(stage, precision, "tensorrt")] = {
            "stage": stage, "precision": precision, "runtime": "tensorrt", **file_record(plan_path), "external_data": [],
            "source": source["file"], "source_sha256": source["sha256"], "inputs": source["inputs"],
            "outputs": source["outputs"], "profiles": source["profiles"], "workspace_bytes": config.workspace_bytes,
            "tensorrt_version": info.tensorrt_version,
            "compute_capability": list(info.compute_capability) if info.compute_capability else None,
            "version_compatible": info.version_compatible, "build_seconds": round(info.build_seconds, 2),
            "fidelity": fidelity,
        }
        build.staged.append(name)
        build.built.append(name)
        self.plans[(stage, precision)] = name
        build.log(f"{name}: {info.build_seconds:.1f} s, max |plan - torch| {fidelity['max_abs_error']:.3g}")

    def set_files(self, precision: str) -> dict[str, str] | None:
        """Stage -> plan file of the ``precision`` set, or None when plans were not built."""
        if not self.plans or precision in self.refused or precision in CPU_SETS:
            return None
        return {stage: self.plans[(stage, p)] for stage, p in SETS[precision].items()}


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


def _current_target() -> tuple[str, list[int]]:
    import torch

    from genmask_sdk.runtime.trt_api import import_tensorrt

    return str(import_tensorrt().__version__), list(torch.cuda.get_device_capability())


def _target(record: dict) -> tuple[str, list[int]]:
    return str(record.get("tensorrt_version")), list(record.get("compute_capability") or [])

