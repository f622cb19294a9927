"""Run a TensorRT plan with device buffers and streams from cuda-python (TensorRT 10.x / 11.x API). No torch.

Per call: ``context.set_input_shape`` (only when shapes change), ``set_tensor_address`` for every
I/O tensor by name, ``execute_async_v3`` on the runner's stream. Every TensorRT and CUDA return code
is checked. Host inputs are copied to the device once; device inputs are read in place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    InputTypeError,
    InvalidInputError,
)
from genmask_sdk.runtime.base import Runner, TensorSpec
from genmask_sdk.runtime.cuda import (
    CudaDevice,
    CudaError,
    CudaGraph,
    DeviceArray,
    Stream,
    from_cuda_array_interface,
    wait_for,
)
from genmask_sdk.runtime.devices import parse_device
from genmask_sdk.runtime.feed_checks import (
    check_feed_names,
    dtype_error,
    profile_error,
    shape_error,
    shape_is_compatible,
)
from genmask_sdk.runtime.trt_api import import_tensorrt, numpy_dtype_of, require_supported_tensorrt, shared_logger

REBUILD_HINT = (
    "Rebuild the plan on this machine (python export/build_engines.py ... --backend tensorrt), or "
    "build it with version_compatible=True and load it with version_compatible=True."
)


@dataclass(frozen=True)
class EngineTensor:
    """One engine I/O tensor. ``dtype`` a numpy dtype name; ``shape`` has -1 on dynamic axes;
    ``profile`` is (min, opt, max) of optimization profile 0 for dynamic inputs."""

    name: str
    is_input: bool
    dtype: str
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, tuple(None if d < 0 else d for d in self.shape))


class TensorRTRunner(Runner):
    """Loads ``plan_path`` and runs it on one CUDA device.

    ``infer(feeds)`` takes, per input name, a numpy array (copied to the device), a
    :class:`~genmask_sdk.runtime.cuda.DeviceArray`, or any object with ``__cuda_array_interface__``
    on this device (a torch CUDA tensor, a CuPy array; read in place) -- contiguous, the engine's
    dtype, a shape inside the plan's optimization profile. It returns ``{output name: DeviceArray}``
    owned by the runner and overwritten by the next ``infer``; ``clone()`` or ``to_numpy()`` what
    you keep. Outputs are complete in stream order on ``self.stream`` (``to_numpy()`` waits).

    ``stream``: a :class:`~genmask_sdk.runtime.cuda.Stream` to queue work on (share one between the
    runners of a pipeline so stages run in order without host waits); default: the runner's own.

    ``use_cuda_graph=True`` captures ``execute_async_v3`` into a CUDA graph. Inputs are then copied
    into runner-owned static buffers, and the graph is re-captured whenever input shapes change.
    Engines with data-dependent output shapes or host tensors cannot be captured.

    ``version_compatible=True`` sets ``runtime.engine_host_code_allowed`` so plans built with
    ``VERSION_COMPATIBLE`` (which embed a lean runtime, i.e. host code) can load; trusted plans only.

    ``trt`` / ``cudart``: the ``tensorrt`` and ``cuda.bindings.runtime`` modules (tests pass doubles).
    """

    name = "tensorrt"

    def __init__(self, plan_path: str | os.PathLike[str], *, device: Any = "cuda", stream: Stream | None = None,
                 use_cuda_graph: bool = False, version_compatible: bool = False, trt: Any = None,
                 cudart: Any = None) -> None:
        super().__init__()
        self.plan_path = Path(plan_path)
        self._device_arg = device
        self._given_stream = stream
        self.use_cuda_graph = use_cuda_graph
        self.version_compatible = version_compatible
        self._trt = trt
        self._cudart = cudart
        self._reset()

    def _reset(self) -> None:
        self.device: CudaDevice | None = None
        self.stream: Stream | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._tensors: dict[str, EngineTensor] = {}
        self._bound_shapes: dict[str, tuple[int, ...]] | None = None
        self._outputs: dict[str, DeviceArray] = {}
        self._staging: dict[str, DeviceArray] = {}  # runner-owned input buffers (host feeds; CUDA graph inputs)
        self._graph: CudaGraph | None = None

    @property
    def input_specs(self) -> list[TensorSpec]:
        return [t.spec() for t in self._tensors.values() if t.is_input]

    @property
    def output_specs(self) -> list[TensorSpec]:
        return [t.spec() for t in self._tensors.values() if not t.is_input]

    # ---- load / close -------------------------------------------------------------------------

    def _load_impl(self) -> None:
        if not self.plan_path.is_file():
            raise ArtifactNotFoundError(
                f"TensorRT plan {self.plan_path} does not exist; build it with "
                "python export/build_engines.py ... --backend tensorrt."
            )
        trt = self._trt if self._trt is not None else import_tensorrt()
        version = require_supported_tensorrt(trt)
        device = self._cuda_device()
        stream = self._given_stream or Stream(device)
        device.activate()
        runtime = trt.Runtime(shared_logger(trt))
        if self.version_compatible:
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if engine is None:
            raise ArtifactMismatchError(
                f"TensorRT {version} could not deserialize {self.plan_path} (see the TensorRT log above). A plan "
                "only loads with the TensorRT version and GPU architecture that built it, and this one was "
                "probably built elsewhere or is truncated. " + REBUILD_HINT
            )
        tensors = _read_engine_tensors(trt, engine)
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(
                f"TensorRT could not create an execution context for {self.plan_path} (out of GPU memory?). "
                "Free GPU memory or close other runners, then retry."
            )
        self.device, self.stream = device, stream
        self._runtime, self._engine, self._context, self._tensors = runtime, engine, context, tensors

    def _cuda_device(self) -> CudaDevice:
        parsed = parse_device(self._device_arg if not isinstance(self._device_arg, int) else f"cuda:{self._device_arg}")
        if parsed.type != "cuda":
            raise BackendUnavailableError(
                f"TensorRTRunner runs on a CUDA device, got device={self._device_arg!r}; pass 'cuda' or 'cuda:N'."
            )
        return CudaDevice(parsed.index or 0, self._cudart)

    def _close_impl(self) -> None:
        # Release in dependency order: graph and context before engine before runtime; buffers last.
        if self.stream is not None:
            self.stream.synchronize()
        if self._graph is not None:
            self._graph.destroy()
        self._graph = self._context = None
        self._engine = self._runtime = None
        for array in [*self._outputs.values(), *self._staging.values()]:
            array.free()
        if self.stream is not None and self._given_stream is None:
            self.stream.destroy()
        self._reset()

    def synchronize(self) -> None:
        """Wait for the work queued on this runner's stream."""
        if self.stream is not None:
            self.stream.synchronize()

    # ---- infer ------------------------------------------------------------------------------

    def _infer_impl(self, feeds: Mapping[str, Any]) -> dict[str, DeviceArray]:
        inputs = {n: t for n, t in self._tensors.items() if t.is_input}
        check_feed_names(self.name, feeds, list(inputs))
        arrays = {name: self._as_feed(name, feeds[name], tensor) for name, tensor in inputs.items()}
        shapes = {name: array.shape for name, array in arrays.items()}
        self.device.activate()
        shapes_changed = shapes != self._bound_shapes
        if shapes_changed:
            self._set_input_shapes(shapes)
        if self.use_cuda_graph:
            self._run_cuda_graph(arrays, recapture=shapes_changed or self._graph is None)
        else:
            bound = {name: self._stage(name, array) if isinstance(array, np.ndarray) else array
                     for name, array in arrays.items()}
            self._bind_addresses(bound)
            self._execute()
        return dict(self._outputs)

    def _as_feed(self, name: str, value: Any, expected: EngineTensor) -> np.ndarray | DeviceArray:
        """A checked numpy array (host feed) or a DeviceArray on this device ready to read on our stream."""
        if isinstance(value, np.ndarray):
            array: np.ndarray | DeviceArray = value
        elif isinstance(value, DeviceArray):
            if value.device.index != self.device.index:
                raise InvalidInputError(f"Input tensor: {name} | Received a DeviceArray on {value.device}; expected "
                                        f"{self.device}. The runner never copies between devices.")
            array = value
        elif hasattr(value, "__cuda_array_interface__"):
            try:
                array = from_cuda_array_interface(value, self.device, self.stream)
            except InvalidInputError as exc:
                raise InvalidInputError(f"Input tensor: {name} | {exc}") from None
        else:
            raise InputTypeError(
                f"Input tensor: {name} | Received {type(value).__name__}; TensorRTRunner takes numpy arrays, "
                "genmask_sdk DeviceArrays, or CUDA arrays with __cuda_array_interface__ (torch CUDA tensors, CuPy)."
            )
        check_feed(name, array.dtype.name, tuple(array.shape), expected)
        if isinstance(array, np.ndarray):
            return np.ascontiguousarray(array)
        wait_for(array, self.stream)
        return array

    def _stage(self, name: str, array: np.ndarray) -> DeviceArray:
        """Copy a host feed into this runner's staging buffer for ``name`` (reallocated on a new shape)."""
        buffer = self._staging.get(name)
        if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
            if buffer is not None:
                buffer.free()
            buffer = self._staging[name] = DeviceArray.empty(self.device, array.shape, array.dtype, self.stream)
        buffer.upload(array)
        return buffer

    def _set_input_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """``set_input_shape`` for each input, then (re)allocate output buffers for the new shapes."""
        self._bound_shapes = None
        if self._graph is not None:
            self._graph.destroy()
            self._graph = None
        for name, shape in shapes.items():
            if not self._context.set_input_shape(name, tuple(shape)):
                raise InvalidInputError(
                    f"Input tensor: {name} | TensorRT rejected shape {tuple(shape)} (see the TensorRT log). Use a "
                    "shape inside the plan's optimization profile."
                )
        outputs = {}
        for name, tensor in self._tensors.items():
            if tensor.is_input:
                continue
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendUnavailableError(
                    f"Output tensor: {name} has a data-dependent shape {shape}, which TensorRTRunner does not "
                    "support (it preallocates outputs). Make the output shape depend only on input shapes, or run "
                    "this graph with OnnxRuntimeRunner."
                )
            old = self._outputs.get(name)
            reuse = old is not None and old.shape == shape
            outputs[name] = old if reuse else DeviceArray.empty(self.device, shape, tensor.dtype, self.stream)
        self._outputs = outputs  # replaced buffers are freed once no caller holds them
        self._bound_shapes = dict(shapes)

    def _bind_addresses(self, inputs: Mapping[str, DeviceArray]) -> None:
        for name, buffer in [*inputs.items(), *self._outputs.items()]:
            if not self._context.set_tensor_address(name, buffer.ptr):
                raise BackendUnavailableError(
                    f"TensorRT rejected the address of tensor '{name}' (misaligned storage?). Pass a freshly "
                    "allocated contiguous array."
                )

    def _execute(self) -> None:
        if not self._context.execute_async_v3(int(self.stream)):
            raise BackendUnavailableError(
                f"TensorRT execute_async_v3 failed for {self.plan_path} (see the TensorRT log). Check the inputs "
                "are valid for this engine; run with CUDA_LAUNCH_BLOCKING=1 to locate asynchronous CUDA errors."
            )

    def _run_cuda_graph(self, arrays: Mapping[str, np.ndarray | DeviceArray], recapture: bool) -> None:
        """Copy feeds into static buffers, then replay (or first run + capture) the CUDA graph."""
        for name, array in arrays.items():
            if isinstance(array, np.ndarray):
                self._stage(name, array)
            else:
                static = self._staging.get(name)
                if static is None or static.shape != array.shape or static.dtype != array.dtype:
                    if static is not None:
                        static.free()
                    static = self._staging[name] = DeviceArray.empty(self.device, array.shape, array.dtype,
                                                                     self.stream)
                static.copy_from(array)
        if not recapture:
            self._graph.launch()  # type: ignore[union-attr]
            return
        statics = {name: self._staging[name] for name in arrays}
        self._bind_addresses(statics)
        self._execute()  # a plain run before capture, as TensorRT requires; it yields this call's outputs
        try:
            self._graph = CudaGraph(self.device, self.stream, self._execute)
        except (CudaError, BackendUnavailableError) as exc:
            raise BackendUnavailableError(
                f"Capturing {self.plan_path} into a CUDA graph failed ({exc}); this engine cannot be captured. "
                "Use TensorRTRunner(..., use_cuda_graph=False)."
            ) from None


def check_feed(name: str, dtype: str, shape: tuple[int, ...], expected: EngineTensor) -> None:
    """Raise InvalidInputError unless ``dtype`` and ``shape`` fit ``expected`` (and its profile)."""
    if dtype != expected.dtype:
        raise dtype_error(name, dtype, expected.dtype)
    if not shape_is_compatible(shape, expected.shape):
        raise shape_error(name, shape, expected.shape)
    if expected.profile is not None:
        lo, _, hi = expected.profile
        if any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            raise profile_error(name, shape, lo, hi)


def _read_engine_tensors(trt: Any, engine: Any) -> dict[str, EngineTensor]:
    """Name, direction, dtype, shape and profile-0 range of every I/O tensor, in engine order."""
    tensors = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        profile = None
        if is_input and any(d < 0 for d in shape):
            lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
            profile = (tuple(map(int, lo)), tuple(map(int, opt)), tuple(map(int, hi)))
        tensors[name] = EngineTensor(name, is_input, numpy_dtype_of(engine.get_tensor_dtype(name)), shape, profile)
    return tensors
