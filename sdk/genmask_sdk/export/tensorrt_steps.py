"""The TensorRT part of a build: one strongly typed plan per graph of every requested set.

``--tensorrt auto`` builds plans when ``tensorrt_available()`` says so and otherwise prints why
and the ``trtexec`` command per graph (to build on the device); ``on`` makes a missing TensorRT an
error; ``off`` skips plans. Profiles: batch 1..max_batch, prompt length 1..max_prompt_tokens. All
plans share the timing cache ``<engines>/timing.cache``. Each plan is checked against PyTorch
like the ONNX files (fp32 plans against the fp16 tolerance: TensorRT may use TF32).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailableError
from .fidelity import check_graph
from .manifest import file_record
from .tensorrt_build import TensorRTBuildConfig, build_plan, tensorrt_available, trtexec_command

TIMING_CACHE = "timing.cache"


class TensorRTStep:
    """Decides whether plans are built (``decide``), builds or describes them (``run``)."""

    def __init__(self, build) -> None:
        self.build = build
        self.available = False
        self.reason = ""
        self.summary: dict = {}
        self.plans: dict[tuple[str, str], str] = {}  # (stage, precision of the graph) -> plan file

    def decide(self) -> None:
        """Settle availability before any export; ``--tensorrt on`` without TensorRT raises."""
        mode = self.build.opts.tensorrt
        if mode == "off":
            self.reason = "disabled with --tensorrt off"
            return
        self.available, self.reason = tensorrt_available()
        if mode == "on" and not self.available:
            raise BackendUnavailableError(f"--tensorrt on, but no TensorRT plan can be built here: {self.reason}")

    def _graphs(self) -> list[tuple[str, str]]:
        from .pipeline import SETS

        wanted = {(s, p) for q in self.build.opts.precisions for s, p in SETS[q].items()}
        return [key for key in self.build.records if (key[0], key[1]) in wanted and key[2] == "onnx"]

    def _config(self, stage: str, relative: bool = False) -> TensorRTBuildConfig:
        """Build config of ``stage``; ``relative`` names the timing cache relative to the engines dir."""
        profiles = {k: tuple(tuple(s) for s in v) for k, v in self.build.profiles(stage).items()}
        cache = Path(TIMING_CACHE) if relative else self.build.out / TIMING_CACHE
        return TensorRTBuildConfig(workspace_bytes=int(self.build.opts.workspace_gib * (1 << 30)), profiles=profiles,
                                   timing_cache=cache)

    def run(self, previous) -> None:
        build = self.build
        graphs = [(stage, precision) for stage, precision, _ in self._graphs()]
        if not self.available:
            commands = {}
            for stage, precision in graphs:
                onnx_file = build.records[(stage, precision, "onnx")]["file"]
                commands[onnx_file] = trtexec_command(onnx_file, onnx_file.replace(".onnx", ".plan"),
                                                   self._config(stage, relative=True))
            build.log(f"TensorRT plans skipped: {self.reason}")
            build.log(f"to build them on the device, run in {build.out}:")
            for command in commands.values():
                build.log(f"  {command}")
            self.summary = {"built": False, "reason": self.reason, "trtexec": commands}
            return
        for stage, precision in graphs:
            self._plan(stage, precision, previous)
        self.summary = {"built": True, "reason": self.reason, "timing_cache": TIMING_CACHE}

    def _plan(self, stage: str, precision: str, previous) -> None:
        build = self.build
        source = build.records[(stage, precision, "onnx")]
        name = source["file"].replace(".onnx", ".plan")
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
        from .pipeline import SETS

        if not self.plans:
            return None
        return {stage: self.plans[(stage, p)] for stage, p in SETS[precision].items()}


def _current_target() -> tuple[str, list[int]]:
    import torch

    from ..runtime.trt_api import import_tensorrt

    return str(import_tensorrt().__version__), list(torch.cuda.get_device_capability())


def _target(record: dict) -> tuple[str, list[int]]:
    return str(record.get("tensorrt_version")), list(record.get("compute_capability") or [])

