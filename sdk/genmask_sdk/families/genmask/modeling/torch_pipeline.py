"""The PyTorch reference pipeline (``TorchPipeline``); the engines' one is ``runtime.pipeline``.

Every pipeline takes torch tensors or numpy arrays and returns torch tensors on its ``device``
(float32 unless noted):

* ``encode(pixels (B, 3, R, R) in [-1, 1]) -> z_img (B, 16, R/8, R/8)``
* ``denoise(z_img (1 or B, 16, h, w), context (B, L, D), context_mask (B, L) bool) -> x0 (B, 16, h, w)``
* ``decode(latent (B, 16, h, w)) -> logits (B, 1, R, R)``; logit > 0 is inside the mask.

Returned tensors belong to the caller (engine-owned buffers are copied). Pipelines are not
thread-safe on their own; ``Segmenter`` serialises calls with its lock.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Protocol

import numpy as np
import torch

from genmask_sdk.errors import ConfigError
from genmask_sdk.families.genmask.pipeline import STAGE_IO, RunnerPipeline  # noqa: F401  (re-exported)


class Pipeline(Protocol):
    name: str
    device: torch.device

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def denoise(self, z_img: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latent: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


#: PyTorch reference precisions: fp32, or bf16 through ``torch.autocast`` (weights stay fp32;
#: matmuls and convolutions run in bf16 where autocast lists them, norms and softmax in fp32).
TORCH_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


class TorchPipeline:
    """The PyTorch reference: a ``GenMaskModel`` on ``device``, fp32 or bf16 autocast (``dtype``).

    Outputs are always float32 tensors; with ``dtype="bf16"`` every stage (VAE encoder, DiT, VAE
    decoder + probe) runs under ``torch.autocast(device.type, torch.bfloat16)``, the peer a user
    would try first on a CPU with AVX-512-BF16 / AMX or on a GPU.
    """

    name = "torch"

    def __init__(self, model, dtype: str = "fp32") -> None:
        if dtype not in TORCH_DTYPES:
            raise ConfigError(f"dtype must be one of {sorted(TORCH_DTYPES)} for the PyTorch reference, got {dtype!r}.")
        self.model = model.eval()
        self.device = model.device
        self.dtype = dtype

    def _tensor(self, value: Any) -> torch.Tensor:
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        return tensor.to(self.device)

    @contextlib.contextmanager
    def _autocast(self):
        """bf16: ``torch.autocast`` (and, locally, silence PyTorch's notice that RMSNorm's fp32
        weight meets a bf16 input: it then runs unfused in fp32, which is what autocast intends)."""
        cast = TORCH_DTYPES[self.dtype]
        if cast is None:
            yield
            return
        with warnings.catch_warnings(), torch.autocast(self.device.type, dtype=cast):
            warnings.filterwarnings("ignore", message="Mismatch dtype between input and weight")
            yield

    @torch.inference_mode()
    def encode(self, pixels: Any) -> torch.Tensor:
        with self._autocast():
            return self.model.encode_image(self._tensor(pixels)).float()

    @torch.inference_mode()
    def denoise(self, z_img: Any, context: Any, context_mask: Any) -> torch.Tensor:
        """A single ``z_img`` (1, 16, h, w) is repeated for the B prompts of ``context``."""
        z_img, context = self._tensor(z_img), self._tensor(context)
        if z_img.shape[0] == 1 and context.shape[0] > 1:
            z_img = z_img.expand(context.shape[0], *z_img.shape[1:]).contiguous()
        with self._autocast():
            return self.model.predict_latent(z_img, context, self._tensor(context_mask)).float()

    @torch.inference_mode()
    def decode(self, latent: Any) -> torch.Tensor:
        with self._autocast():
            return self.model.decode_mask(self._tensor(latent)).float()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self.model = None
