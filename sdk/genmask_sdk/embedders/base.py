"""The embedder interface: images + instructions -> conditioning states for the DiT."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import torch
from PIL import Image


@dataclass(frozen=True)
class Embedding:
    """Conditioning for a batch of prompts.

    Attributes:
        states: float32 tensor [B, L, D], final-layer hidden states; rows past a prompt's length
            are zero.
        mask: bool tensor [B, L], True where a token is real, False where it is padding. Every row
            has at least one True.
    """

    states: torch.Tensor
    mask: torch.Tensor


@runtime_checkable
class Embedder(Protocol):
    """Turns (image, target phrase) pairs into hidden states.

    ``hidden_size`` is D. ``uses_image`` says whether the image influences the states (Qwen2.5-VL
    does, MiniLM does not; a text-only embedder's result can be cached per prompt).
    """

    hidden_size: int
    uses_image: bool

    def __call__(self, images: Sequence[Image.Image] | None, targets: Sequence[str]) -> Embedding:
        """Embed ``targets`` (phrases such as "the red circle"), one per image when images are used."""
        ...
