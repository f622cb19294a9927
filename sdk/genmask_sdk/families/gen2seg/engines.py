"""Open gen2seg engines without torch: ``open_colorizer(directory)`` -> an ``EngineColorizer``
(``pipeline.py``), after the manifest and every file's sha256 are verified and the backend, precision
set and device are chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genmask_sdk.errors import BackendUnavailableError, ConfigError
from genmask_sdk.families.gen2seg.pipeline import BACKENDS, FAMILY, PRECISIONS, EngineColorizer


def open_colorizer(directory: str | Path, backend: str = "auto", precision: str | None = None,
                   device: Any = None, openvino_hint: str | None = "f32", threads: int | None = None) -> EngineColorizer:
    """Open the gen2seg engines in ``directory`` (manifest and every file's sha256 verified).

    backend: ``"onnxruntime"`` (ONNX Runtime: CPU provider, or CUDA for a CUDA ``device``),
        ``"tensorrt"`` (the set's TensorRT plans on a CUDA ``device``; BackendUnavailableError
        where TensorRT, the GPU or the plans are missing — never a silent substitute), or
        ``"auto"``: on a CUDA device TensorRT plans when the directory has them, else ONNX Runtime
        CUDA; on the CPU ONNX Runtime CPU. ``"openvino"``: the set's ONNX graphs compiled by
        OpenVINO on the CPU with ``openvino_hint`` (``"f32"``, ``"bf16"``, ``"f16"`` or None =
        OpenVINO's default); never chosen by ``auto``. ``"torch"`` raises BackendUnavailableError
        (load the PyTorch reference with ``genmask_sdk.families.gen2seg.modeling.load_gen2seg``).
    precision: ``"fp32"``, ``"fp16"`` or ``"int8"``, a set the directory holds (else
        BackendUnavailableError); None (default) = fp32, as ``Segmenter.from_engines`` chooses
        where a build records no CPU timing (gen2seg builds record none).
    device: ``None`` (default): the first GPU when one is visible, else the CPU (the same rule as
        ``Segmenter.from_engines``; the reason is in ``describe()["fallbacks"]``); ``"cpu"``;
        ``"cuda"`` / ``"cuda:N"``: that GPU (its runtime raises BackendUnavailableError when it
        cannot serve it).
    threads: CPU threads per graph for ONNX Runtime / OpenVINO (None: the runtime's default).
    Raises ArtifactNotFoundError / ArtifactMismatchError for a missing, invalid, tampered or
    GenMask (not gen2seg) directory, ConfigError for unknown argument values.
    """
    from genmask_sdk.runtime.devices import parse_device, resolve_device
    from genmask_sdk.runtime.manifest import load_manifest

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    precision_choice = None
    if precision is None:
        precision = "fp32"
        precision_choice = {"precision": precision, "reason": "precision=None: fp32 (a gen2seg build records no CPU "
                                                              "timing to choose a faster faithful set from)"}
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS} for gen2seg engines, got {precision!r}.")
    # None: the first visible GPU, else the CPU (as Segmenter); an explicit device is taken as asked, and
    # the runtime that serves it says what is missing.
    target, device_note = resolve_device(None) if device is None else (parse_device(device), None)
    manifest = load_manifest(directory, verify=True, family=FAMILY)
    if backend == "torch":
        raise BackendUnavailableError("backend='torch' is not served from gen2seg engines; load the PyTorch reference "
                                      "with genmask_sdk.families.gen2seg.modeling.load_gen2seg(checkpoint).")
    if precision not in manifest.precisions:
        raise BackendUnavailableError(f"precision={precision!r} was requested but {manifest.directory} has only the "
                                      f"sets {sorted(manifest.precisions)}; build it with --precisions {precision}.")
    plans = (manifest.data["sets"][precision] or {}).get("tensorrt")
    notes = {"precision_choice": precision_choice, "device_choice": device_note}
    if backend == "tensorrt" or (backend == "auto" and target.type == "cuda" and plans):
        return _open_tensorrt(manifest, precision, target, backend, device, notes)
    records = {stage: manifest.artifact(stage, precision) for stage in manifest.files(precision)}
    if backend == "openvino":
        if target.type != "cpu":
            raise BackendUnavailableError(f"backend='openvino' runs on the CPU here, but the device is {str(target)!r}; "
                                          "pass device='cpu'.")
        return EngineColorizer(manifest.data["processing"], manifest.files(precision), precision=precision,
                               records=records, directory=manifest.directory, runtime="openvino",
                               choice={"backend": backend, "reason": f"OpenVINO CPU, hint {openvino_hint}", **notes},
                               prompt_defaults=manifest.data.get("prompt_config"), openvino_hint=openvino_hint,
                               threads=threads)
    provider = "cpu" if target.type == "cpu" else "cuda"
    skipped = "" if backend != "auto" or target.type == "cpu" else "; no TensorRT plans in the directory"
    choice = {"backend": backend, "requested_device": None if device is None else str(device),
              "reason": "ONNX Runtime " + ("CPU provider" if provider == "cpu" else "CUDA provider") + skipped, **notes}
    return EngineColorizer(manifest.data["processing"], manifest.files(precision), provider=provider,
                           device_id=target.index or 0, precision=precision, records=records,
                           directory=manifest.directory, choice=choice,
                           prompt_defaults=manifest.data.get("prompt_config"), threads=threads)


def _open_tensorrt(manifest, precision: str, target, backend: str, device: Any, notes: dict) -> EngineColorizer:
    """The ``precision`` set's TensorRT plans, or BackendUnavailableError saying what is missing."""
    if target.type != "cuda":
        raise BackendUnavailableError(f"backend='tensorrt' runs on a CUDA GPU, but the device is {str(target)!r}; "
                                      "pass device='cuda', or use backend='onnxruntime' on the CPU.")
    plans = (manifest.data["sets"][precision] or {}).get("tensorrt")
    if not plans:
        summary = manifest.data.get("tensorrt") or {}
        why = summary.get("reason") or "not built"
        raise BackendUnavailableError(
            f"backend='tensorrt': {manifest.directory} has no TensorRT plans for the {precision} set ({why}). Build "
            "them on this GPU: genmask build --checkpoint ... --tensorrt on (or run the trtexec commands the "
            "manifest lists under tensorrt.trtexec), or use backend='onnxruntime'.")
    records = {stage: manifest.artifact(stage, precision, "tensorrt") for stage in plans}
    choice = {"backend": backend, "requested_device": None if device is None else str(device),
              "reason": "TensorRT plans of the set" + (" (auto: a CUDA device and plans)" if backend == "auto" else ""),
              **notes}
    return EngineColorizer(manifest.data["processing"], manifest.files(precision, "tensorrt"), provider="tensorrt",
                            device_id=target.index or 0, precision=precision, records=records,
                            directory=manifest.directory, choice=choice, runtime="tensorrt",
                            prompt_defaults=manifest.data.get("prompt_config"))
