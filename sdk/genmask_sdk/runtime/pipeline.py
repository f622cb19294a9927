"""Exported graphs served by runners (ONNX Runtime or TensorRT): the three stages behind one interface.

* ``encode(pixels (B, 3, R, R) in [-1, 1]) -> z_img (B, 16, R/8, R/8)``
* ``denoise(z_img (B, 16, h, w), context (B, L, D), context_mask (B, L) bool) -> x0 (B, 16, h, w)``
* ``decode(latent (B, 16, h, w)) -> logits (B, 1, R, R)``; logit > 0 is inside the mask.

On the host (ONNX Runtime CPU) everything is numpy and torch is never imported. On a GPU the
runners exchange torch CUDA tensors (IOBinding / TensorRT bindings), which keeps intermediates on
the device; numpy inputs are then moved to the device first. Float32 unless noted. Returned arrays
belong to the caller (engine-owned buffers are copied). Not thread-safe on their own; ``Segmenter``
serialises calls with its lock.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import ArtifactMismatchError, BackendUnavailableError, GenMaskError
from .base import is_torch_tensor

#: Graph I/O names per stage (the exporter's contract).
STAGE_IO = {
    "vae_encoder": (("pixels",), "z_img"),
    "dit": (("z_img", "context", "context_mask"), "x0"),
    "mask_head": (("latent",), "logits"),
}
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "bool": np.bool_, "int64": np.int64,
                 "int32": np.int32, "uint8": np.uint8}


class RunnerPipeline:
    """Exported graphs served by ``Runner`` objects (ONNX Runtime or TensorRT), one per stage.

    ``host_io=True`` (ONNX Runtime on CPU): numpy in, numpy out, no torch (torch tensors are
    accepted too, and then torch tensors come back). Otherwise inputs become torch CUDA tensors
    (IOBinding / TensorRT bindings) and outputs stay on the device as torch tensors.
    """

    def __init__(self, name: str, runners: Mapping[str, Any], device: Any, host_io: bool) -> None:
        self.name = name
        self.runners = dict(runners)
        self.device = device
        self.host_io = host_io
        self._dtypes = {stage: {s.name: s.dtype for s in getattr(runner, "input_specs", [])}
                        for stage, runner in self.runners.items()}

    def check_graphs(self, resolution: int, hidden_size: int) -> None:
        """Raise ArtifactMismatchError unless the loaded graphs have the contract's I/O names and
        the static sizes the manifest promises (resolution R, embedder width D)."""
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
            spec = {s.name: s for s in self.runners[stage].input_specs}[name]
            got = spec.shape[axis] if len(spec.shape) > axis else None
            if got is not None and got != expected:
                raise ArtifactMismatchError(
                    f"the {stage} graph's input {name!r} has size {got} on axis {axis}, but the manifest's "
                    f"config needs {expected}. The graph and manifest come from different models; rebuild."
                )

    def encode(self, pixels: Any) -> Any:
        return self._run("vae_encoder", {"pixels": pixels})

    def denoise(self, z_img: Any, context: Any, context_mask: Any) -> Any:
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
            out = out.astype(np.float32, copy=False)
            if any(is_torch_tensor(v) for v in feeds.values()):  # torch in, torch out (benchmarks)
                import torch

                return torch.from_numpy(out)
            return out
        converted = out.float()
        if runner.name == "tensorrt" and converted.data_ptr() == out.data_ptr():
            converted = converted.clone()  # TensorRT reuses its output buffers on the next call
        return converted

    def _prepare(self, value: Any, dtype: str | None) -> Any:
        """numpy on the host; a torch CUDA tensor for device I/O (numpy moved to the device)."""
        if self.host_io:
            array = value.detach().cpu().numpy() if is_torch_tensor(value) else np.asarray(value)
            return np.ascontiguousarray(array, dtype=_NUMPY_DTYPES.get(dtype, array.dtype))
        import torch  # device I/O exchanges torch CUDA tensors (the GPU runners' contract)

        tensor = value if is_torch_tensor(value) else torch.from_numpy(np.ascontiguousarray(value))
        target = getattr(torch, dtype) if dtype in _NUMPY_DTYPES else tensor.dtype
        return tensor.to(device=str(self.device), dtype=target).contiguous()

    def synchronize(self) -> None:
        """Wait for queued GPU work (so per-stage timings are real); nothing on the host."""
        if not self.host_io:
            import torch

            torch.cuda.synchronize(str(self.device))

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
        self.runners = {}
