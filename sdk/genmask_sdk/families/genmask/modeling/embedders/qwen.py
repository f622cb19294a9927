"""Qwen2.5-VL embedder: (image, target phrase) -> final-layer hidden states of the instruction.

GenMask conditions its DiT on the last hidden layer of Qwen2.5-VL (7B: D=3584, 3B: D=2048) run on
one user turn made of the image followed by the instruction ``Please segment the {target} in the
image.``. The states are the base model's ``last_hidden_state`` (``Qwen2_5_VLModel``: vision tower
+ language model), already the output of the final RMSNorm; the ``lm_head`` is only used by the
reasoning mode, and ``output_hidden_states`` never (it would keep every layer's activations alive).

Which tokens are returned
    Every token of the rendered chat sequence: the default system turn the chat template inserts,
    ``<|im_start|>user``, ``<|vision_start|>``, all image tokens, ``<|vision_end|>``, the
    instruction, ``<|im_end|>`` and (see :data:`ADD_GENERATION_PROMPT`) ``<|im_start|>assistant``.
    That is the paper's "final-layer hidden states of the instruction": the DiT cross-attends to the
    whole sequence, and the image tokens are what makes the condition image-aware (the text tokens
    after the image see it through causal attention, the image tokens carry it directly). Nothing
    is cropped, so a trained DiT and this embedder agree as long as the chat template and
    :data:`ADD_GENERATION_PROMPT` do.

Image budget
    With ``image_size`` (the presets: 448) every image is letterboxed to that square before the
    vision tower, so it is always ``(image_size / 28)**2`` tokens (256) and the sequence length is
    known from the config: ``max_prompt_tokens`` and the DiT's context profile follow from it.

Image-prefix cache (``qwen_prefix``)
    ``encode_image`` runs the vision tower and the prefill of the prefix (everything up to
    ``<|vision_end|>``) once and keeps its states and KV cache; ``encode_prompts`` runs only the
    suffix tokens of each prompt, batched, on that cache with the positions the full sequence gives
    them. Equal to the full prefill (``full_prefill``) to float rounding (tested ≤ 1e-4 in fp32).

Padding
    Rows are *right-padded*: row ``b`` holds its real tokens first, in order, and zeros after
    them; ``mask[b]`` is True exactly on those. Right padding under causal attention leaves the real
    tokens' states unchanged.

Reasoning (paper §3.1)
    ``reason(prefix, instruction)`` asks, on the same cached prefix, ``reason_template`` with the
    instruction and decodes greedily (at most ``reason_max_new_tokens``) a phrase naming the target;
    ``Segmenter.predict(..., reason=True)`` then segments that phrase.

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

from genmask_sdk.families.genmask.config import DEFAULT_REASON_TEMPLATE
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    ConfigError,
    InputTypeError,
    InvalidInputError,
    InvalidStateError,
)
from genmask_sdk.families.genmask.modeling.embedders.base import Embedding
from genmask_sdk.families.genmask.modeling.embedders.loading import quiet_transformers_progress
from genmask_sdk.families.genmask.modeling.embedders.qwen_loading import (
    ProcessorPieces,
    base_model,
    read_chat_template,
    read_text_hidden_size,
    text_hidden_size,
)
from genmask_sdk.families.genmask.modeling.embedders.qwen_prefix import (
    ImagePrefix,
    cache_tensors,
    expanded_cache,
    suffix_positions,
)
from genmask_sdk.families.genmask.modeling.embedders.qwen_text import (
    IMAGE_TOKEN,
    QWEN25VL_CHAT_TEMPLATE,
    VISION_END,
    clean_phrase,
    right_padded,
    stack_rows,
    stop_token_ids,
)

__all__ = [
    "ADD_GENERATION_PROMPT",
    "DEFAULT_PROMPT_TEMPLATE",
    "QWEN25VL_CHAT_TEMPLATE",
    "QwenVLEmbedder",
    "read_text_hidden_size",
]

#: The instruction GenMask was trained with; ``{target}`` is replaced by the (stripped) phrase.
DEFAULT_PROMPT_TEMPLATE = "Please segment the {target} in the image."

#: Whether the chat template appends ``<|im_start|>assistant\n`` after the user turn. True: the
#: conditioning then ends on the tokens where the model has read the image and the whole
#: instruction and is about to answer, which is also how Qwen2.5-VL is prompted at inference and how
#: other diffusion models conditioned on it (Qwen-Image) render their prompts. It must match the
#: setting the DiT checkpoint was trained with; it is a constant, not an option, for that reason.
ADD_GENERATION_PROMPT = True

_MAX_ASPECT_RATIO = 200  # Qwen2-VL's smart_resize refuses anything more elongated


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
        image_size: the fixed image budget: every image is letterboxed (aspect kept, centred on
            mid-grey) to ``image_size`` x ``image_size`` (a multiple of 28) before the vision tower,
            so it always becomes ``(image_size / 28)**2`` tokens and the sequence length is known
            from the config (448 -> 256 tokens). Excludes ``min_pixels`` / ``max_pixels``.
        min_pixels, max_pixels: without ``image_size``, bounds on the pixel count of Qwen's own
            dynamic resizing (aspect ratio kept, sides multiples of 28; each 28x28 block is one
            token). None keeps the image processor's setting (56*56 .. 28*28*1280).
        reason_template: stage-1 question of :meth:`reason`, with ``{instruction}``.
        reason_max_new_tokens: bound on the tokens :meth:`reason` generates.
        lm_head: the language-model head (``Qwen2_5_VLForConditionalGeneration.lm_head``) used by
            :meth:`reason`; taken from ``model`` when it is a ForConditionalGeneration model. Without
            it ``can_generate`` is False and :meth:`reason` raises.

    Two ways to embed, with equal results: ``encode_image(image)`` once, then
    ``encode_prompts(prefix, targets)`` per batch of prompts (what ``Segmenter`` does); or
    ``embedder(images, targets)``, which groups the targets by image and does the same.
    ``full_prefill(images, targets)`` runs the whole sequence in one forward (the reference the
    cache is tested against). Returned :class:`Embedding` tensors live on the model's device, float32.
    """

    uses_image: bool = True

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        max_prompt_tokens: int | None = None,
        image_size: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        reason_template: str = DEFAULT_REASON_TEMPLATE,
        reason_max_new_tokens: int = 16,
        lm_head: torch.nn.Module | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InputTypeError(
                f"model must be a torch.nn.Module (a Qwen2.5-VL model), got {type(model).__name__}."
            )
        self._model = base_model(model).eval()
        self._lm_head = lm_head if lm_head is not None else getattr(model, "lm_head", None)
        self.config = self._model.config
        self.hidden_size: int = text_hidden_size(self.config)

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
        if image_size is not None:
            if not isinstance(image_size, int) or image_size < 56 or image_size % 28:
                raise ConfigError(f"image_size must be a multiple of 28 and at least 56, got {image_size!r} (448 -> 256 tokens).")
            if min_pixels is not None or max_pixels is not None:
                raise ConfigError("pass either image_size (a fixed budget) or min_pixels/max_pixels (dynamic), not both.")
        self.image_size = image_size
        if "{instruction}" not in str(reason_template):
            raise ConfigError(f"reason_template must contain '{{instruction}}', got {reason_template!r}.")
        if not isinstance(reason_max_new_tokens, int) or reason_max_new_tokens < 1:
            raise ConfigError(f"reason_max_new_tokens must be a positive int, got {reason_max_new_tokens!r}.")
        self.reason_template = reason_template
        self.reason_max_new_tokens = reason_max_new_tokens

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
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"
        self._stop_ids = stop_token_ids(tokenizer, self.config)

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
        image_size: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        reason_template: str = DEFAULT_REASON_TEMPLATE,
        reason_max_new_tokens: int = 16,
        local_files_only: bool = False,
    ) -> "QwenVLEmbedder":
        """Loads the processor pieces and ``Qwen2_5_VLForConditionalGeneration``: its base model
        gives the states, its ``lm_head`` serves :meth:`reason` (one copy of the weights).

        ``name_or_path`` is a hub id (``Qwen/Qwen2.5-VL-7B-Instruct``, ``...-3B-Instruct``) or a
        local directory written by ``save_pretrained``; both the current checkpoint layout and the
        original hub one (``visual.*`` / ``model.layers.*``) load. ``dtype`` is the compute dtype
        (float32 on CPU; bfloat16 or float16 on GPU); the output is float32 either way.
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

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
        chat_template = read_chat_template(name, local_files_only) or getattr(tokenizer, "chat_template", None)
        processor = ProcessorPieces(tokenizer, image_processor, chat_template)

        with quiet_transformers_progress():
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                name, config=config, dtype=dtype, device_map={"": device}, **kwargs
            )
        return cls(
            model,
            processor,
            prompt_template=prompt_template,
            max_prompt_tokens=max_prompt_tokens,
            image_size=image_size,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            reason_template=reason_template,
            reason_max_new_tokens=reason_max_new_tokens,
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

    @property
    def can_generate(self) -> bool:
        """Whether :meth:`reason` works (the language-model head is loaded)."""
        return self._lm_head is not None

    # ------------------------------------------------------------------ inputs
    def render(self, target: str) -> str:
        """The chat text for one target, with a single ``<|image_pad|>`` placeholder."""
        return self._render_instruction(self.prompt_template.replace("{target}", target))

    def _render_instruction(self, instruction: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        text = self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=ADD_GENERATION_PROMPT,
        )
        if not isinstance(text, str) or text.count(IMAGE_TOKEN) != 1 or text.count(VISION_END) != 1:
            raise ArtifactMismatchError(
                f"the chat template rendered {text!r}, which should hold exactly one {IMAGE_TOKEN} and one "
                f"{VISION_END}; use a Qwen2.5-VL checkpoint's tokenizer/processor (or drop its custom chat template)."
            )
        return text

    def split(self, text: str) -> tuple[str, str]:
        """A rendered chat text -> (prefix ending with ``<|vision_end|>``, suffix)."""
        cut = text.index(VISION_END) + len(VISION_END)
        return text[:cut], text[cut:]

    def vlm_view(self, image: Image.Image) -> Image.Image:
        """The image the vision tower sees: with ``image_size``, letterboxed to that square
        (longer side = image_size, bicubic, centred on mid-grey (128, 128, 128)); else unchanged."""
        if self.image_size is None:
            return image
        size = self.image_size
        width, height = image.size
        scale = size / max(width, height)
        content = (max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale))))
        canvas = Image.new("RGB", (size, size), (128, 128, 128))
        canvas.paste(image.resize(content, Image.Resampling.BICUBIC), ((size - content[0]) // 2, (size - content[1]) // 2))
        return canvas

    def _check_image(self, i: int, image: Any) -> Image.Image:
        if not isinstance(image, Image.Image):
            raise InputTypeError(
                f"images[{i}] must be a PIL.Image.Image, got {type(image).__name__}; convert arrays "
                "with PIL.Image.fromarray(array) first."
            )
        width, height = image.size
        if width < 1 or height < 1:
            raise InvalidInputError(f"images[{i}] has zero size ({width}x{height}).")
        if self.image_size is None and max(width, height) / min(width, height) > _MAX_ASPECT_RATIO:
            raise InvalidInputError(
                f"images[{i}] is {width}x{height}: an aspect ratio above {_MAX_ASPECT_RATIO} is not "
                "supported by Qwen2.5-VL's dynamic resolution; crop or pad it, or set image_size."
            )
        return image if image.mode == "RGB" else image.convert("RGB")

    def _check_targets(self, targets: Any) -> list[str]:
        if isinstance(targets, str) or not isinstance(targets, Sequence):
            raise InputTypeError(
                f"targets must be a sequence of strings (e.g. ['the red circle']), got {type(targets).__name__}."
            )
        if len(targets) == 0:
            raise InvalidInputError("empty batch: pass at least one (image, target) pair.")
        clean = []
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
            clean.append(target)
        return clean

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
        clean_targets = self._check_targets(targets)
        return [self._check_image(i, image) for i, image in enumerate(images)], clean_targets

    def _vision(self, images: Sequence[Image.Image]) -> dict[str, torch.Tensor]:
        """pixel_values and image_grid_thw of (already validated) images, after ``vlm_view``."""
        size_kwargs = {}
        if self.image_size is not None:
            budget = self.image_size * self.image_size
            size_kwargs["size"] = {"shortest_edge": budget, "longest_edge": budget}
        elif self.min_pixels is not None or self.max_pixels is not None:
            size = dict(getattr(self.image_processor, "size", None) or {})
            if self.min_pixels is not None:
                size["shortest_edge"] = self.min_pixels
            if self.max_pixels is not None:
                size["longest_edge"] = self.max_pixels
            size_kwargs["size"] = {k: size[k] for k in ("shortest_edge", "longest_edge") if k in size}
        vision = self.image_processor(images=[self.vlm_view(im) for im in images], return_tensors="pt", **size_kwargs)
        return {"pixel_values": vision["pixel_values"], "image_grid_thw": vision["image_grid_thw"]}

    def _ids(self, text: str) -> list[int]:
        # No special tokens added: the chat template already holds every control token, and adding
        # none keeps prefix + suffix ids equal to the ids of the whole text.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _image_tokens(self, grid_thw: torch.Tensor) -> int:
        return int(grid_thw.prod()) // self._merge_size**2

    def prepare(self, images: Sequence[Image.Image], targets: Sequence[str]) -> dict[str, torch.Tensor]:
        """Validated, tokenized inputs (on CPU) of the whole sequences, right-padded: what
        :meth:`full_prefill` feeds the model."""
        images, targets = self._validate(images, targets)
        vision = self._vision(images)
        rows = []
        for target, thw in zip(targets, vision["image_grid_thw"]):
            text = self.render(target).replace(IMAGE_TOKEN, IMAGE_TOKEN * self._image_tokens(thw))
            rows.append(self._ids(text))
            self._check_length(len(rows[-1]), len(rows) - 1, target, self._image_tokens(thw))
        input_ids, attention_mask = right_padded(rows, self.tokenizer.pad_token_id)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **vision}
        if self._wants_mm_token_type_ids:  # transformers 5.x derives M-RoPE positions from these
            inputs["mm_token_type_ids"] = (input_ids == self._image_token_id).to(torch.int32)
        return inputs

    def _check_length(self, total: int, index: int, target: str, image_tokens: int) -> None:
        limit = self.max_prompt_tokens
        if limit is None or total <= limit:
            return
        target_tokens = len(self._ids(target))
        remaining = max(0, limit - (total - target_tokens))
        raise InvalidInputError(
            f"prompt {index} ({target[:60]!r}) makes a {total}-token sequence ({image_tokens} image tokens, "
            f"{target_tokens} for the target), above max_prompt_tokens={limit}: at most {remaining} target tokens "
            "remain with this image budget. Shorten the target, or lower image_size / raise max_prompt_tokens "
            "and rebuild the engines."
        )

    # ------------------------------------------------------------------ forward
    def _forward(self, **inputs: Any):
        cache = inputs.pop("cache", None)
        if cache is not None:
            inputs[self._cache_kwarg] = cache
        # no_grad, not inference_mode: inference tensors could not feed a DiT that is being trained.
        with torch.no_grad():
            return self._model(**inputs, return_dict=True)

    def encode_image(self, image: Image.Image) -> ImagePrefix:
        """Vision tower + prefill of the image prefix (system turn, user turn start, vision tokens),
        once per image: final-layer states, KV cache and the next M-RoPE position."""
        from transformers import DynamicCache

        if isinstance(image, (list, tuple)):
            raise InputTypeError("encode_image takes one PIL image; call it once per image.")
        image = self._check_image(0, image)
        vision = self._vision([image])
        n_image = self._image_tokens(vision["image_grid_thw"][0])
        prefix_text, _ = self.split(self.render("x"))
        ids = torch.tensor([self._ids(prefix_text.replace(IMAGE_TOKEN, IMAGE_TOKEN * n_image))])
        token_types = (ids == self._image_token_id).to(torch.int32)
        ones = torch.ones_like(ids)
        positions, _ = self._model.get_rope_index(
            ids, token_types, image_grid_thw=vision["image_grid_thw"], attention_mask=ones
        )
        device = self.device
        cache = DynamicCache(config=self.config)
        out = self._forward(
            input_ids=ids.to(device), attention_mask=ones.to(device), position_ids=positions.to(device),
            pixel_values=vision["pixel_values"].to(device, self.dtype),
            image_grid_thw=vision["image_grid_thw"].to(device), cache=cache, use_cache=True,
        )
        keys, values = cache_tensors(cache)
        return ImagePrefix(out.last_hidden_state, keys, values, int(positions.max()) + 1, n_image, image.size)

    def encode_prompts(self, prefix: ImagePrefix, targets: Sequence[str]) -> Embedding:
        """The states of ``prefix + suffix(target)`` for each target, running only the suffix
        tokens, batched, on the cached prefix: ``states`` (B, L, D) float32 right-padded with zeros,
        ``mask`` (B, L) bool; row b = the prefix's Lp states then its suffix's."""
        if not isinstance(prefix, ImagePrefix):
            raise InputTypeError(f"prefix must come from encode_image(image), got {type(prefix).__name__}.")
        targets = self._check_targets(targets)
        rows = []
        for i, target in enumerate(targets):
            _, suffix = self.split(self.render(target))
            rows.append(self._ids(suffix))
            self._check_length(prefix.length + len(rows[-1]), i, target, prefix.image_tokens)
        ids, suffix_mask = right_padded(rows, self.tokenizer.pad_token_id)
        batch, device = len(rows), prefix.states.device
        suffix_mask = suffix_mask.to(device)
        attention = torch.cat([torch.ones(batch, prefix.length, dtype=suffix_mask.dtype, device=device), suffix_mask], 1)
        out = self._forward(
            input_ids=ids.to(device), attention_mask=attention, position_ids=suffix_positions(prefix, batch, ids.shape[1]),
            cache=expanded_cache(prefix, batch, self.config), use_cache=True,
        )
        states = torch.cat([prefix.states.expand(batch, -1, -1), out.last_hidden_state], dim=1).float()
        mask = attention.bool()
        return Embedding(torch.where(mask.unsqueeze(-1), states, torch.zeros((), device=device)).contiguous(), mask)

    def __call__(self, images: Sequence[Image.Image] | None, targets: Sequence[str]) -> Embedding:
        """Embeds a batch of (image, target) pairs through the prefix cache: each distinct image
        object is encoded once. ``states`` [B, L, hidden_size] float32 right-padded with zeros,
        ``mask`` [B, L] bool, L being the longest prompt of the batch."""
        images, targets = self._validate(images, targets)
        groups: dict[int, list[int]] = {}
        for row, image in enumerate(images):
            groups.setdefault(id(image), []).append(row)
        parts: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for rows in groups.values():
            embedding = self.encode_prompts(self.encode_image(images[rows[0]]), [targets[r] for r in rows])
            for j, row in enumerate(rows):
                parts[row] = (embedding.states[j], embedding.mask[j])
        return stack_rows([parts[row] for row in range(len(targets))])

    def full_prefill(self, images: Sequence[Image.Image] | None, targets: Sequence[str]) -> Embedding:
        """The same states as ``__call__`` from one forward of the whole sequences (no cache);
        the reference the prefix cache is checked against."""
        inputs = self.prepare(images, targets)
        device = self.device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        out = self._forward(**inputs, use_cache=False)
        mask = inputs["attention_mask"].bool()
        states = torch.where(mask.unsqueeze(-1), out.last_hidden_state.float(), torch.zeros((), device=device))
        return Embedding(states.contiguous(), mask)

    # ------------------------------------------------------------------ reasoning
    def reason(self, prefix: ImagePrefix, instruction: str, max_new_tokens: int | None = None) -> str:
        """Stage 1 of reasoning segmentation: ask the VLM, on the cached image prefix, for a short
        phrase naming what ``instruction`` refers to. Greedy decoding, at most ``max_new_tokens``
        (default ``reason_max_new_tokens``) tokens, stopping at ``<|im_end|>``/end of text.

        The question is ``reason_template`` with ``{instruction}`` filled in, as the user turn's
        text after the image. Returns the answer without special tokens, surrounding quotes or a
        final full stop. Raises InvalidStateError without a language-model head and
        InvalidInputError when the answer names nothing (empty).
        """
        phrase, tokens = self.answer(prefix, instruction, max_new_tokens)
        if not phrase:
            raise InvalidInputError(
                f"asked to name the target of {instruction!r}, the VLM answered "
                f"{self.tokenizer.decode(tokens)!r}, which names nothing to segment; rephrase the "
                "instruction or pass the target phrase directly (reason=False)."
            )
        return phrase

    def answer(self, prefix: ImagePrefix, instruction: str, max_new_tokens: int | None = None,
               min_new_tokens: int = 0) -> tuple[str, list[int]]:
        """The cleaned answer of :meth:`reason` and its generated token ids, without judging it.
        ``min_new_tokens``: stop tokens are ignored until that many tokens exist (benchmarks use it
        to time the bounded worst case)."""
        if not self.can_generate:
            raise InvalidStateError(
                "this Qwen2.5-VL embedder has no language-model head, so it cannot answer (reason=True); "
                "load it with QwenVLEmbedder.from_pretrained (which keeps lm_head) or pass lm_head=."
            )
        if not isinstance(prefix, ImagePrefix):
            raise InputTypeError(f"prefix must come from encode_image(image), got {type(prefix).__name__}.")
        (instruction,) = self._check_targets([instruction])
        limit = self.reason_max_new_tokens if max_new_tokens is None else max_new_tokens
        if not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"max_new_tokens must be a positive int, got {limit!r}.")
        _, suffix = self.split(self._render_instruction(self.reason_template.replace("{instruction}", instruction)))
        tokens = self._greedy(prefix, self._ids(suffix), limit, min_new_tokens)
        return clean_phrase(self.tokenizer.decode(tokens, skip_special_tokens=True)), tokens

    def _greedy(self, prefix: ImagePrefix, suffix_ids: list[int], limit: int, minimum: int = 0) -> list[int]:
        """Greedy tokens after ``prefix + suffix`` (stop token excluded), at most ``limit``; stop
        tokens count as ordinary ones until ``minimum`` tokens exist."""
        device = prefix.states.device
        cache = expanded_cache(prefix, 1, self.config)
        step_ids, start, generated = torch.tensor([suffix_ids], device=device), 0, []
        while len(generated) < limit:
            length = step_ids.shape[1]
            out = self._forward(
                input_ids=step_ids, position_ids=suffix_positions(prefix, 1, length, start),
                attention_mask=torch.ones(1, prefix.length + start + length, dtype=torch.long, device=device),
                cache=cache, use_cache=True,
            )
            with torch.no_grad():
                token = int(self._lm_head(out.last_hidden_state[:, -1]).argmax(-1))
            if token in self._stop_ids and len(generated) >= minimum:
                break
            generated.append(token)
            start += length
            step_ids = torch.tensor([[token]], device=device)
        return generated


