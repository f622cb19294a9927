"""Making the runners of an engine set, one per stage file, for any family: ONNX Runtime, OpenVINO or
TensorRT (the one place that knows how each is constructed and loaded). numpy + the runtimes only.

    runners, stream = make_runners({"dit": path, ...}, "onnx", provider="cpu", threads=2)
    runners = load_all_runners(runners)     # all loaded, or none (those loaded are closed again)

``runtime``: ``"onnx"`` (ONNX Runtime with ``provider`` ``"cpu"`` | ``"cuda"`` | ``"tensorrt"``),
``"openvino"`` (CPU, ``openvino_hint``) or ``"tensorrt"`` (plans on one CUDA stream of
``device_id``, returned as ``stream`` so the caller destroys it; None for the other runtimes).
``threads`` (ONNX Runtime, OpenVINO): CPU threads per graph, None = the runtime's default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from genmask_sdk.errors import BackendUnavailableError, ConfigError

RUNTIMES = ("onnx", "openvino", "tensorrt")


def make_runners(files: Mapping[str, Path], runtime: str, *, provider: str = "cpu", device_id: int = 0,
                 threads: int | None = None, openvino_hint: str | None = "f32",
                 device_outputs: bool = False) -> tuple[dict[str, Any], Any]:
    """``({stage: unloaded runner}, CUDA stream or None)`` for ``files`` on ``runtime``.

    Raises BackendUnavailableError (with the install command) when the runtime is missing.
    ``device_outputs`` (ONNX Runtime on a GPU provider): stage outputs stay on the device."""
    if runtime == "tensorrt":
        from genmask_sdk.runtime.cuda import CudaDevice, Stream
        from genmask_sdk.runtime.tensorrt_runner import TensorRTRunner
        from genmask_sdk.runtime.trt_api import import_tensorrt

        import_tensorrt()  # BackendUnavailableError with install instructions when missing
        stream = Stream(CudaDevice(device_id))
        return {stage: TensorRTRunner(Path(path), device=f"cuda:{device_id}", stream=stream)
                for stage, path in files.items()}, stream
    if runtime == "openvino":
        from genmask_sdk.runtime.openvino_runner import OpenVinoRunner, import_openvino

        import_openvino()  # BackendUnavailableError with install instructions when missing
        return {stage: OpenVinoRunner(Path(path), device="CPU", precision_hint=openvino_hint, threads=threads)
                for stage, path in files.items()}, None
    if runtime != "onnx":
        raise ConfigError(f"runtime must be one of {RUNTIMES}, got {runtime!r}.")
    try:
        from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner
    except ImportError as exc:
        raise BackendUnavailableError(f"onnxruntime is not installed ({exc}); pip install onnxruntime.") from None
    return {stage: OnnxRuntimeRunner(Path(path), provider=provider, device_id=device_id,
                                     device_outputs=device_outputs, intra_op_num_threads=threads)
            for stage, path in files.items()}, None


def load_all_runners(runners: dict) -> dict:
    """Load every runner; on any failure close those already loaded and re-raise."""
    loaded = []
    try:
        for runner in runners.values():
            loaded.append(runner.load())
    except Exception:
        for runner in loaded:
            runner.close()
        raise
    return runners
