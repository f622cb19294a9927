"""Exported graphs served by runners (ONNX Runtime or TensorRT): the three stages behind one interface.

* ``encode(pixels (B, 3, R, R) in [-1, 1]) -> z_img (B, 16, R/8, R/8)``
* ``denoise(z_img (1 or B, 16, h, w), context (B, L, D), context_mask (B, L) bool) -> x0 (B, 16, h, w)``
  (a single ``z_img`` is repeated for the B prompts)
* ``decode(latent (B, 16, h, w)) -> logits (B, 1, R, R)``; logit > 0 is inside the mask.

Float32 unless noted. No torch anywhere. On the host (ONNX Runtime CPU) everything is numpy. On a
GPU, host inputs are copied to the device once and stage outputs stay there -- genmask
``DeviceArray``s (TensorRT, cuda-python) or ``OrtValue``s (ONNX Runtime CUDA EP) -- until
``runtime.base.host_array`` copies them to the host. Torch tensors are accepted as inputs where torch is installed.
Returned values belong to the caller (runner-owned buffers are copied). Not thread-safe on its own;
``Segmenter`` serialises calls with its lock.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

import numpy as np

from genmask_sdk.errors import ArtifactMismatchError, BackendUnavailableError, GenMaskError
from genmask_sdk.runtime.base import is_torch_tensor, shape_of

#: Graph I/O names per stage (the exporter's contract).
STAGE_IO = {
    "vae_encoder": (("pixels",), "z_img"),
    "dit": (("z_img", "context", "context_mask"), "x0"),
    "mask_head": (("latent",), "logits"),
}
#: (producer stage, output) -> (consumer stage, input): the values that stay on the device between stages.
CHAINED = {("vae_encoder", "z_img"): ("dit", "z_img"), ("dit", "x0"): ("mask_head", "latent")}
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bool": np.bool_, "int64": np.int64,
                 "int32": np.int32, "uint8": np.uint8}


class RunnerPipeline:
    """Exported graphs served by ``Runner`` objects (ONNX Runtime or TensorRT), one per stage.

    ``host_io=True`` (ONNX Runtime on CPU): numpy out (torch tensors in are copied to the host). Otherwise outputs stay on the
    device (``DeviceArray`` / ``OrtValue``). ``owned``: objects with ``destroy()`` (a shared CUDA
    stream) released after the runners on ``close``. ``notes`` lists the loud fallbacks taken while
    running (``describe()["fallbacks"]`` shows them).
    """

    def __init__(self, name: str, runners: Mapping[str, Any], device: Any, host_io: bool,
                 owned: Sequence[Any] = ()) -> None:
        self.name = name
        self.runners = dict(runners)
        self.device = device
        self.host_io = host_io
        self.notes: list[dict[str, str]] = []
        self._owned = list(owned)
        self._dtypes = {stage: {s.name: s.dtype for s in getattr(runner, "input_specs", [])}
                        for stage, runner in self.runners.items()}
        self._cuda = None  # (CudaDevice, Stream) for OrtValue copies on the GPU, made on first use

    def check_graphs(self, resolution: int, hidden_size: int) -> None:
        """Raise ArtifactMismatchError unless the loaded graphs have the contract's I/O names, the
        static sizes the manifest promises (resolution R, embedder width D), and float32 values
        between stages (which stay on the device as they are)."""
        for stage, runner in self.runners.items():
            inputs, output = STAGE_IO[stage]
            have_in = [s.name for s in runner.input_specs]
            have_out = [s.name for s in runner.output_specs]
            if sorted(have_in) != sorted(inputs) or output not in have_out:
                raise ArtifactMismatchError(
                    f"the {stage} graph has inputs {have_in} and outputs {have_out}; expected inputs "
                    f"{list(inputs)} and output {output!r}. The engines were not built by this SDK's "
                    "exporter; rebuild them with 'genmask build ...'."
                )
        static = {("vae_encoder", "pixels", 2): resolution, ("dit", "context", 2): hidden_size}
        for (stage, name, axis), expected in static.items():
            if stage not in self.runners:
                continue
            spec = {s.name: s for s in self.runners[stage].input_specs}[name]
            got = spec.shape[axis] if len(spec.shape) > axis else None
            if got is not None and got != expected:
                raise ArtifactMismatchError(
                    f"the {stage} graph's input {name!r} has size {got} on axis {axis}, but the manifest's "
                    f"config needs {expected}. The graph and manifest come from different models; rebuild."
                )
        for (stage, output), (consumer, name) in CHAINED.items():
            if stage not in self.runners or consumer not in self.runners:
                continue
            produced = {s.name: s.dtype for s in self.runners[stage].output_specs}[output]
            consumed = self._dtypes[consumer].get(name)
            if produced != "float32" or consumed != "float32":
                raise ArtifactMismatchError(
                    f"{stage}.{output} is {produced} and {consumer}.{name} is {consumed}; the exporter keeps the values "
                    "passed between stages float32 (keep_io_types). Rebuild the engines with 'genmask build'."
                )

    def check_records(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Raise ArtifactMismatchError unless each loaded graph's inputs and outputs (names, dtypes,
        shapes; None = dynamic) are the ones its manifest record lists."""
        for stage, runner in self.runners.items():
            record = records.get(stage) or {}
            for kind, loaded in (("inputs", runner.input_specs), ("outputs", runner.output_specs)):
                if kind not in record:
                    continue
                listed = sorted((s["name"], s["dtype"], tuple(s["shape"])) for s in record[kind])
                actual = sorted((s.name, s.dtype, tuple(s.shape)) for s in loaded)
                if listed != actual:
                    raise ArtifactMismatchError(
                        f"the {stage} graph {record.get('file')!r} has {kind} {actual}, but the manifest records "
                        f"{listed}. The file and the manifest come from different builds; rebuild the engines."
                    )

    def encode(self, pixels: Any) -> Any:
        return self._run("vae_encoder", {"pixels": pixels})

    def denoise(self, z_img: Any, context: Any, context_mask: Any) -> Any:
        batch = shape_of(context)[0]
        if shape_of(z_img)[0] == 1 and batch > 1:
            z_img = self._repeat(z_img, batch)
        return self._run("dit", {"z_img": z_img, "context": context, "context_mask": context_mask})

    def decode(self, latent: Any) -> Any:
        return self._run("mask_head", {"latent": latent})

    def _run(self, stage: str, feeds: Mapping[str, Any]) -> Any:
        runner = self.runners[stage]
        dtypes = self._dtypes[stage]
        prepared = {name: self._prepare(value, dtypes.get(name)) for name, value in feeds.items()}
        try:
            outputs = runner.infer(prepared)
        except GenMaskError:
            raise
        except Exception as exc:  # onnxruntime / TensorRT native errors: keep the message, not the trace
            error = BackendUnavailableError(
                f"{runner.name} failed running the {stage} graph: {type(exc).__name__}: {str(exc).strip()[:500]}. "
                "If the inputs are valid, the engine files may not match this SDK; rebuild with 'genmask build'."
            )
            raise error from None
        out = outputs[STAGE_IO[stage][1]]
        if isinstance(out, np.ndarray):
            return out.astype(np.float32, copy=False)
        clone = getattr(out, "clone", None)  # a DeviceArray: TensorRT reuses its buffers on the next call
        return clone() if callable(clone) else out

    def _prepare(self, value: Any, dtype: str | None) -> Any:
        """numpy on the host; on the device, device values pass as they are and host values become
        contiguous numpy arrays of the graph's dtype (the runner copies them to the device once)."""
        target = _NUMPY_DTYPES.get(dtype)
        if is_torch_tensor(value) and (self.host_io or not value.is_cuda):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray) or not _is_device_value(value):
            array = np.asarray(value)
            return np.ascontiguousarray(array, dtype=target if target is not None else array.dtype)
        if is_torch_tensor(value):
            torch = sys.modules["torch"]  # the caller made the tensor, so torch is loaded (never imported here)
            wanted = getattr(torch, dtype) if target is not None else value.dtype
            return value.to(dtype=wanted).contiguous()
        return value

    def _repeat(self, value: Any, batch: int) -> Any:
        """(1, ...) -> (batch, ...) where ``value`` lives."""
        if isinstance(value, np.ndarray):
            return np.ascontiguousarray(np.broadcast_to(value, (batch, *value.shape[1:])))
        if is_torch_tensor(value):
            return value.expand(batch, *value.shape[1:]).contiguous()
        if hasattr(value, "repeat_batch"):  # DeviceArray
            return value.repeat_batch(batch)
        return self._repeat_ortvalue(value, batch)

    def _repeat_ortvalue(self, value: Any, batch: int) -> Any:
        """An OrtValue repeated on its GPU with cuda-python; without cuda-python, through the host
        (recorded once in ``notes``)."""
        import onnxruntime as ort

        index = getattr(self.device, "index", None)  # the OrtValue does not say which GPU
        shape, index = shape_of(value), index if isinstance(index, int) else 0
        if value.device_name().lower() == "cuda":
            try:
                device, stream = self._cuda_stream(index)
            except BackendUnavailableError as exc:
                self._note("device_copies", f"repeating z_img for a batch of prompts goes through the host: {exc}")
            else:
                out = ort.OrtValue.ortvalue_from_shape_and_type((batch, *shape[1:]), np.float32, "cuda", index)
                row = int(np.prod(shape, dtype=np.int64)) * 4
                for i in range(batch):
                    device.copy(out.data_ptr() + i * row, value.data_ptr(), row, "dtod", stream)
                stream.synchronize()
                return out
        host = np.ascontiguousarray(np.broadcast_to(value.numpy(), (batch, *shape[1:])))
        return ort.OrtValue.ortvalue_from_numpy(host, value.device_name().lower(), index)

    def _cuda_stream(self, index: int):
        if self._cuda is None:
            from genmask_sdk.runtime.cuda import CudaDevice, Stream

            device = CudaDevice(index)
            self._cuda = (device, Stream(device))
            self._owned.append(self._cuda[1])
        return self._cuda

    def _note(self, option: str, reason: str) -> None:
        if not any(n["option"] == option for n in self.notes):
            self.notes.append({"option": option, "reason": reason})

    def synchronize(self) -> None:
        """Wait for queued GPU work (so per-stage timings are real); nothing on the host."""
        for runner in self.runners.values():
            synchronize = getattr(runner, "synchronize", None)
            if synchronize is not None:
                synchronize()

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
        self.runners = {}
        for thing in self._owned:
            thing.destroy()
        self._owned = []


def _is_device_value(value: Any) -> bool:
    """A torch CUDA tensor, a genmask DeviceArray, an OrtValue, or another ``__cuda_array_interface__`` array."""
    if is_torch_tensor(value):
        return bool(value.is_cuda)
    return hasattr(value, "__cuda_array_interface__") or type(value).__name__ == "OrtValue"
