"""Choosing and opening a backend for an engines directory.

``open_engines`` turns (manifest, backend, precision, device) into a loaded pipeline plus a
record of what was chosen. An explicit request is honoured or refused with
BackendUnavailableError; only ``backend="auto"`` (and ``device=None``) choose, in the order
``AUTO_ORDER`` on a GPU, and every option skipped is recorded with its reason.

Precision: a named set is honoured or refused. ``precision=None`` lets the SDK choose: with
``backend="auto"`` on a CPU, the fastest set of the build's CPU timing (the manifest's
``cpu_timing``) among those whose DiT keeps the PyTorch masks (pooled mask IoU >=
``FAITHFUL_MASK_IOU`` in its fidelity record); otherwise fp32. The choice and why are recorded.

The engines directory (``engines/<name>/manifest.json``; its schema is ``genmask_sdk.export.manifest``'s
docstring), as GenMask reads it::

    config (GenMaskConfig.to_dict(), resolution as exported), checkpoint {source, path, sha256},
    resolution, max_batch, max_prompt_tokens, sdk_version, format_version, tools,
    artifacts: [{stage, precision, runtime, file, sha256, inputs, outputs, ...}],
    sets: {precision: {"onnx": {stage: file} | null, "tensorrt": {stage: file} | null}}

``stage`` is ``vae_encoder`` | ``dit`` | ``mask_head``; ``runtime`` is ``onnx`` | ``tensorrt``.
Nothing here imports torch or onnxruntime at import time, so ``genmask info`` stays fast.
"""


from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from genmask_sdk.runtime.runners import load_all_runners, make_runners
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, BackendUnavailableError, ConfigError
from genmask_sdk.runtime.devices import Device, resolve_device  # noqa: F401  (resolve_device re-exported)

logger = logging.getLogger("genmask_sdk.families.genmask.segmenter")

BACKENDS = ("auto", "tensorrt", "onnxruntime", "openvino", "torch")
ORT_PROVIDERS = ("cpu", "cuda", "tensorrt")
#: What ``backend="auto"`` tries, fastest first: (backend, onnxruntime provider, needs a GPU).
AUTO_ORDER = (("tensorrt", None, True), ("onnxruntime", "cuda", True), ("onnxruntime", "cpu", False),
              ("torch", None, False))

STAGES = ("vae_encoder", "dit", "mask_head")
PRECISIONS = ("fp32", "fp16", "int8", "fp8", "int8-dynamic")


def open_manifest(directory: str | Path, verify: bool = True):
    """The exporter's ``Manifest`` (``.directory``, ``.data``) after its format/version checks
    and, with ``verify``, the sha256 of every file. Raises ArtifactNotFoundError /
    ArtifactMismatchError with the command that rebuilds the directory."""
    from genmask_sdk.runtime.manifest import load_manifest

    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactNotFoundError(
            f"engine directory {directory} does not exist; pass the folder that holds manifest.json "
            "(written by 'genmask build')."
        )
    return load_manifest(directory, verify=verify)


