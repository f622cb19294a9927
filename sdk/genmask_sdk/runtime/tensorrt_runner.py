"""Run a TensorRT plan with torch CUDA tensors as I/O buffers (TensorRT 10.x / 11.x API).

Per call: ``context.set_input_shape`` (only when shapes change), ``set_tensor_address`` for every
I/O tensor, ``execute_async_v3`` on the caller's current torch CUDA stream. Nothing is copied
between host and device; work is asynchronous like any torch op on that stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import torch

from ..errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    InputTypeError,
    InvalidInputError,
)
from .base import Runner, TensorSpec
from .feed_checks import (
    check_feed_names,
    dtype_error,
    profile_error,
    shape_error,
    shape_is_compatible,
)
from .trt_api import (
    dtype_name,
    import_tensorrt,
    require_supported_tensorrt,
    shared_logger,
    torch_dtype_of,
)

REBUILD_HINT = (
    "Rebuild the plan on this machine (python export/build_engines.py ... --backend tensorrt), or "
    "build it with version_compatible=True and load it with version_compatible=True."
)


@dataclass(frozen=True)
class EngineTensor:
    """One engine I/O tensor. ``shape`` has -1 on dynamic axes; ``profile`` is (min, opt, max)."""

    name: str
    is_input: bool
    dtype: torch.dtype
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None

    def spec(self) -> TensorSpec:
        shape = tuple(None if d < 0 else d for d in self.shape)
        return TensorSpec(self.name, dtype_name(self.dtype), shape)


class TensorRTRunner(Runner):
    """Loads ``plan_path`` and runs it on one CUDA device.

    ``infer(feeds)`` takes ``{input name: torch CUDA tensor}`` (contiguous, on ``device``, the
    engine's dtype, a shape inside the plan's optimization profile) and returns
    ``{output name: torch CUDA tensor}``. Output tensors are owned by the runner: allocated once
    per input-shape combination and overwritten by the next ``infer`` call; copy (``.clone()``)
    what you keep. Outputs are ready in stream order on the stream that was current during
    ``infer``; use one stream per runner or synchronize before switching streams.

    ``use_cuda_graph=True`` captures ``execute_async_v3`` into a torch CUDA graph. Inputs are then
    copied (device to device) into runner-owned static buffers, and the graph is re-captured
    whenever input shapes (and so buffer addresses) change. Engines with data-dependent output
    shapes or host tensors cannot be captured.

    ``version_compatible=True`` sets ``runtime.engine_host_code_allowed`` so plans built with
    ``VERSION_COMPATIBLE`` (which embed a lean runtime, i.e. host code) can load; trusted plans
    only.
    """

    name = "tensorrt"

    def __init__(
        self,
        plan_path: str | os.PathLike[str],
        *,
        device: int | str | torch.device = "cuda",
        use_cuda_graph: bool = False,
        version_compatible: bool = False,
        trt: Any = None,
    ) -> None:
        super().__init__()
        self.plan_path = Path(plan_path)
        self._device_arg = device
        self.use_cuda_graph = use_cuda_graph
        self.version_compatible = version_compatible
        self._trt = trt
        self._reset()

    def _reset(self) -> None:
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._tensors: dict[str, EngineTensor] = {}
        self._bound_shapes: dict[str, tuple[int, ...]] | None = None
        self._outputs: dict[str, torch.Tensor] = {}
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_inputs: dict[str, torch.Tensor] = {}

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
        self.device = _resolve_cuda_device(self._device_arg)
        with torch.cuda.device(self.device):
            runtime = trt.Runtime(shared_logger(trt))
            if self.version_compatible:
                runtime.engine_host_code_allowed = True
            engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
            if engine is None:
                raise ArtifactMismatchError(
                    f"TensorRT {version} could not deserialize {self.plan_path} (see the TensorRT "
                    "log above). A plan only loads with the TensorRT version and GPU architecture "
                    f"that built it, and this one was probably built elsewhere or is truncated. "
                    + REBUILD_HINT
                )
            context = engine.create_execution_context()
            if context is None:
                raise BackendUnavailableError(
                    f"TensorRT could not create an execution context for {self.plan_path} (out of "
                    "GPU memory?). Free GPU memory or close other runners, then retry."
                )
        self._runtime, self._engine, self._context = runtime, engine, context
        self._tensors = _read_engine_tensors(trt, engine)

    def _close_impl(self) -> None:
        # Release in dependency order: graph and context before engine before runtime.
        self._graph = None
        self._context = None
        self._engine = None
        self._reset()

    # ---- infer ------------------------------------------------------------------------------

    def _infer_impl(self, feeds: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        inputs = {n: t for n, t in self._tensors.items() if t.is_input}
        check_feed_names(self.name, feeds, list(inputs))
        for name, tensor in inputs.items():
            check_cuda_feed(name, feeds[name], tensor, self.device)
        shapes = {name: tuple(feeds[name].shape) for name in inputs}
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            shapes_changed = shapes != self._bound_shapes
            if shapes_changed:
                self._set_input_shapes(shapes)
            if self.use_cuda_graph:
                self._run_cuda_graph(feeds, stream, recapture=shapes_changed or self._graph is None)
            else:
                self._bind_addresses({n: feeds[n] for n in inputs})
                self._execute(stream)
        return dict(self._outputs)

    def _set_input_shapes(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """``set_input_shape`` for each input, then (re)allocate output buffers for new shapes."""
        self._bound_shapes = None
        self._graph = None
        for name, shape in shapes.items():
            if not self._context.set_input_shape(name, shape):
                raise InvalidInputError(
                    f"Input tensor: {name} | TensorRT rejected shape {shape} (see the TensorRT "
                    "log). Use a shape inside the plan's optimization profile."
                )
        outputs = {}
        for name, tensor in self._tensors.items():
            if tensor.is_input:
                continue
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendUnavailableError(
                    f"Output tensor: {name} has a data-dependent shape {shape}, which "
                    "TensorRTRunner does not support (it preallocates outputs). Make the output "
                    "shape depend only on input shapes, or run this graph with OnnxRuntimeRunner."
                )
            old = self._outputs.get(name)
            reuse = old is not None and tuple(old.shape) == shape
            outputs[name] = (
                old if reuse else torch.empty(shape, dtype=tensor.dtype, device=self.device)
            )
        self._outputs = outputs
        self._bound_shapes = dict(shapes)

    def _bind_addresses(self, inputs: Mapping[str, torch.Tensor]) -> None:
        for name, buffer in [*inputs.items(), *self._outputs.items()]:
            if not self._context.set_tensor_address(name, buffer.data_ptr()):
                raise BackendUnavailableError(
                    f"TensorRT rejected the address of tensor '{name}' (misaligned storage?). "
                    "Pass a freshly allocated contiguous tensor (tensor.contiguous().clone())."
                )

    def _execute(self, stream: torch.cuda.Stream) -> None:
        if not self._context.execute_async_v3(stream.cuda_stream):
            raise BackendUnavailableError(
                f"TensorRT execute_async_v3 failed for {self.plan_path} (see the TensorRT log). "
                "Check the inputs are valid for this engine; run with CUDA_LAUNCH_BLOCKING=1 to "
                "locate asynchronous CUDA errors."
            )

    def _run_cuda_graph(
        self, feeds: Mapping[str, torch.Tensor], stream: torch.cuda.Stream, recapture: bool
    ) -> None:
        """Copy feeds into static buffers, then replay (or first run + capture) the CUDA graph."""
        if recapture:
            self._graph = None
            names = [n for n, t in self._tensors.items() if t.is_input]
            self._graph_inputs = {n: torch.empty_like(feeds[n]) for n in names}
        for name, static in self._graph_inputs.items():
            static.copy_(feeds[name])
        if not recapture:
            self._graph.replay()  # type: ignore[union-attr]
            return
        self._bind_addresses(self._graph_inputs)
        self._execute(stream)  # a plain run before capture, as TensorRT requires; yields outputs
        graph, capture_stream = torch.cuda.CUDAGraph(), torch.cuda.Stream(self.device)
        capture_stream.wait_stream(stream)
        try:
            with torch.cuda.graph(graph, stream=capture_stream):
                ok = self._context.execute_async_v3(capture_stream.cuda_stream)
        except RuntimeError as exc:
            raise BackendUnavailableError(
                f"Capturing {self.plan_path} into a CUDA graph failed ({exc}); this engine cannot "
                "be captured. Use TensorRTRunner(..., use_cuda_graph=False)."
            ) from exc
        stream.wait_stream(capture_stream)
        if not ok:
            raise BackendUnavailableError(
                f"execute_async_v3 failed while capturing {self.plan_path} into a CUDA graph; use "
                "TensorRTRunner(..., use_cuda_graph=False)."
            )
        self._graph = graph


def check_cuda_feed(name: str, value: Any, expected: EngineTensor, device: torch.device) -> None:
    """Raise unless ``value`` is a contiguous torch tensor on ``device`` matching ``expected``."""
    if not isinstance(value, torch.Tensor):
        raise InputTypeError(
            f"Input tensor: {name} | Received {type(value).__name__}; TensorRTRunner takes torch "
            f"tensors on {device} (torch.from_numpy(a).to('{device}'))."
        )
    if value.device != device:
        raise InvalidInputError(
            f"Input tensor: {name} | Received a tensor on {value.device}; expected {device}. "
            f"Move it with tensor.to('{device}') (the runner never copies between host and device)."
        )
    if value.dtype != expected.dtype:
        raise dtype_error(name, dtype_name(value.dtype), dtype_name(expected.dtype))
    if not shape_is_compatible(value.shape, expected.shape):
        raise shape_error(name, tuple(value.shape), expected.shape)
    if expected.profile is not None:
        lo, _, hi = expected.profile
        if any(not a <= s <= b for s, a, b in zip(value.shape, lo, hi)):
            raise profile_error(name, tuple(value.shape), lo, hi)
    if not value.is_contiguous():
        raise InvalidInputError(
            f"Input tensor: {name} | Received a non-contiguous tensor (strides {value.stride()}); "
            "pass tensor.contiguous()."
        )


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
        dtype = torch_dtype_of(engine.get_tensor_dtype(name))
        tensors[name] = EngineTensor(name, is_input, dtype, shape, profile)
    return tensors


def _resolve_cuda_device(device: int | str | torch.device) -> torch.device:
    """``"cuda"`` -> ``cuda:<current>``; raise BackendUnavailableError without a usable CUDA GPU."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "TensorRTRunner needs a CUDA GPU, but torch sees none (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}). Use "
            "OnnxRuntimeRunner(provider='cpu') on this machine, or install a CUDA build of torch."
        )
    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    if dev.type != "cuda":
        raise BackendUnavailableError(
            f"TensorRTRunner runs on a CUDA device, got device={device!r}; pass 'cuda' or 'cuda:N'."
        )
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(
            f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
            "check CUDA_VISIBLE_DEVICES."
        )
    return torch.device("cuda", index)
