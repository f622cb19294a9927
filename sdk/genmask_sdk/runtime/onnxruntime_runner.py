"""Run an ONNX graph with ONNX Runtime on the CPU, CUDA or TensorRT execution provider.

The requested provider is used or an error is raised: never a silent fallback to the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    ConfigError,
    InputTypeError,
    InvalidInputError,
)
from genmask_sdk.runtime.base import Runner, TensorSpec, is_torch_tensor
from genmask_sdk.runtime.cuda import wait_for_torch_producer
from genmask_sdk.runtime.feed_checks import check_feed_names, dtype_error, shape_error, shape_is_compatible
from genmask_sdk.runtime.shape_profiles import ShapeRange, format_profile_shapes, normalize_profiles

EXECUTION_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
GRAPH_OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# ONNX Runtime type string -> numpy dtype name (TensorSpec.dtype).
_ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16", "tensor(bool)": "bool", "tensor(int8)": "int8",
    "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
}  # fmt: skip
REBUILD_HINT = "Re-export it: python export/build_engines.py ... --backend onnx"


class OnnxRuntimeRunner(Runner):
    """Serves one ``.onnx`` file (external weights next to it) with one execution provider.

    ``infer`` accepts
      * ``{name: numpy.ndarray}`` -> ``{name: numpy.ndarray}`` on the host (``session.run``), unless
        ``device_outputs=True``;
      * otherwise, through IOBinding: per input a numpy array (copied to the binding device once),
        an ``onnxruntime.OrtValue`` on the binding device (``"cuda"`` for the CUDA / TensorRT
        providers, ``"cpu"`` for the CPU one), or, on CUDA, any contiguous array with
        ``__cuda_array_interface__`` on ``cuda:<device_id>`` (a torch CUDA tensor, a genmask
        ``DeviceArray``; read in place after its producer's stream is waited for). Outputs are
        ``OrtValue``s on the binding device, allocated by ONNX Runtime per call and owned by the
        caller (``.numpy()`` copies one to the host); they are complete when ``infer`` returns.
        This is how a pipeline keeps intermediates on the GPU between sessions, without torch.
    Inputs must have the graph's dtypes and ranks (and sizes on static axes); nothing is cast.

    Args:
        provider: ``"cpu"``, ``"cuda"`` or ``"tensorrt"`` (TensorRT EP with the CUDA EP for the
            nodes TensorRT does not take; ONNX Runtime keeps CPU for nodes neither can run).
        device_id: CUDA device for ``"cuda"``/``"tensorrt"``.
        intra_op_num_threads: CPU threads per op; ``None`` lets ONNX Runtime choose.
        graph_optimization_level: ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"``.
        allow_spinning: let ONNX Runtime's intra-op threads busy-wait after a run (its default,
            session config ``session.intra_op.allow_spinning``). Off here: a Segmenter runs three
            sessions and a PyTorch embedder in turn, and threads spinning after one stage take the
            cores the next stage needs (measured on the demo on 2 cores: end to end ~2x slower).
        trt_profiles: TensorRT EP shape profiles, ``{input: (min, opt, max)}``; give every dynamic
            input, otherwise the EP rebuilds engines as new shapes arrive.
        trt_cache_dir: where the TensorRT EP caches engines and timing data (default
            ``<onnx dir>/ort_trt_cache``); the first session builds, later ones load in seconds.
        trt_builder_optimization_level: 0..5, like ``TensorRTBuildConfig``.
        provider_options: extra options merged into the provider's options (override ours).
        device_outputs: return ``OrtValue``s on the binding device even for numpy feeds.
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        *,
        provider: str = "cpu",
        device_id: int = 0,
        intra_op_num_threads: int | None = None,
        graph_optimization_level: str = "all",
        allow_spinning: bool = False,
        trt_profiles: Mapping[str, ShapeRange] | None = None,
        trt_cache_dir: str | os.PathLike[str] | None = None,
        trt_builder_optimization_level: int = 3,
        provider_options: Mapping[str, Any] | None = None,
        device_outputs: bool = False,
    ) -> None:
        super().__init__()
        if provider not in EXECUTION_PROVIDERS:
            raise ConfigError(
                f"provider must be one of {sorted(EXECUTION_PROVIDERS)}, got {provider!r}."
            )
        if graph_optimization_level not in GRAPH_OPTIMIZATION_LEVELS:
            raise ConfigError(
                f"graph_optimization_level must be one of {list(GRAPH_OPTIMIZATION_LEVELS)}, got "
                f"{graph_optimization_level!r}."
            )
        threads = intra_op_num_threads
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise ConfigError(
                f"intra_op_num_threads must be None or an int >= 0, got {intra_op_num_threads!r}."
            )
        if trt_builder_optimization_level not in range(6):
            raise ConfigError(
                "trt_builder_optimization_level must be 0..5, got "
                f"{trt_builder_optimization_level!r} (3 is TensorRT's default)."
            )
        self.onnx_path = Path(onnx_path)
        self.provider = provider
        self.device_id = int(device_id)
        self.intra_op_num_threads = intra_op_num_threads
        self.graph_optimization_level = graph_optimization_level
        self.allow_spinning = bool(allow_spinning)
        self.trt_profiles = normalize_profiles(trt_profiles)
        self.trt_cache_dir = (
            Path(trt_cache_dir) if trt_cache_dir else self.onnx_path.parent / "ort_trt_cache"
        )
        self.trt_builder_optimization_level = trt_builder_optimization_level
        self.provider_options = dict(provider_options or {})
        self.device_outputs = bool(device_outputs)
        self._session: ort.InferenceSession | None = None
        self.input_specs: list[TensorSpec] = []
        self.output_specs: list[TensorSpec] = []

    # ---- load / close -------------------------------------------------------------------------

    def _load_impl(self) -> None:
        if not self.onnx_path.is_file():
            raise ArtifactNotFoundError(
                f"ONNX file {self.onnx_path} does not exist. {REBUILD_HINT}"
            )
        wanted = EXECUTION_PROVIDERS[self.provider]
        available = ort.get_available_providers()
        if wanted not in available:
            raise BackendUnavailableError(
                f"provider={self.provider!r} needs {wanted}, but this onnxruntime "
                f"{ort.__version__} only offers {available}. Install the GPU build (pip "
                "uninstall onnxruntime && pip install onnxruntime-gpu) on a machine with CUDA, or "
                "use provider='cpu'."
            )
        try:
            session = ort.InferenceSession(
                str(self.onnx_path),
                sess_options=self._session_options(),
                providers=self._providers(available),
                enable_fallback=0,
            )
        except Exception as exc:  # onnxruntime raises its own pybind11 exception types
            raise self._load_error(exc) from exc
        used = session.get_providers()
        if not used or used[0] != wanted:
            raise BackendUnavailableError(
                f"onnxruntime created the session with {used} instead of {wanted}: the provider "
                "failed to initialize (missing CUDA/cuDNN/TensorRT libraries or no GPU; see the "
                "onnxruntime log above). Fix the installation or use provider='cpu'."
            )
        self._session = session
        self.input_specs = [_spec(a) for a in session.get_inputs()]
        self.output_specs = [_spec(a) for a in session.get_outputs()]

    def _session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[self.graph_optimization_level]
        if self.intra_op_num_threads is not None:
            options.intra_op_num_threads = self.intra_op_num_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        return options

    def _providers(self, available: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """Provider list with options; see ONNX Runtime's CUDA / TensorRT EP option tables."""
        cuda = ("CUDAExecutionProvider", {"device_id": self.device_id})
        if self.provider == "cpu":
            return [("CPUExecutionProvider", dict(self.provider_options))]
        if self.provider == "cuda":
            return [(cuda[0], {**cuda[1], **self.provider_options})]
        self.trt_cache_dir.mkdir(parents=True, exist_ok=True)
        trt_options: dict[str, Any] = {
            "device_id": self.device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self.trt_cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(self.trt_cache_dir),
            "trt_builder_optimization_level": self.trt_builder_optimization_level,
        }
        if self.trt_profiles:
            for key, which in (("min", 0), ("opt", 1), ("max", 2)):
                shapes = format_profile_shapes(self.trt_profiles, which)
                trt_options[f"trt_profile_{key}_shapes"] = shapes
        providers = [("TensorrtExecutionProvider", {**trt_options, **self.provider_options})]
        return providers + ([cuda] if cuda[0] in available else [])

    def _load_error(self, exc: Exception) -> Exception:
        """Turn an onnxruntime load failure into ArtifactNotFoundError / ArtifactMismatchError."""
        corrupt = ArtifactMismatchError(
            f"{self.onnx_path} is not a readable ONNX model (truncated or corrupt?): {exc}. "
            + REBUILD_HINT
        )
        if type(exc).__name__ == "InvalidProtobuf":
            return corrupt
        try:
            missing = missing_external_data(self.onnx_path)
        except Exception:
            return corrupt
        if missing:
            return ArtifactNotFoundError(
                f"{self.onnx_path} keeps weights in external files that are missing: {missing}. "
                f"Copy them next to the .onnx file (same relative paths). {REBUILD_HINT}"
            )
        return ArtifactMismatchError(
            f"onnxruntime {ort.__version__} ({self.provider}) could not load {self.onnx_path}: "
            f"{exc}. If provider='cpu' loads it, the execution provider is at fault; otherwise "
            + REBUILD_HINT
        )

    def _close_impl(self) -> None:
        self._session = None

    # ---- infer --------------------------------------------------------------------------------

    def _infer_impl(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        specs = {s.name: s for s in self.input_specs}
        check_feed_names(self.name, feeds, list(specs))
        host_only = all(isinstance(v, np.ndarray) for v in feeds.values())
        if host_only and not self.device_outputs:
            for name, value in feeds.items():
                _check_dtype_and_shape(name, value.dtype.name, value.shape, specs[name])
            outputs = self._session.run(None, dict(feeds))  # type: ignore[union-attr]
            return {s.name: out for s, out in zip(self.output_specs, outputs)}
        return self._infer_bound(feeds, specs)

    @property
    def binding_device(self) -> str:
        """Where IOBinding keeps tensors: ``"cuda"`` for the CUDA / TensorRT providers, else ``"cpu"``."""
        return "cpu" if self.provider == "cpu" else "cuda"

    def _infer_bound(self, feeds: Mapping[str, Any], specs: Mapping[str, TensorSpec]) -> dict[str, Any]:
        """IOBinding: inputs bound in place (numpy arrays are first copied to the binding device) and
        outputs allocated by ONNX Runtime there, returned as ``OrtValue``s owned by the caller."""
        binding = self._session.io_binding()  # type: ignore[union-attr]
        keep = []  # OrtValues made here stay alive until the run is over
        for name, value in feeds.items():
            spec = specs[name]
            if isinstance(value, np.ndarray):
                _check_dtype_and_shape(name, value.dtype.name, value.shape, spec)
                value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), self.binding_device,
                                                         self.device_id)
                keep.append(value)
                binding.bind_ortvalue_input(name, value)
            elif isinstance(value, ort.OrtValue):
                self._check_ortvalue(name, value, spec)
                binding.bind_ortvalue_input(name, value)
            elif hasattr(value, "__cuda_array_interface__"):
                shape, dtype, address = self._cuda_array_view(name, value, spec)
                binding.bind_input(name, "cuda", self.device_id, dtype, shape, address)
            elif is_torch_tensor(value):
                raise InputTypeError(
                    f"Input tensor: {name} | Received a torch tensor on {value.device}; provider={self.provider!r} takes "
                    "numpy arrays on the host: pass tensor.cpu().numpy()."
                )
            else:
                raise InputTypeError(
                    f"Input tensor: {name} | Received {type(value).__name__}; {self.name} takes numpy arrays, "
                    "onnxruntime OrtValues, or (CUDA providers) CUDA arrays with __cuda_array_interface__."
                )
        for spec in self.output_specs:
            binding.bind_output(spec.name, self.binding_device, self.device_id)
        self._session.run_with_iobinding(binding)  # type: ignore[union-attr]
        binding.synchronize_outputs()
        return {s.name: v for s, v in zip(self.output_specs, binding.get_outputs())}

    def _check_ortvalue(self, name: str, value: Any, spec: TensorSpec) -> None:
        where = value.device_name().lower()
        if where != self.binding_device:
            raise InvalidInputError(
                f"Input tensor: {name} | Received an OrtValue on {where}; this {self.provider} session binds "
                f"{self.binding_device} tensors. Create it with OrtValue.ortvalue_from_numpy(a, "
                f"'{self.binding_device}', {self.device_id}) (the runner never copies between devices)."
            )
        dtype = _ONNX_DTYPES.get(value.data_type(), value.data_type())
        _check_dtype_and_shape(name, dtype, tuple(value.shape()), spec)

    def _cuda_array_view(self, name: str, value: Any, spec: TensorSpec) -> tuple[tuple[int, ...], Any, int]:
        """(shape, numpy dtype, device address) of a contiguous CUDA array on this runner's GPU, after
        waiting for its producer (torch's current stream for a torch tensor)."""
        if self.binding_device != "cuda":
            raise InputTypeError(
                f"Input tensor: {name} | provider='cpu' takes numpy arrays; copy the CUDA array to the host, or "
                "create the runner with provider='cuda'."
            )
        interface = value.__cuda_array_interface__
        shape, dtype = tuple(int(d) for d in interface["shape"]), np.dtype(interface["typestr"])
        _check_dtype_and_shape(name, dtype.name, shape, spec)
        contiguous = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * dtype.itemsize for i in range(len(shape)))
        strides = interface.get("strides")
        if strides is not None and tuple(strides) != contiguous:
            raise InvalidInputError(f"Input tensor: {name} | Received a non-contiguous array (strides "
                                    f"{tuple(strides)}); pass a contiguous copy (tensor.contiguous()).")
        index = _cuda_index(value)
        if index is not None and index != self.device_id:
            raise InvalidInputError(
                f"Input tensor: {name} | Received an array on cuda:{index}; expected cuda:{self.device_id}. Move it "
                "there first (the runner never copies between devices)."
            )
        if is_torch_tensor(value):
            wait_for_torch_producer(value)  # ONNX Runtime runs on its own stream
        elif interface.get("stream") is not None and hasattr(value, "stream"):
            value.stream.synchronize()  # a genmask DeviceArray: wait for the stream that wrote it
        return shape, dtype, int(interface["data"][0])


