"""The backends a benchmark compares, behind the SDK's pipeline interface.

Every opened target exposes ``pipeline`` with ``encode`` / ``denoise`` / ``decode`` (torch tensors
in and out, as in ``genmask_sdk.families.genmask.modeling.torch_pipeline``), ``sync()`` (waits for the device), ``close()`` and
``details`` (files, methods). A target that cannot run on this machine raises
``TargetUnavailable`` with the reason, which the benchmark records as *skipped*; any other
exception while opening or running is recorded as *failed* with its message. Nothing falls back
silently.

What is measured is what users run: the graphs come from an engines directory written by
``build_engines`` (manifest, fidelity gate, version checks; ``latency.prepare_artifacts``), and
every engine target is opened by ``families.genmask.engines.open_engines`` — the loader
``Segmenter.from_engines`` calls — with the set, backend, provider, OpenVINO hint and threads of
the target. ``int8-dynamic`` is the build's CPU set (``export/quantize_dynamic.py``). The PyTorch
targets run ``backends.TorchPipeline`` (what ``Segmenter.from_pretrained(dtype=...)`` runs) or
``torch.compile`` of the same modules.
"""

from __future__ import annotations

import copy
import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from genmask_sdk.families.genmask.engines import manifest_config
from genmask_sdk.families.genmask.config import GenMaskConfig

logger = logging.getLogger("genmask_sdk.bench")
PIPELINE_STAGES = ("vae_encoder", "dit", "mask_head")


class TargetUnavailable(Exception):
    """This target cannot run here (no GPU, package missing, set not built); ``str`` = reason."""


@dataclass(frozen=True)
class TargetSpec:
    """One backend/precision combination a benchmark can run."""

    name: str
    family: str  # "torch" | "onnxruntime" | "openvino" | "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8" | "fp8" | "int8-dynamic"
    variant: str | None  # torch: "eager" | "compile" | "bf16-autocast"; onnxruntime: provider "cpu" | "cuda";
    #                      openvino: inference precision hint "f32" | "bf16" (OpenVinoRunner)
    label: str

    @property
    def needs_cuda(self) -> bool:
        return self.family == "tensorrt" or self.variant == "cuda"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "precision": self.precision, "variant": self.variant,
                "label": self.label}


_SPECS = [
    TargetSpec("torch-eager", "torch", "fp32", "eager", "PyTorch eager fp32 (reference)"),
    TargetSpec("torch-compile", "torch", "fp32", "compile", "PyTorch torch.compile (inductor) fp32"),
    TargetSpec("torch-bf16", "torch", "bf16", "bf16-autocast",
               "PyTorch eager bf16 autocast (Segmenter.from_pretrained(dtype='bf16'))"),
    TargetSpec("ort-cpu-fp32", "onnxruntime", "fp32", "cpu", "ONNX Runtime CPU fp32"),
    TargetSpec("ort-cpu-fp16", "onnxruntime", "fp16", "cpu", "ONNX Runtime CPU fp16 graph"),
    TargetSpec("ort-cpu-int8", "onnxruntime", "int8", "cpu", "ONNX Runtime CPU int8 (static Q/DQ engine graph)"),
    TargetSpec("ort-cpu-fp8", "onnxruntime", "fp8", "cpu", "ONNX Runtime CPU fp8 Q/DQ graph (emulated: no fp8 GEMM)"),
    TargetSpec("ort-cpu-int8-dynamic", "onnxruntime", "int8-dynamic", "cpu",
               "ONNX Runtime CPU, int8-dynamic set (the build's CPU set: MatMulInteger, QInt8 weights)"),
    TargetSpec("ov-cpu-int8-dynamic", "openvino", "int8-dynamic", "f32", "OpenVINO CPU, int8-dynamic set"),
    TargetSpec("ov-cpu-fp32", "openvino", "fp32", "f32", "OpenVINO CPU, fp32 set, f32 inference"),
    TargetSpec("ov-cpu-fp32-bf16", "openvino", "fp32", "bf16", "OpenVINO CPU, fp32 set, bf16 inference hint"),
    TargetSpec("ov-cpu-int8", "openvino", "int8", "f32", "OpenVINO CPU, int8 Q/DQ set (its int8 path)"),
    TargetSpec("ort-cuda-fp32", "onnxruntime", "fp32", "cuda", "ONNX Runtime CUDA EP fp32"),
    TargetSpec("ort-cuda-fp16", "onnxruntime", "fp16", "cuda", "ONNX Runtime CUDA EP fp16 graph"),
    TargetSpec("ort-cuda-int8", "onnxruntime", "int8", "cuda", "ONNX Runtime CUDA EP int8 (static Q/DQ graph)"),
    TargetSpec("trt-fp16", "tensorrt", "fp16", None, "TensorRT fp16 (strongly typed plan)"),
    TargetSpec("trt-int8", "tensorrt", "int8", None, "TensorRT int8 (explicit Q/DQ, strongly typed plan)"),
    TargetSpec("trt-fp8", "tensorrt", "fp8", None, "TensorRT fp8 (explicit Q/DQ, strongly typed plan; SM >= 8.9)"),
]
TARGETS: dict[str, TargetSpec] = {s.name: s for s in _SPECS}
REFERENCE = "torch-eager"


def parse_targets(text: str) -> list[TargetSpec]:
    """``"all"`` or a comma-separated list of names; the reference always comes first."""
    names = list(TARGETS) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; choose from {list(TARGETS)} or 'all'")
    ordered = [REFERENCE] + [n for n in dict.fromkeys(names) if n != REFERENCE]
    return [TARGETS[n] for n in ordered]


