"""Qwen2.5-VL's image-prefix cache, fixed image budget and reasoning mode, on a tiny random
Qwen2.5-VL saved with ``save_pretrained`` (word-level BPE tokenizer trained here, so sequence
lengths are close to Qwen's own tokenizer's).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from genmask_sdk.bench.random_qwen import save_random_qwen  # noqa: E402
from genmask_sdk.families.genmask.config import (
    DEFAULT_REASON_TEMPLATE,
    EMBEDDERS,
    EmbedderSpec,
    qwen_max_prompt_tokens,
)  # noqa: E402
from genmask_sdk.families.genmask.modeling.embedders.qwen import QwenVLEmbedder  # noqa: E402
from genmask_sdk.families.genmask.modeling.embedders.qwen_prefix import ImagePrefix  # noqa: E402
from genmask_sdk.errors import ConfigError, InputTypeError, InvalidInputError, InvalidStateError  # noqa: E402

IMAGE_SIZE = 112  # (112 / 28)^2 = 16 image tokens


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen-words")
    save_random_qwen(path, "tiny")
    return path


@pytest.fixture(scope="module")
def embedder(qwen_dir):
    return QwenVLEmbedder.from_pretrained(qwen_dir, image_size=IMAGE_SIZE, max_prompt_tokens=120)


def _image(height: int, width: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


TARGETS = ["the red circle", "the smallest shape on the left of the big blue square"]


@pytest.mark.parametrize("size", [(480, 640), (1080, 1920), (900, 30)])
def test_fixed_budget_gives_the_same_token_count_for_any_size(embedder, size):
    image = _image(*size)
    view = embedder.vlm_view(image)
    assert view.size == (IMAGE_SIZE, IMAGE_SIZE)
    prefix = embedder.encode_image(image)
    assert isinstance(prefix, ImagePrefix)
    assert prefix.image_tokens == (IMAGE_SIZE // 28) ** 2 and prefix.size == image.size[:2]
    reference = embedder.encode_image(_image(200, 200, seed=1))
    assert prefix.length == reference.length  # sequence length follows from the config alone


def test_letterbox_keeps_aspect_on_mid_grey(embedder):
    view = np.asarray(embedder.vlm_view(Image.new("RGB", (200, 100), (255, 0, 0))))
    assert view.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert (view[IMAGE_SIZE // 2, IMAGE_SIZE // 2] == (255, 0, 0)).all()
    assert (view[2, IMAGE_SIZE // 2] == (128, 128, 128)).all()  # top band is padding
    assert (view[IMAGE_SIZE // 2 - 20: IMAGE_SIZE // 2 + 20, 1] == (255, 0, 0)).all()  # full width used


def test_cached_prefix_equals_full_prefill(embedder):
    images = [_image(480, 640), _image(1080, 1920, seed=2)]
    full = embedder.full_prefill(images, TARGETS)
    cached = embedder(images, TARGETS)
    assert torch.equal(full.mask, cached.mask)
    assert full.mask.sum(1).tolist()[0] != full.mask.sum(1).tolist()[1]  # really padded
    assert (full.states - cached.states).abs().max() <= 1e-4
    assert (cached.states[~cached.mask] == 0).all()


def test_batched_prompts_equal_one_by_one_on_one_prefix(embedder):
    prefix = embedder.encode_image(_image(480, 640))
    batched = embedder.encode_prompts(prefix, TARGETS + ["the cup"])
    for i, target in enumerate(TARGETS + ["the cup"]):
        alone = embedder.encode_prompts(prefix, [target])
        n = int(alone.mask.sum())
        assert int(batched.mask[i].sum()) == n
        assert (batched.states[i, :n] - alone.states[0]).abs().max() <= 1e-4
    # the prefix is not modified by running suffixes on it
    again = embedder.encode_prompts(prefix, [TARGETS[0]])
    torch.testing.assert_close(again.states, embedder.encode_prompts(prefix, [TARGETS[0]]).states, atol=0, rtol=0)


def test_prefix_states_are_the_first_rows(embedder):
    image = _image(480, 640)
    prefix = embedder.encode_image(image)
    emb = embedder.encode_prompts(prefix, ["the cup"])
    torch.testing.assert_close(emb.states[0, : prefix.length], prefix.states[0].float())
    with pytest.raises(InputTypeError, match="encode_image"):
        embedder.encode_prompts("not a prefix", ["the cup"])
    with pytest.raises(InputTypeError, match="one PIL image"):
        embedder.encode_image([image])


def test_instruction_too_long_says_how_many_tokens_remain(qwen_dir):
    small = QwenVLEmbedder.from_pretrained(qwen_dir, image_size=IMAGE_SIZE, max_prompt_tokens=60)
    prefix = small.encode_image(_image(64, 64))
    with pytest.raises(InvalidInputError, match=r"at most \d+ target tokens remain"):
        small.encode_prompts(prefix, ["the red circle " * 20])


def test_budget_options_are_checked(qwen_dir):
    with pytest.raises(ConfigError, match="multiple of 28"):
        QwenVLEmbedder.from_pretrained(qwen_dir, image_size=100)
    with pytest.raises(ConfigError, match="not both"):
        QwenVLEmbedder.from_pretrained(qwen_dir, image_size=112, max_pixels=28 * 28 * 4)
    with pytest.raises(ConfigError, match="multiple of 28"):
        EmbedderSpec("qwen2.5-vl", "x", 64, "{target}", 320, image_size=450)
    with pytest.raises(ConfigError, match="no room"):
        EmbedderSpec("qwen2.5-vl", "x", 64, "{target}", 64, image_size=448)
    with pytest.raises(ConfigError, match="Qwen2.5-VL embedder only"):
        EmbedderSpec("minilm", "x", 384, "{target}", 64, image_size=448)


def test_presets_follow_from_the_image_budget():
    for name in ("qwen2.5-vl-7b", "qwen2.5-vl-3b"):
        spec = EMBEDDERS[name]
        assert spec.image_size == 448 and spec.image_tokens == 256
        assert spec.max_prompt_tokens == qwen_max_prompt_tokens(448) == 320


# ---- reasoning -----------------------------------------------------------------------------------
class ScriptedHead(torch.nn.Module):
    """A stand-in language-model head that answers a fixed token sequence, then stops (or never stops)."""

    def __init__(self, vocab: int, tokens: list[int], stop: int | None) -> None:
        super().__init__()
        self.vocab, self.tokens, self.stop, self.calls = vocab, list(tokens), stop, 0
        self.inputs: list[torch.Tensor] = []

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.inputs.append(hidden)
        step, self.calls = self.calls, self.calls + 1
        token = self.tokens[step] if step < len(self.tokens) else (self.stop if self.stop is not None else self.tokens[-1])
        logits = torch.zeros(hidden.shape[0], self.vocab)
        logits[:, token] = 1.0
        return logits


def _scripted(embedder, text: str, stop: bool = True) -> QwenVLEmbedder:
    from types import SimpleNamespace

    tokens = embedder.tokenizer(text, add_special_tokens=False)["input_ids"]
    head = ScriptedHead(embedder.config.text_config.vocab_size, tokens,
                        embedder.tokenizer.convert_tokens_to_ids("<|im_end|>") if stop else None)
    pieces = SimpleNamespace(tokenizer=embedder.tokenizer, image_processor=embedder.image_processor,
                             chat_template=embedder.chat_template)
    return QwenVLEmbedder(embedder.model, pieces, image_size=IMAGE_SIZE, max_prompt_tokens=120, lm_head=head,
                          reason_max_new_tokens=8)


def test_reason_prompt_format_and_answer(embedder):
    scripted = _scripted(embedder, ' "the red circle".')
    prefix = scripted.encode_image(_image(480, 640))
    _, suffix = scripted.split(scripted._render_instruction(
        DEFAULT_REASON_TEMPLATE.replace("{instruction}", "what is round?")))
    assert suffix.startswith("what is round?\nAnswer with only a short noun phrase")
    assert suffix.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert scripted.reason(prefix, "what is round?") == "the red circle"  # quotes and full stop removed


def test_reason_generation_is_bounded(embedder):
    scripted = _scripted(embedder, "x", stop=False)  # answers "x" forever
    (token,) = scripted._lm_head.tokens
    prefix = scripted.encode_image(_image(64, 64))
    assert scripted.reason(prefix, "what is round?") == scripted.tokenizer.decode([token] * 8)
    assert scripted._lm_head.calls == 8  # reason_max_new_tokens = 8
    scripted._lm_head.calls = 0
    assert scripted.reason(prefix, "what is round?", max_new_tokens=3) == scripted.tokenizer.decode([token] * 3)
    assert scripted._lm_head.calls == 3


def test_reason_matches_a_manual_greedy_loop_on_the_real_head(embedder):
    """The cached greedy loop equals generating by full forwards of the growing sequence."""
    image, instruction = _image(480, 640), "which object is closest to the gripper?"
    prefix = embedder.encode_image(image)
    tokens = embedder._greedy(prefix, embedder._ids(embedder.split(embedder._render_instruction(
        DEFAULT_REASON_TEMPLATE.replace("{instruction}", instruction)))[1]), 5)
    text = embedder._render_instruction(DEFAULT_REASON_TEMPLATE.replace("{instruction}", instruction))
    ids = embedder._ids(text.replace("<|image_pad|>", "<|image_pad|>" * prefix.image_tokens))
    vision = embedder._vision([image])
    expected = []
    model = embedder.model
    for _ in range(5):
        input_ids = torch.tensor([ids + expected])
        positions, _ = model.get_rope_index(input_ids, (input_ids == embedder.config.image_token_id).int(),
                                            image_grid_thw=vision["image_grid_thw"])
        with torch.no_grad():
            out = model(input_ids=input_ids, position_ids=positions, pixel_values=vision["pixel_values"],
                        image_grid_thw=vision["image_grid_thw"], use_cache=False)
            token = int(embedder._lm_head(out.last_hidden_state[:, -1]).argmax(-1))
        if token in embedder._stop_ids:
            break
        expected.append(token)
    assert tokens == expected
    assert embedder.reason(prefix, instruction, max_new_tokens=5) == embedder.reason(prefix, instruction, max_new_tokens=5)


def test_empty_answer_and_missing_head_are_clear_errors(embedder, qwen_dir):
    scripted = _scripted(embedder, "")
    scripted._lm_head.tokens = [scripted._lm_head.stop]
    prefix = scripted.encode_image(_image(64, 64))
    with pytest.raises(InvalidInputError, match="names nothing"):
        scripted.reason(prefix, "what is round?")
    from types import SimpleNamespace

    pieces = SimpleNamespace(tokenizer=embedder.tokenizer, image_processor=embedder.image_processor)
    base_only = QwenVLEmbedder(embedder.model, pieces, image_size=IMAGE_SIZE)
    assert not base_only.can_generate and embedder.can_generate
    with pytest.raises(InvalidStateError, match="language-model head"):
        base_only.reason(prefix, "what is round?")


def test_minilm_cannot_reason(minilm):
    assert minilm.can_generate is False
    with pytest.raises(InvalidStateError, match="MiniLM"):
        minilm.reason(None, "what is round?")
