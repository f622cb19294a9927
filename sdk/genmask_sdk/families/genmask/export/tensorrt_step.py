"""GenMask's TensorRT step of a build: one strongly typed plan per graph of every requested set, each
checked against PyTorch like the ONNX files. The family-agnostic parts (availability, plan configs,
timing cache, skipped summaries, targets) are ``genmask_sdk.export.tensorrt_steps``.
"""

from __future__ import annotations

from genmask_sdk.errors import BackendUnavailableError
from genmask_sdk.export import tensorrt_steps as plans
from genmask_sdk.export.manifest import file_record
from genmask_sdk.export.tensorrt_build import TensorRTBuildConfig
from genmask_sdk.families.genmask.export.options import CPU_SETS, SETS


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
        self.available, self.reason = plans.availability(self.build.opts.tensorrt)
        if self.available and "fp8" in self.build.opts.precisions:
            reason = plans.fp8_refusal(plans.current_target()[1])
            if reason and self.build.opts.tensorrt == "on":
                raise BackendUnavailableError(f"--tensorrt on with --precisions fp8: {reason}")
            if reason:
                self.refused["fp8"] = reason

    def _graphs(self) -> list[tuple[str, str]]:
        wanted = {(s, p) for q in self.build.opts.precisions if q not in self.refused and q not in CPU_SETS
                  for s, p in SETS[q].items()}
        return [key for key in self.build.records if (key[0], key[1]) in wanted and key[2] == "onnx"]

    def _config(self, stage: str) -> TensorRTBuildConfig:
        return plans.plan_config(self.build.profiles(stage), self.build.opts.workspace_gib, self.build.out / plans.TIMING_CACHE)

    def run(self, previous) -> None:
        build = self.build
        graphs = [(stage, precision) for stage, precision, _ in self._graphs()]
        if not self.available:
            records = [build.records[(stage, precision, "onnx")] for stage, precision in graphs]
            self.summary = plans.skipped_summary(self.reason, records, build.opts.workspace_gib)
            plans.log_skipped(self.summary, build.out, build.log)
            return
        for precision, reason in self.refused.items():
            build.log(f"no TensorRT plans for the {precision} set: {reason} (its ONNX files are kept for FP8 GPUs)")
        for stage, precision in graphs:
            self._plan(stage, precision, previous)
        self.summary = {"built": True, "reason": self.reason, "timing_cache": plans.TIMING_CACHE}
        if self.refused:
            self.summary["refused"] = dict(self.refused)

    def _plan(self, stage: str, precision: str, previous) -> None:
        from genmask_sdk.families.genmask.export.fidelity import check_graph  # torch: this module itself stays importable without it

        build = self.build
        source = build.records[(stage, precision, "onnx")]
        name = plans.plan_file(source["file"])
        config = self._config(stage)
        old = build.reusable(previous, stage, precision, "tensorrt")
        current = plans.current_target()
        if old is not None and old.get("source_sha256") == source["sha256"] and old.get("profiles") == source["profiles"] \
                and old.get("workspace_bytes") == config.workspace_bytes and plans.plan_target(old) == current:
            build.log(f"reused {name} (same graph, profiles and TensorRT/GPU; sha256 verified)")
            build.records[(stage, precision, "tensorrt")] = old
            build.reused.append(name)
            self.plans[(stage, precision)] = name
            return
        staged_onnx = build.staging.path(source["file"])
        onnx_path = staged_onnx if staged_onnx.is_file() else build.out / source["file"]
        plan_path = build.staging.path(name)
        build.log(f"building TensorRT plan {name}")
        info = plans.build_plan(onnx_path, plan_path, config, progress=build.opts.progress)
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