# ------------------------------------------------------------------------------------ graphs
@dataclass
class Artifacts:
    """One resolution's engines: the directory ``build_engines`` wrote and its Manifest;
    ``methods`` says how each set's DiT was made (the manifest's ``details``), ``build_seconds``
    how long the build took in this run (empty when it was reused)."""

    directory: Path
    config: GenMaskConfig
    manifest: Any
    methods: dict[str, Any] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ targets
class CompiledTorchPipeline:
    """``TorchPipeline`` with each stage wrapped by ``torch.compile`` (inductor, static shapes:
    one compilation per input shape, done during warm-up)."""

    name = "torch-compile"

    def __init__(self, model, stages: tuple[str, ...]) -> None:
        self.model = model.eval()
        self.device = model.device
        self._dit = torch.compile(model.one_step_dit(), dynamic=False) if "dit" in stages else None
        self._vae = torch.compile(model.vae_encoder(), dynamic=False) if "vae_encoder" in stages else None
        self._head = (torch.compile(model.mask_head, dynamic=False)
                      if "mask_head" in stages and model.config.mask_decoder == "linear_probe" else None)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._vae(pixels).float()

    @torch.inference_mode()
    def denoise(self, z_img: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        return self._dit(z_img, context, context_mask).float()

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        if self._head is None:
            return self.model.decode_mask(latent).float()
        return self._head(latent).float()

    def close(self) -> None:
        self.model = self._dit = self._vae = self._head = None


@dataclass
class OpenedTarget:
    spec: TargetSpec
    pipeline: Any
    device: torch.device
    details: dict[str, Any] = field(default_factory=dict)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            synchronize = getattr(self.pipeline, "synchronize", None)
            if synchronize is not None:  # runners on their own cuda-python streams
                synchronize()

    def close(self) -> None:
        try:
            self.pipeline.close()
        finally:
            self.pipeline = None
            gc.collect()


def unavailable_reason(spec: TargetSpec, device: torch.device) -> str | None:
    """Why ``spec`` cannot run on this machine / device choice, or None if it may."""
    if spec.needs_cuda:
        if not torch.cuda.is_available():
            return (f"needs a CUDA GPU; torch {torch.__version__} (CUDA build {torch.version.cuda}) sees none")
        if device.type != "cuda":
            return "the benchmark runs with --device cpu; pass --device cuda to run GPU backends"
    if spec.family == "onnxruntime":
        try:
            import onnxruntime
        except ImportError as exc:
            return f"onnxruntime is not installed ({exc})"
        provider = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[spec.variant]
        if provider not in onnxruntime.get_available_providers():
            return (f"this onnxruntime {onnxruntime.__version__} has no {provider} (has "
                    f"{onnxruntime.get_available_providers()}); pip install onnxruntime-gpu on a CUDA machine")
    if spec.family == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            return f"OpenVINO is not installed ({exc}); pip install 'genmask-sdk[openvino]'"
    if spec.family == "tensorrt":
        from genmask_sdk.export.tensorrt_build import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            return why
    if spec.family == "torch" and spec.variant == "compile" and not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    return None


def open_target(spec: TargetSpec, artifacts: Artifacts, *, model, device: torch.device, threads: int | None,
                log: Callable[[str], None] = print) -> OpenedTarget:
    """Load ``spec`` from ``artifacts``; raise TargetUnavailable when it cannot run here."""
    reason = unavailable_reason(spec, device)
    if reason:
        raise TargetUnavailable(reason)
    if spec.family == "torch":
        if model is None:
            raise TargetUnavailable("the PyTorch model was released before this target (internal ordering)")
        if spec.variant in ("eager", "bf16-autocast"):
            from genmask_sdk.families.genmask.modeling.torch_pipeline import TorchPipeline  # the pipeline Segmenter.from_pretrained(dtype=...) runs

            dtype = "fp32" if spec.variant == "eager" else "bf16"
            return OpenedTarget(spec, TorchPipeline(model, dtype), model.device,
                                {"weights": "float32", "autocast": None if dtype == "fp32" else "bfloat16"})
        return OpenedTarget(spec, CompiledTorchPipeline(model, PIPELINE_STAGES), model.device,
                            {"compile": "torch.compile(dynamic=False), inductor, default mode"})
    from genmask_sdk.families.genmask.engines import open_engines
    from genmask_sdk.errors import BackendUnavailableError
    from genmask_sdk.runtime.devices import Device

    on_cuda = spec.needs_cuda
    target_device = device if on_cuda else torch.device("cpu")
    where = Device("cuda", target_device.index or 0) if on_cuda else Device("cpu")
    manifest = artifacts.manifest
    try:
        opened = open_engines(manifest, manifest_config(manifest), spec.family, spec.precision, where,
                              spec.variant if spec.family == "onnxruntime" else None, verify=True,
                              openvino_hint=spec.variant if spec.family == "openvino" else "f32", threads=threads)
    except BackendUnavailableError as exc:
        raise TargetUnavailable(str(exc)) from None
    dit = opened.artifacts["dit"]
    details = {"files": {stage: a["file"] for stage, a in opened.artifacts.items()},
               "dit_method": dit.get("details"), "dit_build_fidelity": dit.get("fidelity"),
               "threads": threads, "runtime_options": opened.runtime_options,
               "opened_with": "families.genmask.engines.open_engines (what Segmenter.from_engines calls)"}
    return OpenedTarget(spec, opened.pipeline, target_device, details)


def detached_head(model):
    """A CPU copy of the model's mask decoder (``config.mask_decoder``; kept after the model is
    released, for fidelity)."""
    if model is None:
        return None
    head = copy.deepcopy(model.mask_decoder()).cpu().float().eval()
    return head
