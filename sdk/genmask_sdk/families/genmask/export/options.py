"""What a build is asked for, and what its files depend on: torch-free, so that a rebuild with
nothing to do (``uptodate.py``) is decided without importing torch, diffusers or onnx.

``build_inputs`` is the one definition of what the exported files depend on (checkpoint hash,
config, export options, tool versions): the build (``pipeline.py``) records it in the manifest, and
both the build and the no-op check reuse files only when it is unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from genmask_sdk import __version__
from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ConfigError
from genmask_sdk.export.graph_specs import DEFAULT_OPSET, EXTERNAL_DATA_THRESHOLD  # noqa: F401  (re-exported)
from genmask_sdk.families.genmask.export import calibration
from genmask_sdk.export.uptodate import changed_inputs  # noqa: F401  (re-exported)
from genmask_sdk.export.manifest import BuildResult, checkpoint_entry, default_out, tool_versions  # noqa: F401

if TYPE_CHECKING:
    from genmask_sdk.runtime.manifest import Manifest

STAGES = ("vae_encoder", "dit", "mask_head")
#: Every precision set a build can write; ``DEFAULT_PRECISIONS`` are built when none are named (FP8 is
#: opt-in: it needs an FP8 GPU — Ada, Hopper, Blackwell — to run fast; elsewhere only emulated).
#: ``int8-dynamic`` is the CPU set (int8 weights, activations quantized at run time: ONNX Runtime's
#: MatMulInteger); the others are the TensorRT-oriented sets.
PRECISIONS = ("fp32", "fp16", "int8", "fp8", "int8-dynamic")
DEFAULT_PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic")
#: Sets made for CPUs: no TensorRT plans are built for them (TensorRT has no MatMulInteger).
CPU_SETS = ("int8-dynamic",)
#: Sets a CPU runs natively, timed at build time so that ``backend="auto"`` on a CPU can pick the
#: fastest faithful one (fp16 / Q-DQ int8 / fp8 graphs are GPU sets a CPU only emulates).
CPU_TIMED_SETS = ("fp32", "int8-dynamic")

#: precision set -> precision of the file used for each stage.
SETS: dict[str, dict[str, str]] = {
    "fp32": {"vae_encoder": "fp32", "dit": "fp32", "mask_head": "fp32"},
    "fp16": {"vae_encoder": "fp16", "dit": "fp16", "mask_head": "fp32"},
    "int8": {"vae_encoder": "fp32", "dit": "int8", "mask_head": "fp32"},
    "fp8": {"vae_encoder": "fp32", "dit": "fp8", "mask_head": "fp32"},
    "int8-dynamic": {"vae_encoder": "fp32", "dit": "int8-dynamic", "mask_head": "fp32"},
}
#: precision set -> precision of its text-embedder graph.
EMBEDDER_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8": "fp32", "fp8": "fp32", "int8-dynamic": "fp32"}


def graph_file(stage: str, precision: str) -> str:
    return f"{stage}.{precision}.onnx"


def onnx_set(precision: str) -> dict[str, str]:
    """Stage -> ONNX file of the ``precision`` set (the manifest's ``sets.<precision>.onnx``)."""
    return {stage: graph_file(stage, p) for stage, p in SETS[precision].items()}


@dataclass(frozen=True)
class BuildOptions:
    """Options of ``build_engines`` (see its docstring)."""

    precisions: tuple[str, ...] = DEFAULT_PRECISIONS
    resolution: int | None = None
    max_batch: int = 8
    max_prompt_tokens: int | None = None
    calib: str | None = None
    calib_size: int = 64
    tensorrt: str = "auto"
    workspace_gib: float = 4.0
    force: bool = False
    opset: int = DEFAULT_OPSET
    int8_keep_blocks: int = 1
    check_samples: int = 4
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD
    text_embedder: bool = True
    cpu_timing: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise ConfigError(f"precisions must be a non-empty subset of {PRECISIONS}, got {list(self.precisions)}.")
        if self.tensorrt not in ("auto", "on", "off"):
            raise ConfigError(f"tensorrt must be 'auto', 'on' or 'off', got {self.tensorrt!r}.")
        for name in ("max_batch", "calib_size", "check_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ConfigError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}.")
        if self.workspace_gib <= 0:
            raise ConfigError(f"workspace must be a positive number of GiB, got {self.workspace_gib}.")

    @property
    def check_count(self) -> int:
        """How many inputs the fidelity checks use (never more than one batch)."""
        return min(self.check_samples, self.max_batch)

    def engine_config(self, config: GenMaskConfig) -> GenMaskConfig:
        """The checkpoint's config at the engine resolution (``resolution`` when given)."""
        return config.replace(resolution=self.resolution) if self.resolution else config

    def prompt_tokens(self, config: GenMaskConfig) -> int:
        """Longest prompt of the profiles: ``max_prompt_tokens``, else the embedder's limit."""
        return self.max_prompt_tokens or config.embedder.max_prompt_tokens

    def exports_text_embedder(self, config: GenMaskConfig) -> bool:
        """Whether the build writes the text embedder as engines (MiniLM only)."""
        return config.embedder.kind == "minilm" and self.text_embedder

    def embedder_precisions(self) -> list[str]:
        """Precisions of the embedder graphs the requested sets use; fp32 first (the fp16 graph is
        converted from it)."""
        wanted = {EMBEDDER_PRECISION[p] for p in self.precisions}
        return [p for p in ("fp32", "fp16") if p in wanted]


def build_options(precisions: Sequence[str] = DEFAULT_PRECISIONS, **options: Any) -> BuildOptions:
    """``BuildOptions`` of a build of ``precisions`` (repeats dropped, order kept) with ``options``."""
    return BuildOptions(precisions=tuple(dict.fromkeys(precisions)), **options)


def build_inputs(checkpoint_sha256: str, config: GenMaskConfig, opts: BuildOptions, *,
                 sdk_version: str = __version__) -> dict[str, Any]:
    """Everything the exported files depend on (the manifest's ``build_inputs``); ``config`` is the
    engine config (``opts.engine_config``). Equal inputs -> the previous files may be reused."""
    tools = {k: v for k, v in tool_versions().items() if k != "tensorrt"}
    return {"sdk_version": sdk_version, "checkpoint_sha256": checkpoint_sha256,
            "config": json.loads(config.to_json()), "opset": opts.opset,
            "calib": calibration.describe(opts.calib), "calib_size": opts.calib_size,
            "int8_keep_blocks": opts.int8_keep_blocks, "check_samples": opts.check_count,
            "external_data_threshold": opts.external_data_threshold,
            "text_embedder": opts.text_embedder, "tools": tools}


