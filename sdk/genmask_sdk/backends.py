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

from typing import Any, Protocol

import numpy as np
import torch

from .runtime.pipeline import STAGE_IO, RunnerPipeline  # noqa: F401  (re-exported)


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

    def _tensor(self, value: Any) -> torch.Tensor:
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        return tensor.to(self.device)

    @torch.inference_mode()
    def encode(self, pixels: Any) -> torch.Tensor:
        return self.model.encode_image(self._tensor(pixels)).float()

    @torch.inference_mode()
    def denoise(self, z_img: Any, context: Any, context_mask: Any) -> torch.Tensor:
        """A single ``z_img`` (1, 16, h, w) is repeated for the B prompts of ``context``."""
        z_img, context = self._tensor(z_img), self._tensor(context)
        if z_img.shape[0] == 1 and context.shape[0] > 1:
            z_img = z_img.expand(context.shape[0], *z_img.shape[1:]).contiguous()
        return self.model.predict_latent(z_img, context, self._tensor(context_mask)).float()

    @torch.inference_mode()
    def decode(self, latent: Any) -> torch.Tensor:
        return self.model.decode_mask(self._tensor(latent)).float()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self.model = None
