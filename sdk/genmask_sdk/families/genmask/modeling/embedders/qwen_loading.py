"""Loading Qwen2.5-VL checkpoints: config checks, the processor pieces, the chat template."""

from __future__ import annotations

import os
from typing import Any

import torch

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, InputTypeError

def text_hidden_size(config: Any) -> int:
    text_config = getattr(config, "text_config", None)
    size = getattr(text_config, "hidden_size", None) if text_config is not None else None
    if size is None:  # transformers 4.x kept the text fields at the top level
        size = getattr(config, "hidden_size", None)
    if not isinstance(size, int) or size <= 0:
        raise ArtifactMismatchError(
            f"cannot read the text hidden size from the model config ({type(config).__name__}); "
            "expected a Qwen2.5-VL config with text_config.hidden_size (3584 for 7B, 2048 for 3B)."
        )
    return size


def read_text_hidden_size(name_or_path: str, local_files_only: bool = False) -> int:
    """D of a Qwen2.5-VL checkpoint (hub id or directory), read from its config alone."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, local_files_only=local_files_only)
    except OSError as exc:
        raise ArtifactNotFoundError(
            f"cannot read the config of {name_or_path!r} ({exc}); pass a local Qwen2.5-VL directory "
            "or a reachable hub id."
        ) from exc
    return text_hidden_size(config)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """``Qwen2_5_VLForConditionalGeneration`` -> its ``Qwen2_5_VLModel`` (skips ``lm_head``)."""
    inner = getattr(model, "model", None)
    if hasattr(model, "lm_head") and isinstance(inner, torch.nn.Module) and hasattr(inner, "visual"):
        return inner
    if not hasattr(model, "visual"):
        raise InputTypeError(
            f"model must be a Qwen2.5-VL model (Qwen2_5_VLModel or Qwen2_5_VLForConditionalGeneration),"
            f" got {type(model).__name__} without a vision tower ('visual'); load one with "
            "QwenVLEmbedder.from_pretrained('Qwen/Qwen2.5-VL-7B-Instruct')."
        )
    return model


class ProcessorPieces:
    """The two processor parts the embedder needs, when the full processor cannot be built."""

    def __init__(self, tokenizer: Any, image_processor: Any, chat_template: str | None) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template


def read_chat_template(name: str, local_files_only: bool) -> str | None:
    """The processor-level chat template (chat_template.jinja or chat_template.json), if any."""
    import json

    for filename in ("chat_template.jinja", "chat_template.json"):
        if os.path.isdir(name):
            path = os.path.join(name, filename)
            if not os.path.isfile(path):
                continue
        else:
            try:
                from huggingface_hub import hf_hub_download

                path = hf_hub_download(name, filename, local_files_only=local_files_only)
            except Exception:  # absent file, offline hub: fall back to the tokenizer's template
                continue
        with open(path, encoding="utf-8") as handle:
            if filename.endswith(".jinja"):
                return handle.read()
            template = json.load(handle).get("chat_template")
            if isinstance(template, str):
                return template
    return None