def manifest_config(manifest):
    """The ``GenMaskConfig`` the engines were exported with (its resolution is the engines')."""
    from genmask_sdk.families.genmask.config import GenMaskConfig

    if manifest.family != "genmask":
        raise ArtifactMismatchError(f"{manifest.directory} holds {manifest.family} engines (family "
                                    f"{manifest.family!r}), not GenMask ones; open them with genmask_sdk.InstanceSegmenter.")
    try:
        return GenMaskConfig.from_dict(manifest.data["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ArtifactMismatchError(f"{manifest.directory}/manifest.json has an invalid config ({exc}); "
                                    "rebuild the engines.") from None


def select_artifacts(manifest, runtime: str, precision: str) -> dict[str, dict[str, Any]]:
    """``{stage: artifact record}`` of the ``precision`` set on ``runtime`` (``"onnx"`` |
    ``"tensorrt"``), or raise LookupError with the reason (the set was not built)."""
    try:
        files = manifest.files(precision, runtime)
    except ArtifactNotFoundError as exc:
        raise LookupError(str(exc)) from None
    missing = [stage for stage in STAGES if stage not in files]
    if missing:
        raise LookupError(f"the {precision} {runtime} set lacks the stages {missing}")
    return {stage: manifest.artifact(stage, precision, runtime) for stage in STAGES}


def describe_manifest(data: Mapping[str, Any]) -> dict[str, Any]:
    """A short summary of a manifest's JSON for ``genmask info`` and ``Segmenter.describe()``."""
    config = data.get("config", {})
    return {
        "format_version": data.get("format_version"),
        "sdk_version": data.get("sdk_version"),
        "created": data.get("created"),
        "model": config.get("name"),
        "embedder": config.get("embedder", {}),
        "resolution": data.get("resolution", config.get("resolution")),
        "max_batch": data.get("max_batch"),
        "max_prompt_tokens": data.get("max_prompt_tokens"),
        "checkpoint": data.get("checkpoint", {}),
        "tools": data.get("tools", {}),
        "sets": {p: sorted(r for r, files in entry.items() if files) for p, entry in data.get("sets", {}).items()},
        "cpu_timing": data.get("cpu_timing"),
        "artifacts": [{k: a.get(k) for k in ("stage", "precision", "runtime", "file", "sha256", "bytes")}
                      for a in data.get("artifacts", [])],
    }



#: A quantized CPU set is chosen automatically only if its DiT's masks match PyTorch's this well
#: (pooled IoU over the build's check inputs).
FAITHFUL_MASK_IOU = 0.99


def choose_precision(manifest, backend: str, device: Device) -> tuple[str, str]:
    """(precision, why) for ``precision=None`` (see the module docstring)."""
    if backend != "auto" or device.type != "cpu":
        return "fp32", "precision=None: fp32 (the SDK chooses a set only for backend='auto' on a CPU)"
    return choose_cpu_set(manifest)


def choose_cpu_set(manifest) -> tuple[str, str]:
    """The fastest faithful set of the manifest's ``cpu_timing`` and why; fp32 without timings."""
    timing = manifest.data.get("cpu_timing") or {}
    timed = timing.get("sets") or {}
    candidates, rejected = [], []
    for precision, times in timed.items():
        if precision not in manifest.precisions:
            continue
        if precision != "fp32":
            try:
                fidelity = manifest.artifact("dit", precision, "onnx").get("fidelity") or {}
            except Exception:  # noqa: BLE001 - a set without a DiT record cannot be vouched for
                fidelity = {}
            iou = fidelity.get("mask_iou_pooled")
            if iou is None or iou < FAITHFUL_MASK_IOU:
                rejected.append(f"{precision} (DiT mask IoU {iou} < {FAITHFUL_MASK_IOU})")
                continue
        candidates.append((float(times["p50_ms"]), precision))
    if not candidates:
        return "fp32", ("precision=None on a CPU: fp32 (the manifest has no CPU timing of a faithful set; build "
                        "with the int8-dynamic set and CPU timing to let the SDK choose)")
    ms, precision = min(candidates)
    from genmask_sdk.runtime.hardware import cpu_model

    here = cpu_model()
    others = ", ".join(f"{p} {t:.0f} ms" for t, p in sorted(candidates) if p != precision)
    why = (f"precision=None on a CPU: {precision}, the fastest faithful CPU set timed at build time "
           f"({ms:.0f} ms p50 per image on {timing.get('cpu')}" + (f"; {others}" if others else "") + ")")
    if rejected:
        why += "; not faithful enough: " + ", ".join(rejected)
    if here != timing.get("cpu"):
        why += f"; note: this CPU ({here}) is not the one the sets were timed on"
    return precision, why


@dataclass
class Opened:
    """A loaded pipeline and how it was chosen."""

    pipeline: Any
    backend: str
    provider: str | None
    artifacts: dict[str, dict[str, Any]]
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    model: Any = None  # the GenMaskModel of the torch backend
    runtime_options: dict[str, Any] | None = None  # openvino: the precision hint asked for and obtained per stage
    precision: str = "fp32"  # the set that was opened
    precision_choice: str | None = None  # precision=None: which set the SDK chose and why


def open_engines(manifest, config, backend: str, precision: str | None, device: Device,
                 ort_provider: str | None, verify: bool = True, openvino_hint: str | None = "f32",
                 threads: int | None = None) -> Opened:
    """Load the requested backend, or for ``auto`` the first in ``AUTO_ORDER`` that works.

    ``manifest`` is the exporter's ``Manifest``; ``precision`` a set name, or None to let the SDK
    choose (``choose_precision``); ``verify`` also checks the checkpoint's sha256 when the torch
    backend loads it. ``openvino_hint``: OpenVINO's inference precision for ``backend="openvino"``
    (``runtime.openvino_runner``; never chosen by ``auto``). ``threads``: CPU threads of the ONNX
    Runtime (intra-op) or OpenVINO graphs; None = the runtime's default (one per physical core)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be None or an int >= 1, got {threads!r}.")
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    choice = None
    if precision is None:
        precision, choice = choose_precision(manifest, backend, device)
        logger.info("Segmenter: %s", choice)
    opened = _open_engines(manifest, config, backend, precision, device, ort_provider, verify, openvino_hint, threads)
    opened.precision, opened.precision_choice = precision, choice
    return opened


def _open_engines(manifest, config, backend: str, precision: str, device: Device,
                  ort_provider: str | None, verify: bool, openvino_hint: str | None, threads: int | None) -> Opened:
    directory = manifest.directory
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if ort_provider is not None and ort_provider not in ORT_PROVIDERS:
        raise ConfigError(f"ort_provider must be one of {ORT_PROVIDERS}, got {ort_provider!r}.")
    if backend != "torch" and precision not in manifest.precisions:
        raise BackendUnavailableError(
            f"precision={precision!r} was requested but {directory} has only the sets "
            f"{sorted(manifest.precisions)}; pick one of those, or build it: genmask build ... --precisions {precision}."
        )
    if backend != "auto":
        provider = ort_provider or ("cuda" if device.type == "cuda" else "cpu")
        if backend == "onnxruntime" and provider == "cpu" and device.type == "cuda":
            raise ConfigError(f"ort_provider='cpu' runs the graphs on the CPU but device={str(device)!r}; "
                              "pass device='cpu' (or ort_provider='cuda').")
        return _open(manifest, config, backend, provider, precision, device, verify, openvino_hint, threads)
    skipped: list[dict[str, str]] = []
    for name, provider, needs_gpu in AUTO_ORDER:
        label = name + (f"[{provider}]" if provider else "")
        if needs_gpu and device.type != "cuda":
            skipped.append({"option": label, "reason": f"needs a CUDA device, running on {device}"})
            continue
        try:
            opened = _open(manifest, config, name, provider, precision, device, verify, threads=threads)
        except BackendUnavailableError as exc:
            skipped.append({"option": label, "reason": str(exc)})
            continue
        opened.fallbacks = skipped
        reasons = "; ".join(f"{s['option']}: {s['reason'][:120]}" for s in skipped) or "none"
        logger.info("backend='auto' chose %s (%s, %s); skipped: %s", label, precision, device, reasons)
        return opened
    raise BackendUnavailableError(
        "backend='auto' found no usable backend:\n" + "\n".join(f"  {s['option']}: {s['reason']}" for s in skipped)
    )


def _open(manifest, config, backend: str, provider: str | None, precision: str, device: Device,
          verify: bool, openvino_hint: str | None = "f32", threads: int | None = None) -> Opened:
    directory = manifest.directory
    if backend == "torch":
        return _open_torch(manifest, config, precision, device, verify)
    if backend == "tensorrt" and device.type != "cuda":
        raise BackendUnavailableError(
            f"backend='tensorrt' runs on a CUDA GPU, but the device is {str(device)!r}; pass device='cuda' on a "
            "GPU machine, or use backend='onnxruntime' on the CPU."
        )
    if backend == "openvino" and device.type != "cpu":
        raise BackendUnavailableError(f"backend='openvino' runs here on the CPU, but device={str(device)!r}; pass "
                                      "device='cpu' (OpenVINO's Intel GPU / NPU devices are not wired up yet).")
    runtime = "tensorrt" if backend == "tensorrt" else "onnx"
    try:
        artifacts = select_artifacts(manifest, runtime, precision)
    except LookupError as exc:
        refused = ((manifest.data.get("tensorrt") or {}).get("refused") or {}).get(precision) if runtime == "tensorrt" else None
        why = f" The build refused TensorRT plans for it: {refused}." if refused else ""
        raise BackendUnavailableError(
            f"backend={backend!r} precision={precision!r} is not available: {exc.args[0]}{why} "
            "Or choose another backend/precision (genmask info DIR lists what was built)."
        ) from None
    from genmask_sdk.families.genmask.pipeline import RunnerPipeline

    options = None
    if backend == "tensorrt":
        runners, stream = _load_runners(directory, artifacts, "tensorrt", device_id=device.index or 0)
        pipeline = RunnerPipeline("tensorrt", runners, device, host_io=False, owned=[stream])
    elif backend == "openvino":  # the set's ONNX graphs compiled by OpenVINO for the CPU (host numpy in and out)
        runners, _ = _load_runners(directory, artifacts, "openvino", openvino_hint=openvino_hint, threads=threads)
        pipeline = RunnerPipeline("openvino", runners, Device("cpu"), host_io=True)
        options = {"precision_hint": openvino_hint,
                   "inference_precision": {stage: r.inference_precision for stage, r in runners.items()}}
    else:
        if provider != "cpu" and device.type != "cuda":
            raise BackendUnavailableError(
                f"onnxruntime provider {provider!r} runs on a CUDA device, but device={str(device)!r}; "
                "pass device='cuda' or ort_provider='cpu'."
            )
        runners, _ = _load_runners(directory, artifacts, "onnx", provider=provider, device_id=device.index or 0,
                                    threads=threads, device_outputs=provider != "cpu")
        on_cpu = provider == "cpu"  # (auto on a GPU host may end here: the fallback is recorded)
        pipeline = RunnerPipeline("onnxruntime", runners, Device("cpu") if on_cpu else device, host_io=on_cpu)
    _check_or_close(pipeline, config, artifacts)
    return Opened(pipeline, backend, provider if backend == "onnxruntime" else None, artifacts,
                  runtime_options=options)


def _check_or_close(pipeline, config, artifacts: Mapping[str, Mapping[str, Any]]) -> None:
    """The loaded graphs' I/O against the config and the manifest's records; closes the pipeline on failure."""
    try:
        pipeline.check_graphs(config.resolution, config.embedder.hidden_size)
        pipeline.check_records(artifacts)
    except Exception:
        pipeline.close()
        raise


def _open_torch(manifest, config, precision: str, device: Device, verify: bool) -> Opened:
    """The PyTorch reference from the checkpoint the manifest records (fp32 only), checked
    against the manifest (config, and the checkpoint's sha256 when ``verify``) and run at the
    engines' resolution."""
    from genmask_sdk.families.genmask.modeling.torch_pipeline import TorchPipeline
    from genmask_sdk.export.manifest import checkpoint_sha256
    from genmask_sdk.runtime.manifest import check_manifest
    from genmask_sdk.families.genmask.modeling.model import GenMaskModel

    if precision != "fp32":
        raise BackendUnavailableError(
            f"backend='torch' runs fp32 only, got precision={precision!r}; use backend='onnxruntime' or "
            "'tensorrt' for fp16/int8/fp8 engines."
        )
    record = manifest.data.get("checkpoint") or {}
    path, source = record.get("path"), record.get("source")
    location = path if path and Path(path).is_dir() else (source if source == "demo" else None)
    if not location:  # local files only: a manifest never makes the SDK download a checkpoint
        raise BackendUnavailableError(
            f"backend='torch' needs the checkpoint the engines were built from, which is not on this machine "
            f"(recorded path {path!r}, source {source!r}); from_engines loads local files only. Put the checkpoint "
            "at that path, or load it yourself with Segmenter.from_pretrained(...)."
        )
    try:
        model = GenMaskModel.from_pretrained(location, device=str(device))
    except FileNotFoundError as exc:
        raise BackendUnavailableError(
            f"backend='torch' needs the checkpoint the engines were built from ({source or path}), which cannot "
            f"be loaded: {exc}"
        ) from None
    directory = getattr(model, "checkpoint_dir", None)
    check_manifest(manifest, model.config, checkpoint_sha256(directory) if verify and directory else None)
    if model.config.resolution != config.resolution:  # engines may be exported at another resolution
        model.config = model.config.replace(resolution=config.resolution)
        model.invalidate()
    files = {"checkpoint": {"file": str(directory or location), "sha256": record.get("sha256"),
                            "runtime": "torch", "precision": "fp32"}}
    return Opened(TorchPipeline(model), "torch", None, files, model=model)


def _load_runners(directory: Path, artifacts: Mapping[str, Mapping[str, Any]], runtime: str,
                  **options: Any) -> tuple[dict, Any]:
    """The loaded runners of the set's files (``runtime.runners``) and the CUDA stream TensorRT
    runners share (destroyed again when loading fails)."""
    runners, stream = make_runners({stage: directory / a["file"] for stage, a in artifacts.items()}, runtime, **options)
    try:
        return load_all_runners(runners), stream
    except Exception:
        if stream is not None:
            stream.destroy()
        raise
