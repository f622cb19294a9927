"""Instruction embedders: MiniLM (demo, text only) and Qwen2.5-VL (real GenMask)."""

from __future__ import annotations

import torch

from ..config import EmbedderSpec
from .base import Embedder, Embedding

__all__ = ["Embedder", "Embedding", "load_embedder"]


def load_embedder(spec: EmbedderSpec, device: str | torch.device = "cpu") -> Embedder:
    """Build the embedder an ``EmbedderSpec`` names (weights from a local dir, package or hub id)."""
    if spec.kind == "minilm":
        from .minilm import MiniLMEmbedder

        return MiniLMEmbedder.from_pretrained(spec.name_or_path, device, spec.prompt_template, spec.max_prompt_tokens)
    from .qwen import QwenVLEmbedder

    return QwenVLEmbedder.from_pretrained(
        spec.name_or_path, device=device, prompt_template=spec.prompt_template,
        max_prompt_tokens=spec.max_prompt_tokens, image_size=spec.image_size,
        reason_template=spec.reason_template, reason_max_new_tokens=spec.reason_max_new_tokens,
    )
