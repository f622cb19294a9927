"""The image prefix of Qwen2.5-VL's chat sequence, computed once per image and reused per prompt.

The rendered chat is ``prefix + suffix``:

* prefix: ``<|im_start|>system ... <|im_end|>\\n<|im_start|>user\\n<|vision_start|>`` + the image
  tokens + ``<|vision_end|>``; it depends on the image alone;
* suffix: the instruction, ``<|im_end|>\\n`` and (``ADD_GENERATION_PROMPT``) ``<|im_start|>assistant\\n``.

Because the split is at a special token, tokenising the two parts separately gives exactly the ids of
the whole text. Attention is causal, so the prefix's final-layer states and its per-layer keys and
values are the same whatever follows; a suffix run on that cache, with the positions the full
sequence would give it, reproduces the full prefill (tested to 1e-4 in float32). Qwen2.5-VL's M-RoPE
gives every text token after the image the same position on its three axes (t, h, w): the next
integer after the largest position used so far, which is ``ImagePrefix.next_position``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ImagePrefix", "expanded_cache", "suffix_positions"]


@dataclass(frozen=True, eq=False)
class ImagePrefix:
    """What ``QwenVLEmbedder.encode_image`` computes for one image.

    Attributes:
        states: (1, Lp, D) final-layer hidden states of the prefix tokens, in the model's dtype.
        keys, values: per decoder layer, (1, kv_heads, Lp, head_dim) tensors of the prefix.
        next_position: M-RoPE position (all three axes) of the first suffix token.
        image_tokens: number of ``<|image_pad|>`` tokens in the prefix.
        size: (width, height) of the image the caller gave, before the VLM's letterbox.
    """

    states: torch.Tensor
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    next_position: int
    image_tokens: int
    size: tuple[int, int]

    @property
    def length(self) -> int:
        """Lp, the number of prefix tokens."""
        return int(self.states.shape[1])


def cache_tensors(cache: Any) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """(keys, values) per layer of a transformers ``DynamicCache`` (5.x ``layers`` or 4.x lists)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return tuple(layer.keys for layer in layers), tuple(layer.values for layer in layers)
    return tuple(cache.key_cache), tuple(cache.value_cache)


def expanded_cache(prefix: ImagePrefix, batch: int, config: Any):
    """A fresh ``DynamicCache`` holding the prefix for ``batch`` rows (views, not copies: running
    a suffix concatenates new tensors and never writes into the prefix's)."""
    from transformers import DynamicCache

    data = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in zip(prefix.keys, prefix.values)]
    return DynamicCache(ddp_cache_data=data, config=config)


def suffix_positions(prefix: ImagePrefix, batch: int, length: int, start: int = 0) -> torch.Tensor:
    """(3, batch, length) int64 M-RoPE positions of suffix tokens ``start .. start+length-1``."""
    first = prefix.next_position + start
    device = prefix.states.device
    return torch.arange(first, first + length, device=device).view(1, 1, -1).expand(3, batch, -1)
