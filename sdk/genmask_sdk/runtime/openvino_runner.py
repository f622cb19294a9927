"""Run an ONNX graph with OpenVINO (Intel / AMD CPUs; Intel iGPUs and NPUs where present).

OpenVINO reads our ONNX files directly (external data included; Q/DQ graphs become its
FakeQuantize int8 path) and compiles them for a device with an *inference precision hint*:
``"f32"`` (exact to the graph's precision), ``"bf16"`` (CPUs with AVX-512-BF16 or AMX) or
``"f16"`` (GPUs). ``precision_hint=None`` keeps OpenVINO's own default for the device, which on a
bf16-capable CPU is bf16 — so the hint actually used is always read back from the compiled model
(``inference_precision``) and reported, never assumed. The requested device is used or an error is
raised; nothing falls back. Install: ``pip install 'genmask-sdk[openvino]'``. torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, BackendUnavailableError, ConfigError
from genmask_sdk.runtime.base import Runner, TensorSpec
from genmask_sdk.runtime.feed_checks import check_feed_names, dtype_error, shape_error, shape_is_compatible

PRECISION_HINTS = ("f32", "bf16", "f16")
DEVICES = ("CPU", "GPU", "NPU")
INSTALL_HINT = "pip install 'genmask-sdk[openvino]' (or pip install openvino)"


def import_openvino():
    """The ``openvino`` module, or BackendUnavailableError saying how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(f"backend='openvino' needs OpenVINO, which is not installed ({exc}); "
                                      f"{INSTALL_HINT}.") from None
    return openvino


class OpenVinoRunner(Runner):
    """Serves one ``.onnx`` file with OpenVINO on ``device``.

    ``infer`` takes ``{name: numpy.ndarray}`` (the graph's dtypes and ranks; nothing is cast) and
    returns ``{name: numpy.ndarray}`` copies on the host.

    Args:
        device: ``"CPU"``, ``"GPU"`` or ``"NPU"`` (OpenVINO device names; ``"GPU.1"`` etc. allowed).
        precision_hint: ``"f32"``, ``"bf16"``, ``"f16"`` or None (OpenVINO's default for the device).
        threads: CPU inference threads (``INFERENCE_NUM_THREADS``); None lets OpenVINO choose.
    """

    name = "openvino"

    def __init__(self, onnx_path: str | os.PathLike[str], *, device: str = "CPU", precision_hint: str | None = "f32",
                 threads: int | None = None) -> None:
        super().__init__()
        if not isinstance(device, str) or device.split(".")[0] not in DEVICES:
            raise ConfigError(f"OpenVINO device must be one of {DEVICES} (optionally '.N'), got {device!r}.")
        if precision_hint is not None and precision_hint not in PRECISION_HINTS:
            raise ConfigError(f"precision_hint must be one of {PRECISION_HINTS} or None, got {precision_hint!r}.")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be None or an int >= 1, got {threads!r}.")
        self.onnx_path = Path(onnx_path)
        self.device, self.precision_hint, self.threads = device, precision_hint, threads
        self.inference_precision: str | None = None
        self.input_specs: list[TensorSpec] = []
        self.output_specs: list[TensorSpec] = []
        self._compiled: Any = None
        self._request: Any = None

    def _load_impl(self) -> None:
        ov = import_openvino()
        if not self.onnx_path.is_file():
            raise ArtifactNotFoundError(f"ONNX file {self.onnx_path} does not exist; rebuild the engines.")
        core = ov.Core()
        base = self.device.split(".")[0]
        if not any(d.split(".")[0] == base for d in core.available_devices):
            raise BackendUnavailableError(f"OpenVINO {ov.__version__} sees the devices {core.available_devices}, not "
                                          f"{self.device!r}; use device='CPU' or install the device's driver.")
        config: dict[str, Any] = {}
        if self.precision_hint is not None:
            config["INFERENCE_PRECISION_HINT"] = self.precision_hint
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            model = core.read_model(str(self.onnx_path))
            self._compiled = core.compile_model(model, self.device, config)
        except RuntimeError as exc:  # OpenVINO reports unsupported ops and bad hints as RuntimeError
            raise ArtifactMismatchError(f"OpenVINO {ov.__version__} could not compile {self.onnx_path.name} for "
                                        f"{self.device} (hint {self.precision_hint}): {str(exc).strip()[:400]}") from None
        self.inference_precision = _read_precision(self._compiled)
        self._request = self._compiled.create_infer_request()
        # names and types from the ONNX graph as read (compilation may add aliases to a port's names)
        self.input_specs = [_spec(port) for port in model.inputs]
        self.output_specs = [_spec(port) for port in model.outputs]

    def _close_impl(self) -> None:
        self._request, self._compiled = None, None

    def _infer_impl(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        specs = {s.name: s for s in self.input_specs}
        check_feed_names(self.name, feeds, list(specs))
        for name, value in feeds.items():
            if not isinstance(value, np.ndarray):
                raise ConfigError(f"the OpenVINO runner takes numpy arrays, got {type(value).__name__} for {name!r}.")
            if value.dtype.name != specs[name].dtype:
                raise dtype_error(name, value.dtype.name, specs[name].dtype)
            if not shape_is_compatible(value.shape, specs[name].shape):
                raise shape_error(name, value.shape, specs[name].shape)
        self._request.infer({name: np.ascontiguousarray(v) for name, v in feeds.items()})
        return {spec.name: np.array(self._request.get_output_tensor(i).data, copy=True)
                for i, spec in enumerate(self.output_specs)}

    def describe(self) -> dict[str, Any]:
        """Device, the hint asked for and the inference precision the compiled model reports."""
        return {"device": self.device, "precision_hint": self.precision_hint,
                "inference_precision": self.inference_precision, "threads": self.threads}


def _read_precision(compiled: Any) -> str | None:
    """The element type the compiled model computes in (``"f32"``, ``"bf16"``, ``"f16"``)."""
    try:
        value = compiled.get_property("INFERENCE_PRECISION_HINT")
    except RuntimeError:  # devices that do not report it
        return None
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


def _spec(port: Any) -> TensorSpec:
    shape = tuple(int(d.get_length()) if d.is_static else None for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), port.get_element_type().to_dtype().name, shape)
