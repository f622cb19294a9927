"""QwenVLEmbedder on a tiny random Qwen2.5-VL written to disk and loaded back (nothing downloaded).

The checkpoint is built here: a byte-level BPE tokenizer (256 byte tokens, no merges) with
Qwen2.5-VL's control tokens and chat template, Qwen2-VL's image processor, and a 2-layer text model
(D=64) with a 2-block vision tower. ``save_pretrained`` writes the same layout as the official hub
checkpoints (``visual.*``, ``model.layers.*``, ``lm_head``), so loading it goes through the same
key mapping as ``Qwen/Qwen2.5-VL-7B-Instruct`` would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from genmask_sdk.families.genmask.modeling.embedders.base import Embedder, Embedding  # noqa: E402
from genmask_sdk.families.genmask.modeling.embedders.qwen import (
    ADD_GENERATION_PROMPT,
    QWEN25VL_CHAT_TEMPLATE,
    QwenVLEmbedder,
)
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    ConfigError,
    InputTypeError,
    InvalidInputError,
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
HIDDEN = 64
MIN_PIXELS = 28 * 28 * 4  # >= 4 visual tokens
MAX_PIXELS = 28 * 28 * 16  # <= 16 visual tokens: keeps the sequences short


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN25VL_CHAT_TEMPLATE,
    )


def _image_processor():
    # Qwen2.5-VL's image processor; its torchvision backend only where torchvision is installed.
    try:
        import torchvision  # noqa: F401
        from transformers import Qwen2VLImageProcessor as image_processor_class
    except ImportError:
        from transformers import Qwen2VLImageProcessorPil as image_processor_class
    return image_processor_class(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)


def _model(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)))
    head_dim = HIDDEN // 4
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=HIDDEN,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width).
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=HIDDEN,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,  # 2x2 merged-token windows: block 0 windowed, block 1 full attention
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    assert sum(config.text_config.rope_parameters["mrope_section"]) == head_dim // 2
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(directory, the in-memory model it was saved from)."""
    path = tmp_path_factory.mktemp("tiny-qwen2.5-vl")
    tokenizer = _tokenizer()
    model = _model(tokenizer)
    model.save_pretrained(path)
    # Qwen2_5_VLProcessor cannot be built without torchvision in transformers 5.x (its video
    # processor needs it), so the two parts are saved as the processor would save them.
    tokenizer.save_pretrained(path)
    _image_processor().save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def embedder(checkpoint):
    return QwenVLEmbedder.from_pretrained(checkpoint[0])


def _images():
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 256, (56, 84, 3), dtype=np.uint8))  # 2x3 merged tokens -> min 4
    b = Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))  # 4x4 = 16 tokens
    return [a, b]


def test_loads_and_returns_well_formed_embedding(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.hidden_size == HIDDEN and embedder.uses_image is True
    assert not hasattr(embedder.model, "lm_head")  # base model only

    out = embedder(_images(), ["red circle", "the big dog on the left of the picture"])
    assert isinstance(out, Embedding)
    states, mask = out.states, out.mask
    assert states.dtype == torch.float32 and mask.dtype == torch.bool
    assert states.ndim == 3 and states.shape[0] == 2 and states.shape[2] == HIDDEN
    assert mask.shape == states.shape[:2]
    assert torch.isfinite(states).all()
    lengths = mask.sum(1)
    assert lengths.min() >= 1 and lengths.max() == states.shape[1]
    assert lengths[0] != lengths[1]  # the batch really is padded
    for row, n in enumerate(lengths.tolist()):
        assert mask[row, :n].all() and not mask[row, n:].any()  # right-padded
        assert (states[row, n:] == 0).all()
        assert (states[row, :n].abs().sum(-1) > 0).all()


def test_weights_come_from_the_checkpoint(embedder, checkpoint):
    """The loaded base model gives the saved model's last hidden state (no random re-init)."""
    _, original = checkpoint
    images, targets = _images()[:1], ["red circle"]
    inputs = embedder.prepare(images, targets)
    with torch.no_grad():
        expected = original.model(**inputs, use_cache=False).last_hidden_state
        full = original(**inputs, use_cache=False, output_hidden_states=True)
    got = embedder(images, targets).states
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, full.hidden_states[-1], atol=1e-5, rtol=1e-5)


