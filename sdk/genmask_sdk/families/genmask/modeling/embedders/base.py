"""The embedder interface: images + instructions -> conditioning states for the DiT."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

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
    ``can_generate`` says whether ``reason`` works (a VLM with its language-model head).

    The two-step API is what ``Segmenter`` uses and what an exported (ONNX / TensorRT)
    implementation of the stage provides too: ``encode_image`` once per image (None for a
    text-only embedder), then ``encode_prompts`` per batch of prompts on that prefix.
    """

    hidden_size: int
    uses_image: bool
    can_generate: bool

    def __call__(self, images: Sequence[Image.Image] | None, targets: Sequence[str]) -> Embedding:
        """Embed ``targets`` (phrases such as "the red circle"), one per image when images are used."""
        ...

    def encode_image(self, image: Image.Image | None) -> Any:
        """What depends on the image alone (the VLM's image prefix), or None."""
        ...

    def encode_prompts(self, prefix: Any, targets: Sequence[str]) -> Embedding:
        """Embed ``targets`` on the prefix ``encode_image`` returned."""
        ...

    def reason(self, prefix: Any, instruction: str) -> str:
        """Name, as a short phrase, the target ``instruction`` refers to (reasoning mode)."""
        ...
