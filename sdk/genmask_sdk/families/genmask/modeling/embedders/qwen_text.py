"""Qwen2.5-VL chat text: the chat template, control tokens, and token-list helpers (no model)."""

from __future__ import annotations

from typing import Any

import torch

from genmask_sdk.families.genmask.modeling.embedders.base import Embedding

#: Qwen2.5-VL-Instruct's chat template, used only when neither the processor nor the tokenizer of
#: a checkpoint carries one (the official checkpoints do).
QWEN25VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

IMAGE_TOKEN = "<|image_pad|>"
VISION_END = "<|vision_end|>"


def right_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids (B, L) int64 right-padded with ``pad_id``, attention mask (B, L) int64)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def stack_rows(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> Embedding:
    """Right-padded (states (L_i, D), mask (L_i,)) rows -> one Embedding trimmed to the longest real row."""
    width = max(int(mask.sum()) for _, mask in rows)
    states = torch.zeros(len(rows), width, rows[0][0].shape[-1], device=rows[0][0].device)
    mask = torch.zeros(len(rows), width, dtype=torch.bool, device=rows[0][0].device)
    for i, (row_states, row_mask) in enumerate(rows):
        n = int(row_mask.sum())
        states[i, :n], mask[i, :n] = row_states[:n], True
    return Embedding(states, mask)


def stop_token_ids(tokenizer: Any, config: Any) -> frozenset[int]:
    """Token ids that end an answer: <|im_end|>, <|endoftext|>, the tokenizer's and config's eos."""
    ids = set()
    for token in ("<|im_end|>", "<|endoftext|>"):
        value = tokenizer.convert_tokens_to_ids(token)
        if isinstance(value, int) and value != getattr(tokenizer, "unk_token_id", None):
            ids.add(value)
    for source in (tokenizer, getattr(config, "text_config", None), config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        ids.update(value if isinstance(value, (list, tuple)) else [value] if isinstance(value, int) else [])
    return frozenset(ids)


def clean_phrase(text: str) -> str:
    """A generated answer -> the phrase: first line, no surrounding quotes, no final full stop."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    previous = None
    while line != previous:
        previous, line = line, line.strip().strip("\"'`").rstrip(".")
    return line
