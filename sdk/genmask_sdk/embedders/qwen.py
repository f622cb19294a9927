"""Qwen2.5-VL embedder: (image, target phrase) -> final-layer hidden states of the instruction.

GenMask conditions its DiT on the last hidden layer of Qwen2.5-VL (7B: D=3584, 3B: D=2048) run on
one user turn made of the image followed by the instruction ``Please segment the {target} in the
image.``. Only the prefill is needed, so this module runs the *base* model
(``Qwen2_5_VLModel``: vision tower + language model, no ``lm_head``) once and takes its
``last_hidden_state``, which is already the output of the final RMSNorm. No ``generate``, no KV
cache, no ``output_hidden_states`` (which would keep every layer's activations alive).

Which tokens are returned
    Every token of the rendered chat sequence: the default system turn the chat template inserts,
    ``<|im_start|>user``, ``<|vision_start|>``, all image tokens, ``<|vision_end|>``, the
    instruction, ``<|im_end|>`` and (see :data:`ADD_GENERATION_PROMPT`) ``<|im_start|>assistant``.
    That is the paper's "final-layer hidden states of the instruction": the DiT cross-attends to the
    whole sequence, and the image tokens are what makes the condition image-aware (the text tokens
    after the image see it through causal attention, the image tokens carry it directly). Nothing
    is cropped, so a trained DiT and this embedder agree as long as the chat template and
    :data:`ADD_GENERATION_PROMPT` do.

Padding
    Prompts in a batch differ in length (different image sizes give different numbers of image
    tokens; different targets give different text lengths). The tokenizer pads on whatever side it
    is configured for (the attention mask tells the model which tokens are padding, and Qwen2.5-VL
    computes its 3-D M-RoPE positions from the unpadded tokens, so either side gives the same
    states for the real tokens). The result is then re-packed *right-padded*: row ``b`` holds its
    real tokens first, in order, and zeros after them; ``mask[b]`` is True exactly on those.

Processor
    ``AutoProcessor`` for Qwen2.5-VL in transformers 5.x also builds the *video* processor, which
    needs torchvision, even for images only. This embedder therefore only needs the two pieces it
    uses, the tokenizer and the image processor (``AutoTokenizer`` + ``AutoImageProcessor``, which
    picks the PIL backend when torchvision is missing), and expands ``<|image_pad|>`` into
    ``grid_t * grid_h * grid_w / merge_size**2`` image tokens exactly as ``Qwen2_5_VLProcessor``
    does. A full processor, when one can be built, is accepted as well and only its tokenizer,
    image processor and chat template are used.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Sequence

import torch
from PIL import Image

from ..errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    ConfigError,
    InputTypeError,
    InvalidInputError,
)
from .base import Embedding

__all__ = [
    "ADD_GENERATION_PROMPT",
    "DEFAULT_PROMPT_TEMPLATE",
    "QWEN25VL_CHAT_TEMPLATE",
    "QwenVLEmbedder",
]

#: The instruction GenMask was trained with; ``{target}`` is replaced by the (stripped) phrase.
DEFAULT_PROMPT_TEMPLATE = "Please segment the {target} in the image."

#: Whether the chat template appends ``<|im_start|>assistant\n`` after the user turn. True: the
#: conditioning then ends on the tokens where the model has read the image and the whole
#: instruction and is about to answer, which is also how Qwen2.5-VL is prompted at inference and how
#: other diffusion models conditioned on it (Qwen-Image) render their prompts. It must match the
#: setting the DiT checkpoint was trained with; it is a constant, not an option, for that reason.
ADD_GENERATION_PROMPT = True

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
_MAX_ASPECT_RATIO = 200  # Qwen2-VL's smart_resize refuses anything more elongated


def _text_hidden_size(config: Any) -> int:
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
    return _text_hidden_size(config)


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
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


class QwenVLEmbedder:
    """Embeds (image, target phrase) pairs with Qwen2.5-VL's final-layer hidden states.

    Args:
        model: ``Qwen2_5_VLModel`` (preferred: no ``lm_head``) or
            ``Qwen2_5_VLForConditionalGeneration`` (its base model is used). Put it on its device
            and dtype before; it is switched to eval mode.
        processor: a ``Qwen2_5_VLProcessor``, or anything with ``tokenizer`` and
            ``image_processor`` attributes (and optionally ``chat_template``).
        prompt_template: instruction with a ``{target}`` placeholder.
        max_prompt_tokens: if set, a prompt whose rendered sequence (image tokens included) is
            longer raises :class:`InvalidInputError` before the model runs; nothing is truncated,
            because cutting the sequence would cut the target phrase or the image.
        min_pixels, max_pixels: bounds on the pixel count each image is resized to (aspect ratio
            kept, sides multiples of ``patch_size * merge_size`` = 28). Each 28x28 block becomes one
            visual token, so ``max_pixels = 28*28*256`` caps an image at 256 tokens. None keeps the
            image processor's own setting (Qwen2.5-VL default: 56*56 .. 28*28*1280).

    The returned :class:`Embedding` lives on the model's device, as float32.
    """

    uses_image: bool = True

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        max_prompt_tokens: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InputTypeError(
                f"model must be a torch.nn.Module (a Qwen2.5-VL model), got {type(model).__name__}."
            )
        self._model = _base_model(model).eval()
        self.config = self._model.config
        self.hidden_size: int = _text_hidden_size(self.config)

        tokenizer = getattr(processor, "tokenizer", None)
        image_processor = getattr(processor, "image_processor", None)
        if tokenizer is None or image_processor is None:
            raise InputTypeError(
                "processor must provide .tokenizer and .image_processor (a Qwen2_5_VLProcessor, or "
                f"any object holding both); got {type(processor).__name__}."
            )
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template: str = (
            getattr(processor, "chat_template", None)
            or getattr(tokenizer, "chat_template", None)
            or QWEN25VL_CHAT_TEMPLATE
        )
        if isinstance(self.chat_template, dict):  # multi-template processors: take the default one
            self.chat_template = self.chat_template.get("default") or QWEN25VL_CHAT_TEMPLATE

        if not isinstance(prompt_template, str) or "{target}" not in prompt_template:
            raise ConfigError(
                f"prompt_template must be a string containing '{{target}}', got {prompt_template!r}; "
                f"the default is {DEFAULT_PROMPT_TEMPLATE!r}."
            )
        self.prompt_template = prompt_template
        if max_prompt_tokens is not None and (not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1):
            raise ConfigError(f"max_prompt_tokens must be a positive int or None, got {max_prompt_tokens!r}.")
        self.max_prompt_tokens = max_prompt_tokens
        for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive int (a pixel count) or None, got {value!r}.")
        if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
            raise ConfigError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels}).")
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels

        image_token_id = getattr(self.config, "image_token_id", None)
        vocab_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if image_token_id is None or vocab_id != image_token_id:
            raise ArtifactMismatchError(
                f"the tokenizer maps {IMAGE_TOKEN} to id {vocab_id} but the model config expects "
                f"image_token_id={image_token_id}; load the tokenizer and the model from the same "
                "Qwen2.5-VL checkpoint."
            )
        self._image_token_id = image_token_id
        self._merge_size = int(getattr(image_processor, "merge_size", None) or 2)
        if tokenizer.pad_token is None:  # Qwen's tokenizer pads with <|endoftext|>; others may not
            tokenizer.pad_token = tokenizer.eos_token
        # User text must not smuggle in control tokens (an extra <|image_pad|> would desynchronise
        # image features and placeholders, an <|im_end|> would end the turn).
        self._control_tokens = tuple(
            t for t in tokenizer.get_added_vocab() if t.startswith("<|") and t.endswith("|>")
        )
        forward_params = inspect.signature(self._model.forward).parameters
        self._wants_mm_token_type_ids = "mm_token_type_ids" in forward_params

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        max_prompt_tokens: int | None = None,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        local_files_only: bool = False,
    ) -> "QwenVLEmbedder":
        """Loads the processor pieces and the base Qwen2.5-VL model (no ``lm_head``).

        ``name_or_path`` is a hub id (``Qwen/Qwen2.5-VL-7B-Instruct``, ``...-3B-Instruct``) or a
        local directory written by ``save_pretrained``; both the current checkpoint layout and the
        original hub one (``visual.*`` / ``model.layers.*``) load. ``dtype`` is the compute dtype
        (float32 on CPU; bfloat16 or float16 on GPU); the output is float32 either way.
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, Qwen2_5_VLModel

        name = os.fspath(name_or_path)
        looks_local = isinstance(name_or_path, os.PathLike) or name.startswith((".", "~", os.path.sep))
        if looks_local and not os.path.isdir(os.path.expanduser(name)):
            raise ArtifactNotFoundError(
                f"no Qwen2.5-VL checkpoint directory at {name!r}; pass an existing directory "
                "written by save_pretrained, or a hub id such as 'Qwen/Qwen2.5-VL-7B-Instruct'."
            )
        name = os.path.expanduser(name)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ConfigError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}.")
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"device {device!r} is not a valid torch device ('cpu', 'cuda', 'cuda:0').") from exc

        kwargs = {"local_files_only": local_files_only}
        try:
            config = AutoConfig.from_pretrained(name, **kwargs)
        except OSError as exc:
            raise ArtifactNotFoundError(
                f"cannot load a config from {name!r} ({exc}); pass a local Qwen2.5-VL directory or a "
                "hub id reachable from this machine (set HF_HUB_OFFLINE=1 to use the cache only)."
            ) from exc
        if getattr(config, "model_type", None) != "qwen2_5_vl":
            raise ArtifactMismatchError(
                f"{name!r} holds a {getattr(config, 'model_type', '?')!r} model, not 'qwen2_5_vl'; "
                "GenMask is conditioned on Qwen2.5-VL (e.g. 'Qwen/Qwen2.5-VL-7B-Instruct')."
            )
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        image_processor = AutoImageProcessor.from_pretrained(name, **kwargs)
        chat_template = _read_chat_template(name, local_files_only) or getattr(tokenizer, "chat_template", None)
        processor = _Pieces(tokenizer, image_processor, chat_template)

        model = Qwen2_5_VLModel.from_pretrained(
            name, config=config, dtype=dtype, device_map={"": device}, **kwargs
        )
        return cls(
            model,
            processor,
            prompt_template=prompt_template,
            max_prompt_tokens=max_prompt_tokens,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> torch.nn.Module:
        """The base Qwen2.5-VL model that runs (no ``lm_head``)."""
        return self._model

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self._model.parameters()).dtype

    # ------------------------------------------------------------------ inputs
    def render(self, target: str) -> str:
        """The chat text for one target, with a single ``<|image_pad|>`` placeholder."""
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": self.prompt_template.replace("{target}", target)},
                ],
            }
        ]
        text = self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=ADD_GENERATION_PROMPT,
        )
        if not isinstance(text, str) or text.count(IMAGE_TOKEN) != 1:
            raise ArtifactMismatchError(
                f"the chat template rendered {text!r}, which should hold exactly one {IMAGE_TOKEN}; "
                "use a Qwen2.5-VL checkpoint's tokenizer/processor (or drop its custom chat template)."
            )
        return text

    def _validate(self, images: Any, targets: Any) -> tuple[list[Image.Image], list[str]]:
        if images is None:
            raise InputTypeError(
                "QwenVLEmbedder needs one PIL image per target (uses_image is True); got images=None."
            )
        if isinstance(targets, str) or not isinstance(targets, Sequence):
            raise InputTypeError(
                f"targets must be a sequence of strings (e.g. ['the red circle']), got {type(targets).__name__}."
            )
        if isinstance(images, Image.Image) or not isinstance(images, Sequence):
            raise InputTypeError(
                f"images must be a sequence of PIL images (e.g. [img]), got {type(images).__name__}."
            )
        if len(images) != len(targets):
            raise InvalidInputError(
                f"got {len(images)} images but {len(targets)} targets; pass exactly one image per target."
            )
        if len(targets) == 0:
            raise InvalidInputError("empty batch: pass at least one (image, target) pair.")

        clean_targets = []
        for i, target in enumerate(targets):
            if not isinstance(target, str):
                raise InputTypeError(f"targets[{i}] must be a str, got {type(target).__name__}.")
            target = target.strip()
            if not target:
                raise InvalidInputError(
                    f"targets[{i}] is empty or whitespace; give a phrase naming the object, e.g. 'the red circle'."
                )
            bad = [t for t in self._control_tokens if t in target]
            if bad:
                raise InvalidInputError(
                    f"targets[{i}] contains the control token(s) {bad}, which would break the chat "
                    "format; remove them from the phrase."
                )
            clean_targets.append(target)

        rgb_images = []
        for i, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise InputTypeError(
                    f"images[{i}] must be a PIL.Image.Image, got {type(image).__name__}; convert arrays "
                    "with PIL.Image.fromarray(array) first."
                )
            width, height = image.size
            if width < 1 or height < 1:
                raise InvalidInputError(f"images[{i}] has zero size ({width}x{height}).")
            if max(width, height) / min(width, height) > _MAX_ASPECT_RATIO:
                raise InvalidInputError(
                    f"images[{i}] is {width}x{height}: an aspect ratio above {_MAX_ASPECT_RATIO} is not "
                    "supported by Qwen2.5-VL; crop or pad it first."
                )
            rgb_images.append(image if image.mode == "RGB" else image.convert("RGB"))
        return rgb_images, clean_targets

    def prepare(self, images: Sequence[Image.Image], targets: Sequence[str]) -> dict[str, torch.Tensor]:
        """Validated, tokenized model inputs (on CPU) for a batch; what ``__call__`` feeds the model."""
        images, targets = self._validate(images, targets)
        size_kwargs = {}
        if self.min_pixels is not None or self.max_pixels is not None:
            size = dict(getattr(self.image_processor, "size", None) or {})
            if self.min_pixels is not None:
                size["shortest_edge"] = self.min_pixels
            if self.max_pixels is not None:
                size["longest_edge"] = self.max_pixels
            size_kwargs["size"] = {k: size[k] for k in ("shortest_edge", "longest_edge") if k in size}
        vision = self.image_processor(images=images, return_tensors="pt", **size_kwargs)
        grid_thw = vision["image_grid_thw"]

        texts = []
        for text, thw in zip((self.render(t) for t in targets), grid_thw):
            n_tokens = int(thw.prod()) // self._merge_size**2
            texts.append(text.replace(IMAGE_TOKEN, IMAGE_TOKEN * n_tokens))
        encoded = self.tokenizer(texts, padding=True, return_tensors="pt")
        input_ids = encoded["input_ids"]
        attention_mask = encoded["attention_mask"]

        lengths = attention_mask.sum(dim=1)
        if self.max_prompt_tokens is not None and int(lengths.max()) > self.max_prompt_tokens:
            worst = int(lengths.argmax())
            raise InvalidInputError(
                f"prompt {worst} is {int(lengths[worst])} tokens long ({int(grid_thw[worst].prod()) // self._merge_size**2}"
                f" of them image tokens), above max_prompt_tokens={self.max_prompt_tokens}; shorten the "
                "target, lower max_pixels (fewer image tokens) or raise max_prompt_tokens."
            )
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "pixel_values": vision["pixel_values"],
            "image_grid_thw": grid_thw,
        }
        if self._wants_mm_token_type_ids:  # transformers 5.x derives M-RoPE positions from these
            inputs["mm_token_type_ids"] = (input_ids == self._image_token_id).to(torch.int32)
        return inputs

    # ------------------------------------------------------------------ forward
    def __call__(self, images: Sequence[Image.Image] | None, targets: Sequence[str]) -> Embedding:
        """Embeds a batch: ``states`` [B, L, hidden_size] float32 (right-padded with zeros) and
        ``mask`` [B, L] bool, L being the longest prompt of the batch."""
        inputs = self.prepare(images, targets)
        device = self.device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        # no_grad, not inference_mode: inference tensors could not feed a DiT that is being trained.
        with torch.no_grad():
            out = self._model(**inputs, use_cache=False, return_dict=True)
            return _right_align(out.last_hidden_state, inputs["attention_mask"].bool())


def _right_align(states: torch.Tensor, mask: torch.Tensor) -> Embedding:
    """Moves each row's real tokens to the front (order kept), zeros the rest, trims to the longest."""
    lengths = mask.sum(dim=1)
    # Stable sort of "is padding" puts real tokens first in their original order, whatever the side.
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices
    width = int(lengths.max())
    order = order[:, :width]
    gathered = torch.gather(states, 1, order.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
    new_mask = torch.arange(width, device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)
    # where(), not a product: padding rows of a left-padded batch may hold NaN (fully masked queries).
    out = torch.where(new_mask.unsqueeze(-1), gathered.float(), torch.zeros((), device=states.device))
    return Embedding(states=out.contiguous(), mask=new_mask)


class _Pieces:
    """The two processor parts the embedder needs, when the full processor cannot be built."""

    def __init__(self, tokenizer: Any, image_processor: Any, chat_template: str | None) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template


def _read_chat_template(name: str, local_files_only: bool) -> str | None:
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