def test_prompt_format(embedder):
    text = embedder.render("red circle")
    assert "<|vision_start|><|image_pad|><|vision_end|>Please segment the red circle in the image.<|im_end|>" in text
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>assistant\n") is ADD_GENERATION_PROMPT
    inputs = embedder.prepare(_images(), ["a", "b"])
    n_image_tokens = (inputs["input_ids"] == embedder.config.image_token_id).sum(1)
    assert n_image_tokens.tolist() == (inputs["image_grid_thw"].prod(-1) // 4).tolist() == [6, 16]


def test_uses_3d_mrope_positions(embedder):
    """Image tokens get Qwen2.5-VL's (t, h, w) positions, not plain 1-D ones.

    The batch-vs-single test cannot see this: RoPE is relative, so a constant shift of plain
    positions changes nothing; only the 3-D layout of the image tokens does.
    """
    images, targets = _images()[1:], ["red circle"]
    inputs = embedder.prepare(images, targets)
    image_id = embedder.config.image_token_id
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == image_id).to(torch.int32))
    model = embedder.model
    positions, _ = model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    text_only = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        expected = model(**text_only, position_ids=positions, use_cache=False).last_hidden_state
        plain = model(**text_only, use_cache=False).last_hidden_state  # no token types: 1-D positions
    got = embedder(images, targets).states
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-4


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batch_equals_one_by_one(embedder, padding_side):
    images = _images()
    targets = ["red circle", "the big dog on the left of the picture"]
    embedder.tokenizer.padding_side = padding_side
    try:
        batched = embedder(images, targets)
        for i in range(2):
            alone = embedder(images[i : i + 1], targets[i : i + 1])
            n = int(alone.mask.sum())
            assert alone.mask.all() and int(batched.mask[i].sum()) == n
            torch.testing.assert_close(batched.states[i, :n], alone.states[0], atol=1e-4, rtol=1e-4)
    finally:
        embedder.tokenizer.padding_side = "right"


def test_image_changes_the_states(embedder):
    a, _ = _images()
    other = Image.fromarray(255 - np.asarray(a))
    s1 = embedder([a], ["red circle"]).states
    s2 = embedder([other], ["red circle"]).states
    assert s1.shape == s2.shape
    assert (s1 - s2).abs().max() > 1e-3
    # Non-RGB inputs are converted, and give the RGB result.
    torch.testing.assert_close(embedder([a.convert("RGBA")], ["red circle"]).states, s1)


def test_max_pixels_and_max_prompt_tokens(checkpoint):
    path, _ = checkpoint
    small = QwenVLEmbedder.from_pretrained(path, max_pixels=28 * 28 * 4, max_prompt_tokens=150)
    inputs = small.prepare(_images()[1:], ["x"])
    assert int((inputs["input_ids"] == small.config.image_token_id).sum()) == 4
    with pytest.raises(InvalidInputError, match="max_prompt_tokens"):
        small(_images()[1:], ["a very long phrase " * 10])


def test_input_errors(embedder):
    images = _images()
    with pytest.raises(InvalidInputError, match="2 images but 1 targets"):
        embedder(images, ["red circle"])
    with pytest.raises(InvalidInputError, match="empty"):
        embedder(images[:1], ["   "])
    with pytest.raises(InvalidInputError, match="empty batch"):
        embedder([], [])
    with pytest.raises(InputTypeError, match="PIL"):
        embedder([np.zeros((28, 28, 3), dtype=np.uint8)], ["red circle"])
    with pytest.raises(InputTypeError, match="images=None"):
        embedder(None, ["red circle"])
    with pytest.raises(InputTypeError, match="sequence of strings"):
        embedder(images[:1], "red circle")
    with pytest.raises(InputTypeError, match="sequence of PIL"):
        embedder(images[0], ["red circle"])
    with pytest.raises(InvalidInputError, match="control token"):
        embedder(images[:1], ["red <|image_pad|> circle"])
    with pytest.raises(InvalidInputError, match="aspect ratio"):
        embedder([Image.new("RGB", (600, 2))], ["red circle"])


def test_construction_errors(checkpoint, tmp_path):
    path, model = checkpoint
    with pytest.raises(ArtifactNotFoundError):
        QwenVLEmbedder.from_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ArtifactMismatchError, match="qwen2_5_vl"):
        QwenVLEmbedder.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="target"):
        QwenVLEmbedder.from_pretrained(path, prompt_template="Please segment it.")
    with pytest.raises(InputTypeError, match="tokenizer"):
        QwenVLEmbedder(model, object())


def test_prebuilt_model_and_processor(checkpoint, embedder):
    """A (model, processor) pair works too; a ForConditionalGeneration model is reduced to its base."""
    from types import SimpleNamespace

    _, model = checkpoint
    pieces = SimpleNamespace(tokenizer=embedder.tokenizer, image_processor=embedder.image_processor)
    direct = QwenVLEmbedder(model, pieces)
    assert direct.model is model.model
    torch.testing.assert_close(direct(_images(), ["a", "b"]).states, embedder(_images(), ["a", "b"]).states)


def test_matches_qwen2_5_vl_processor(embedder):
    """Same token ids as the upstream processor (only where torchvision lets it be built)."""
    pytest.importorskip("torchvision")
    from transformers import Qwen2_5_VLProcessor

    processor = Qwen2_5_VLProcessor(
        image_processor=embedder.image_processor, tokenizer=embedder.tokenizer, chat_template=embedder.chat_template
    )
    targets = ["red circle", "the big dog on the left"]
    texts = [embedder.render(t) for t in targets]
    expected = processor(text=texts, images=_images(), padding=True, return_tensors="pt")
    got = embedder.prepare(_images(), targets)
    assert torch.equal(got["input_ids"], expected["input_ids"])
    assert torch.equal(got["image_grid_thw"], expected["image_grid_thw"])
