"""The backends a benchmark compares, behind the SDK's pipeline interface.

Every opened target exposes ``pipeline`` with ``encode`` / ``denoise`` / ``decode`` (torch tensors
in and out, as in ``genmask_sdk.backends``), ``sync()`` (waits for the device), ``close()`` and
``details`` (files, methods). A target that cannot run on this machine raises
``TargetUnavailable`` with the reason, which the benchmark records as *skipped*; any other
exception while opening or running is recorded as *failed* with its message. Nothing falls back
silently.

Graph sources (``Artifacts``):

* ``pipeline`` mode — an engines directory written by ``build_engines`` (three stages per set);
* ``dit-only`` mode — just the DiT graph, exported here (``torch.onnx.export(dynamo=True)``,
  external data when large), for the real-size model where only the DiT matters.

``int8-dynamic`` (either mode) is ONNX Runtime's ``quantize_dynamic`` applied to the fp32 DiT
graph: MatMuls with constant weights only (``MatMulConstBOnly``), QInt8 per-tensor weights,
activations quantized to uint8 at run time (MatMulInteger). It runs on ONNX Runtime only; it is
not the SDK's int8 engine (static symmetric Q/DQ for TensorRT), and is labelled so everywhere.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import GenMaskConfig

logger = logging.getLogger("genmask_sdk.bench")

INT8_DYNAMIC_METHOD = ("onnxruntime.quantization.quantize_dynamic on the fp32 DiT graph: MatMul with constant "
                       "weights only (MatMulConstBOnly), QInt8 per-tensor weights, uint8 activations quantized at "
                       "run time (MatMulInteger); ONNX Runtime only")


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
               "ONNX Runtime CPU int8 quantize_dynamic (MatMul-only, QInt8 weights)"),
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
    """Where one resolution's ONNX graphs are.

    ``manifest`` is the exporter's Manifest in pipeline mode (None in dit-only mode);
    ``dit_files`` maps a precision to its DiT graph in dit-only mode (and ``int8-dynamic`` in
    both); ``methods`` says how each precision's DiT was made.
    """

    mode: str
    directory: Path
    config: GenMaskConfig
    manifest: Any = None
    dit_files: dict[str, Path] = field(default_factory=dict)
    methods: dict[str, Any] = field(default_factory=dict)
    build_seconds: dict[str, float] = field(default_factory=dict)
    work_dir: Path | None = None
    failures: dict[str, str] = field(default_factory=dict)  # precision -> why its graph could not be made

    def dit_fp32(self) -> Path:
        if self.manifest is not None:
            return self.manifest.files("fp32", "onnx")["dit"]
        return self.dit_files["fp32"]


def config_stamp(config: GenMaskConfig, seed: int | None, source: str) -> str:
    """Hash of what a dit-only export depends on (weights come from ``source`` + ``seed``)."""
    payload = json.dumps({"config": json.loads(config.to_json()), "seed": seed, "source": source,
                          "torch": torch.__version__}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def export_dit_graphs(model, directory: Path, precisions: list[str], *, stamp: str, calib_samples: int,
                      prompt_tokens: int, opset: int = 18, log: Callable[[str], None] = print) -> Artifacts:
    """DiT-only graphs of ``model`` (at its config's resolution) in ``directory``.

    ``fp32`` is always written (the source of the others); ``fp16`` / ``int8`` / ``fp8`` use the exporter's
    own passes (``int8``/``fp8`` calibrated on ``calib_samples`` random inputs — a smoke-level calibration,
    labelled so); ``int8-dynamic`` uses ``quantize_dynamic``. Files whose ``stamp`` matches
    ``directory/stamp.json`` are reused.
    """
    from ..export.graphs import DitGraph, export_graph, module_bytes
    from ..export.onnx_io import EXTERNAL_DATA_THRESHOLD, external_data_files

    directory.mkdir(parents=True, exist_ok=True)
    stamp_file = directory / "stamp.json"
    done: dict[str, Any] = {}
    if stamp_file.is_file():
        data = json.loads(stamp_file.read_text())
        if data.get("stamp") == stamp:
            done = data.get("files", {})
    artifacts = Artifacts("dit-only", directory, model.config, work_dir=directory)

    def save() -> None:
        stamp_file.write_text(json.dumps({"stamp": stamp, "files": done}, indent=2))

    wanted = ["fp32"] + [p for p in precisions if p != "fp32"]
    layers = int(model.config.transformer["num_layers"])
    for precision in wanted:
        path = directory / f"dit.{precision}.onnx"
        if precision in done and path.is_file():
            log(f"reusing {path} ({done[precision]['method'][:60]}...)")
            artifacts.dit_files[precision] = path
            artifacts.methods[precision] = done[precision]["details"]
            artifacts.build_seconds[precision] = done[precision]["seconds"]
            continue
        try:
            start = time.perf_counter()
            if precision == "fp32":
                big = module_bytes(model.transformer) > EXTERNAL_DATA_THRESHOLD
                log(f"exporting {path.name} (dynamo{', external data' if big else ''})")
                export_graph(DitGraph(model.one_step_dit()), "dit", model.config, path, opset=opset, external_data=big)
                method = {"method": "torch.onnx.export(dynamo=True), float32", "opset": opset}
            elif precision == "fp16":
                from ..export.fp16 import export_fp16_dit

                big = module_bytes(model.transformer) // 2 > EXTERNAL_DATA_THRESHOLD
                log(f"exporting {path.name}")
                method = export_fp16_dit(model, path, opset=opset, external_data=big)
            elif precision in ("int8", "fp8"):
                from ..export.quantize import quantize_dit

                source = directory / "dit.fp32.onnx"
                log(f"quantizing {path.name} (Model Optimizer, Q/DQ, {calib_samples} random calibration inputs)")
                method = quantize_dit(DitGraph(model.one_step_dit()), source, path,
                                      random_dit_feeds(model.config, calib_samples, prompt_tokens), mode=precision,
                                      num_layers=layers, keep_blocks=1 if layers > 2 else 0,
                                      external_data=bool(external_data_files(source)), progress=False)
                method = {**method, "calibration": f"{calib_samples} random N(0,1) inputs (smoke-level, not real data)"}
            elif precision == "int8-dynamic":
                source = directory / "dit.fp32.onnx"
                log(f"quantizing {path.name} (quantize_dynamic, MatMul only, QInt8)")
                method = quantize_dynamic_dit(source, path)
            else:
                raise ValueError(f"unknown precision {precision!r}")
        except Exception as exc:  # noqa: BLE001 - that precision's targets are recorded as failed
            if precision == "fp32":
                raise
            artifacts.failures[precision] = f"{type(exc).__name__}: {str(exc).strip()[:1000]}"
            log(f"could not make the {precision} DiT graph: {artifacts.failures[precision][:300]}")
            continue
        done[precision] = {"method": method["method"] if isinstance(method, dict) else str(method),
                           "details": method, "seconds": round(time.perf_counter() - start, 2)}
        save()
        artifacts.dit_files[precision] = path
        artifacts.methods[precision] = done[precision]["details"]
        artifacts.build_seconds[precision] = done[precision]["seconds"]
    return artifacts


def quantize_dynamic_dit(source: Path, out: Path) -> dict[str, Any]:
    """``quantize_dynamic`` of an fp32 DiT graph (see ``INT8_DYNAMIC_METHOD``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..export.onnx_io import external_data_files

    external = bool(external_data_files(source))
    out.unlink(missing_ok=True)
    out.with_name(out.name + ".data").unlink(missing_ok=True)
    quantize_dynamic(str(source), str(out), op_types_to_quantize=["MatMul"], per_channel=False,
                     weight_type=QuantType.QInt8, use_external_data_format=external,
                     extra_options={"MatMulConstBOnly": True})
    return {"method": INT8_DYNAMIC_METHOD, "base": "fp32", "external_data": external}


def random_dit_feeds(config: GenMaskConfig, n: int, prompt_tokens: int, seed: int = 1) -> list[dict]:
    """``n`` single-sample DiT feeds of N(0, 1) latents and contexts (all tokens real)."""
    generator = torch.Generator().manual_seed(seed)
    h, d = config.latent_size, config.embedder.hidden_size
    return [{"z_img": torch.randn(1, 16, h, h, generator=generator).numpy(),
             "context": torch.randn(1, prompt_tokens, d, generator=generator).numpy(),
             "context_mask": torch.ones(1, prompt_tokens, dtype=torch.bool).numpy()} for _ in range(n)]


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
        from ..export.tensorrt_build import tensorrt_available

        ok, why = tensorrt_available()
        if not ok:
            return why
    if spec.family == "torch" and spec.variant == "compile" and not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    return None


def open_target(spec: TargetSpec, artifacts: Artifacts, *, model, device: torch.device, threads: int | None,
                stages: tuple[str, ...], max_batch: int, max_prompt_tokens: int,
                log: Callable[[str], None] = print) -> OpenedTarget:
    """Load ``spec`` for ``stages`` of ``artifacts``; raise TargetUnavailable when it cannot run."""
    reason = unavailable_reason(spec, device)
    if reason:
        raise TargetUnavailable(reason)
    if spec.family == "torch":
        if model is None:
            raise TargetUnavailable("the PyTorch model was released before this target (internal ordering)")
        if spec.variant in ("eager", "bf16-autocast"):
            from ..backends import TorchPipeline  # the pipeline Segmenter.from_pretrained(dtype=...) runs

            dtype = "fp32" if spec.variant == "eager" else "bf16"
            return OpenedTarget(spec, TorchPipeline(model, dtype), model.device,
                                {"weights": "float32", "autocast": None if dtype == "fp32" else "bfloat16"})
        return OpenedTarget(spec, CompiledTorchPipeline(model, stages), model.device,
                            {"compile": "torch.compile(dynamic=False), inductor, default mode"})
    on_cuda = spec.needs_cuda
    target_device = device if on_cuda else torch.device("cpu")
    if spec.family == "tensorrt" and artifacts.mode == "dit-only":
        files = {"dit": _dit_only_plan(artifacts, spec.precision, max_batch, max_prompt_tokens, log)}
    else:
        files = _stage_files(spec, artifacts, stages)
    if spec.family == "openvino":  # the runner Segmenter.from_engines(backend="openvino") uses
        from ..runtime.openvino_runner import OpenVinoRunner

        runners = {stage: OpenVinoRunner(path, precision_hint=spec.variant, threads=threads or None)
                   for stage, path in files.items()}
        owned = []
    elif spec.family == "onnxruntime":
        from ..runtime.onnxruntime_runner import OnnxRuntimeRunner

        index = target_device.index or 0
        runners = {stage: OnnxRuntimeRunner(path, provider=spec.variant, device_id=index, intra_op_num_threads=threads,
                                            device_outputs=on_cuda) for stage, path in files.items()}
        owned = []
    else:
        from ..runtime.cuda import CudaDevice, Stream
        from ..runtime.tensorrt_runner import TensorRTRunner

        stream = Stream(CudaDevice(target_device.index or 0))
        runners = {stage: TensorRTRunner(path, device=str(target_device), stream=stream)
                   for stage, path in files.items()}
        owned = [stream]
    from ..backends import RunnerPipeline

    from ..backend_select import load_all_runners

    load_all_runners(runners)
    pipeline = RunnerPipeline(spec.family, runners, target_device, host_io=not on_cuda, owned=owned)
    if artifacts.mode == "pipeline":
        pipeline.check_graphs(artifacts.config.resolution, artifacts.config.embedder.hidden_size)
    details = {"files": {stage: str(path) for stage, path in files.items()},
               "dit_method": _dit_method(spec, artifacts), "intra_op_num_threads": threads}
    return OpenedTarget(spec, pipeline, target_device, details)


def _stage_files(spec: TargetSpec, artifacts: Artifacts, stages: tuple[str, ...]) -> dict[str, Path]:
    if spec.precision in artifacts.failures:
        raise RuntimeError(f"making the {spec.precision} DiT graph failed: {artifacts.failures[spec.precision]}")
    runtime = "tensorrt" if spec.family == "tensorrt" else "onnx"
    if spec.precision == "int8-dynamic":
        dit = artifacts.dit_files.get("int8-dynamic")
        if dit is None:
            raise TargetUnavailable("the int8-dynamic DiT graph was not prepared (internal)")
        files = {"dit": dit}
        if artifacts.manifest is not None:
            fp32 = artifacts.manifest.files("fp32", "onnx")
            files.update({s: fp32[s] for s in ("vae_encoder", "mask_head")})
        return {s: files[s] for s in stages}
    if artifacts.mode == "dit-only":
        if spec.precision not in artifacts.dit_files:
            raise TargetUnavailable(f"no {spec.precision} DiT graph was prepared")
        return {"dit": artifacts.dit_files[spec.precision]}
    from ..errors import ArtifactNotFoundError

    try:
        files = artifacts.manifest.files(spec.precision, runtime)
    except ArtifactNotFoundError as exc:
        raise TargetUnavailable(str(exc)) from None
    missing = [s for s in stages if s not in files]
    if missing:
        raise TargetUnavailable(f"the {spec.precision} {runtime} set lacks {missing}")
    return {s: files[s] for s in stages}


def _dit_method(spec: TargetSpec, artifacts: Artifacts) -> Any:
    if spec.precision in artifacts.methods:
        return artifacts.methods[spec.precision]
    if artifacts.manifest is not None:
        try:
            record = artifacts.manifest.artifact("dit", spec.precision, "onnx")
            return record.get("details")
        except Exception:  # noqa: BLE001 - descriptive only
            return None
    return None


def _dit_only_plan(artifacts: Artifacts, precision: str, max_batch: int, max_prompt_tokens: int, log) -> Path:
    """Build (or reuse) a TensorRT plan of the dit-only ``precision`` graph on this GPU."""
    from ..export.tensorrt_build import TensorRTBuildConfig, build_plan

    source = artifacts.dit_files.get(precision)
    if source is None:
        raise TargetUnavailable(f"no {precision} DiT graph was prepared to build a TensorRT plan from")
    plan = source.with_suffix(".plan")
    if not plan.is_file():
        config = artifacts.config
        h, d = config.latent_size, config.embedder.hidden_size
        half = max(1, max_prompt_tokens // 2)
        profiles = {"z_img": ((1, 16, h, h), (1, 16, h, h), (max_batch, 16, h, h)),
                    "context": ((1, 1, d), (1, half, d), (max_batch, max_prompt_tokens, d)),
                    "context_mask": ((1, 1), (1, half), (max_batch, max_prompt_tokens))}
        log(f"building TensorRT plan {plan.name} (batch 1..{max_batch}, prompt 1..{max_prompt_tokens})")
        info = build_plan(source, plan, TensorRTBuildConfig(profiles=profiles,
                                                            timing_cache=plan.parent / "timing.cache"))
        artifacts.build_seconds[f"trt-{precision}"] = round(info.build_seconds, 1)
    return plan


def detached_head(model):
    """A CPU copy of the model's mask decoder (``config.mask_decoder``; kept after the model is
    released, for fidelity)."""
    if model is None:
        return None
    head = copy.deepcopy(model.mask_decoder()).cpu().float().eval()
    return head