def _cuda_index(value: Any) -> int | None:
    """The GPU ordinal of a torch CUDA tensor or a genmask DeviceArray; None when unknown."""
    device = getattr(value, "device", None)
    index = getattr(device, "index", None)
    return int(index) if index is not None else None


def _spec(arg: Any) -> TensorSpec:
    """TensorSpec from an onnxruntime NodeArg; symbolic or unknown axes become None."""
    dtype = _ONNX_DTYPES.get(arg.type, arg.type)
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in (arg.shape or []))
    return TensorSpec(arg.name, dtype, shape)


def _check_dtype_and_shape(name: str, dtype: str, shape: tuple[int, ...], spec: TensorSpec) -> None:
    if dtype != spec.dtype:
        raise dtype_error(name, dtype, spec.dtype)
    if not shape_is_compatible(shape, spec.shape):
        raise shape_error(name, shape, spec.shape)


def missing_external_data(onnx_path: Path) -> list[str]:
    """External data files an ONNX model refers to that do not exist (paths relative to it).

    Reads only the graph structure (``load_external_data=False``); raises when it is not ONNX.
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    model = onnx.load(str(onnx_path), load_external_data=False)
    missing = []
    for tensor in _all_tensors(model.graph):
        if uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if not (onnx_path.parent / location).is_file() and location not in missing:
                missing.append(location)
    return missing


def _all_tensors(graph: Any) -> Any:
    """Initializers and tensor attributes of ``graph`` and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)
