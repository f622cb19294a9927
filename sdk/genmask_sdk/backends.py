"""The three graph stages behind one small interface, for PyTorch and for exported engines.

Every pipeline takes and returns torch tensors on its ``device`` (float32 unless noted):

* ``encode(pixels (B, 3, R, R) in [-1, 1]) -> z_img (B, 16, R/8, R/8)``
* ``denoise(z_img (B, 16, h, w), context (B, L, D), context_mask (B, L) bool) -> x0 (B, 16, h, w)``
* ``decode(latent (B, 16, h, w)) -> logits (B, 1, R, R)``; logit > 0 is inside the mask.

Returned tensors belong to the caller (engine-owned buffers are copied). Pipelines are not
thread-safe on their own; ``Segmenter`` serialises calls with its lock.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import numpy as np
import torch

from .errors import ArtifactMismatchError, BackendUnavailableError, GenMaskError

#: Graph I/O names per stage (the exporter's contract).
STAGE_IO = {
    "vae_encoder": (("pixels",), "z_img"),
    "dit": (("z_img", "context", "context_mask"), "x0"),
    "mask_head": (("latent",), "logits"),
}


class Pipeline(Protocol):
    name: str
    device: torch.device

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def denoise(self, z_img: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


class TorchPipeline:
    """The PyTorch reference: a ``GenMaskModel`` in fp32 on ``device``."""

    name = "torch"

    def __init__(self, model) -> None:
        self.model = model.eval()
        self.device = model.device

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels).float()

    @torch.inference_mode()
    def denoise(self, z_img: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        return self.model.predict_latent(z_img, context, context_mask).float()

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decode_mask(latent).float()

    def close(self) -> None:
        self.model = None


class RunnerPipeline:
    """Exported graphs served by ``Runner`` objects (ONNX Runtime or TensorRT), one per stage.

    ``host_io=True`` (ONNX Runtime on CPU): tensors cross as numpy arrays without copies where
    possible. Otherwise inputs stay torch CUDA tensors (IOBinding / TensorRT bindings).
    """

    def __init__(self, name: str, runners: Mapping[str, Any], device: torch.device, host_io: bool) -> None:
        self.name = name
        self.runners = dict(runners)
        self.device = device
        self.host_io = host_io
        self._dtypes = {stage: _input_dtypes(runner) for stage, runner in self.runners.items()}

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

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._run("vae_encoder", {"pixels": pixels})

    def denoise(self, z_img: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        return self._run("dit", {"z_img": z_img, "context": context, "context_mask": context_mask})

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self._run("mask_head", {"latent": latent})

    def _run(self, stage: str, feeds: Mapping[str, torch.Tensor]) -> torch.Tensor:
        runner = self.runners[stage]
        dtypes = self._dtypes[stage]
        prepared = {}
        for name, value in feeds.items():
            value = value.to(dtypes.get(name, value.dtype)).contiguous()
            prepared[name] = value.cpu().numpy() if self.host_io else value
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
            return torch.from_numpy(out).float()
        converted = out.float()
        if runner.name == "tensorrt" and converted.data_ptr() == out.data_ptr():
            converted = converted.clone()  # TensorRT reuses its output buffers on the next call
        return converted

    def close(self) -> None:
        for runner in self.runners.values():
            runner.close()
        self.runners = {}


def _input_dtypes(runner: Any) -> dict[str, torch.dtype]:
    """Input name -> torch dtype the graph wants (fp16 graphs may take half inputs)."""
    table = {"float32": torch.float32, "float16": torch.float16, "bool": torch.bool, "int64": torch.int64,
             "int32": torch.int32, "uint8": torch.uint8}
    return {s.name: table[s.dtype] for s in getattr(runner, "input_specs", []) if s.dtype in table}
