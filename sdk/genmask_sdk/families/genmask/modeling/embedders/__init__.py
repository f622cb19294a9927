"""Instruction embedders: MiniLM (demo, text only) and Qwen2.5-VL (real GenMask)."""

from __future__ import annotations

from genmask_sdk.families.genmask.config import EmbedderSpec

__all__ = ["Embedder", "Embedding", "load_embedder"]


def __getattr__(name: str):  # Embedder / Embedding (torch) are imported on first use
    if name in ("Embedder", "Embedding"):
        from genmask_sdk.families.genmask.modeling.embedders import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_embedder(spec: EmbedderSpec, device="cpu", *, local_files_only: bool = False):
    """Build the embedder an ``EmbedderSpec`` names (weights from a local dir, package or hub id).

    ``local_files_only``: never download (a hub id must be in the local cache); what
    ``Segmenter.from_engines`` uses, so a manifest cannot make the SDK reach the network."""
    if spec.kind == "minilm":
        from genmask_sdk.families.genmask.modeling.embedders.minilm import MiniLMEmbedder

        return MiniLMEmbedder.from_pretrained(spec.name_or_path, str(device), spec.prompt_template,
                                              spec.max_prompt_tokens, local_files_only=local_files_only)
    from genmask_sdk.families.genmask.modeling.embedders.qwen import QwenVLEmbedder

    return QwenVLEmbedder.from_pretrained(
        spec.name_or_path, device=str(device), prompt_template=spec.prompt_template,
        max_prompt_tokens=spec.max_prompt_tokens, image_size=spec.image_size,
        reason_template=spec.reason_template, reason_max_new_tokens=spec.reason_max_new_tokens,
        local_files_only=local_files_only,
    )
