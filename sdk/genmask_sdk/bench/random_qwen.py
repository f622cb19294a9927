"""Random-weight Qwen2.5-VL checkpoints for tests and benchmarks (nothing is downloaded).

* ``word_tokenizer()``: a BPE tokenizer trained here on English text, so the chat template and
  ordinary phrases take about as many tokens as with Qwen's own tokenizer (each common word one
  token, a ``Ġ``-prefixed byte-level BPE like Qwen2's), with Qwen2.5-VL's control tokens and chat
  template. Token ids differ from Qwen's; sequence lengths are what matters here.
* ``qwen_config(size, tokenizer)``: the ``tiny`` test configuration, or the published ``3b`` / ``7b``
  architectures (Qwen2.5-VL-3B/7B-Instruct config.json values) with random weights.
* ``random_qwen(config, dtype)``: the ``Qwen2_5_VLForConditionalGeneration`` with N(0, 0.02) weights
  and unit norms, allocated directly in ``dtype`` (3B in float32 is 15 GB).
* ``save_random_qwen(directory, size)``: model + tokenizer + image processor with
  ``save_pretrained``, the layout ``QwenVLEmbedder.from_pretrained`` loads from a hub snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genmask_sdk.families.genmask.modeling.embedders.qwen import QWEN25VL_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]

_CORPUS = [
    "You are a helpful assistant.", "Please segment the {} in the image.",
    "Answer with only a short noun phrase that names the object to segment, nothing else.",
    "what can I use to pour water into? which object is closest to the robot gripper on the left?",
    "the red circle the blue square the green triangle the small yellow star on the right of the big one",
    "the cup the mug the bottle the bowl the plate the knife the fork the person the dog the cat the car",
    "the left gripper the shape in the middle the smallest shape the largest object at the top at the bottom",
]
_WORDS = ("red blue green yellow circle square triangle star cup mug bottle bowl plate person dog cat car left right "
          "middle top bottom small big smallest largest object shape gripper robot table chair door window system user "
          "assistant")

def _released_vision(out_hidden_size: int) -> dict[str, Any]:
    """The vision tower shared by Qwen2.5-VL-3B and -7B (only its output width, the LLM's, differs)."""
    return dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=out_hidden_size,
                patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                fullatt_block_indexes=[7, 15, 23, 31])


_RELEASED_ROPE = {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}

#: Published architectures (config.json of Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "3b": dict(text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=128000,
                         rope_parameters=_RELEASED_ROPE, tie_word_embeddings=True, rms_norm_eps=1e-6),
               vision=_released_vision(2048)),
    "7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000,
                         rope_parameters=_RELEASED_ROPE, tie_word_embeddings=False, rms_norm_eps=1e-6),
               vision=_released_vision(3584)),
    "tiny": dict(text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=4096,
                           rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}),
                 vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                             patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                             fullatt_block_indexes=[1])),
}


def word_tokenizer(vocab_size: int = 600):
    """A ``PreTrainedTokenizerFast``: byte-level BPE trained on a small English corpus, Qwen2.5-VL's
    control tokens and chat template, eos ``<|im_end|>``, pad ``<|endoftext|>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [line.format(w) for line in _CORPUS for w in _WORDS.split()] * 4
    backend.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=QWEN25VL_CHAT_TEMPLATE)


def image_processor(**kwargs):
    """Qwen2.5-VL's image processor (its torchvision backend only where torchvision imports)."""
    try:
        import torchvision  # noqa: F401
        from transformers import Qwen2VLImageProcessor as processor_class
    except ImportError:
        from transformers import Qwen2VLImageProcessorPil as processor_class
    return processor_class(**kwargs)


def qwen_config(size: str, tokenizer):
    """``Qwen2_5_VLConfig`` of ``size`` ("tiny", "3b", "7b") with the tokenizer's control-token ids."""
    from transformers import Qwen2_5_VLConfig

    arch = ARCHITECTURES[size]
    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)))
    text = dict(arch["text"], rope_parameters=dict(arch["text"]["rope_parameters"]))  # configs may edit it
    text.setdefault("vocab_size", len(tokenizer))
    text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    return Qwen2_5_VLConfig(text_config=text, vision_config=dict(arch["vision"]),
                            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                            tie_word_embeddings=text.get("tie_word_embeddings", False))


@torch.no_grad()
def random_qwen(config, dtype: torch.dtype = torch.float32, seed: int = 0):
    """``Qwen2_5_VLForConditionalGeneration(config)`` in eval mode with seeded N(0, 0.02) weights,
    zero biases and unit norm scales, on the CPU in ``dtype`` (built without transformers' own
    initialisation, which would take minutes at 3B; rotary tables are computed as usual)."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = Qwen2_5_VLForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            param.zero_()
        elif param.ndim == 1:  # RMSNorm / LayerNorm scales
            param.fill_(1.0)
        else:
            param.normal_(0.0, 0.02, generator=generator)
    model.tie_weights()
    return model.to(dtype).eval()


def save_random_qwen(directory: str | Path, size: str = "tiny", seed: int = 0, **processor_kwargs):
    """Write a random ``size`` Qwen2.5-VL checkpoint (model, tokenizer, image processor) to ``directory``;
    returns the in-memory model it saved."""
    tokenizer = word_tokenizer()
    model = random_qwen(qwen_config(size, tokenizer), seed=seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    image_processor(**processor_kwargs).save_pretrained(directory)
    return model
