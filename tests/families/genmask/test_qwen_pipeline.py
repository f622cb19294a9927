"""GenMask conditioned on Qwen2.5-VL end to end: a tiny random Qwen2.5-VL and a tiny "Wan2.1",
both saved with ``save_pretrained``, joined by ``GenMaskModel.from_backbones`` at default settings
(the 448² image budget: 256 image tokens), exported by ``build_engines`` and served by
``Segmenter.from_engines`` on ONNX Runtime in fp32 / fp16 / int8, against the PyTorch reference;
plus reasoning mode through the Segmenter and the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from genmask_sdk import Segmenter  # noqa: E402
from genmask_sdk.bench.random_qwen import save_random_qwen  # noqa: E402
from genmask_sdk.families.genmask.config import GenMaskConfig  # noqa: E402
from genmask_sdk.errors import InvalidStateError  # noqa: E402
from genmask_sdk.metrics import mask_iou  # noqa: E402
from genmask_sdk.families.genmask.modeling import GenMaskModel  # noqa: E402

SIZES = [(480, 640), (1080, 1920), (37, 91)]
PROMPTS = ["the red circle", "the smallest shape on the left"]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    root = tmp_path_factory.mktemp("backbones")
    save_random_qwen(root / "qwen", "tiny")
    tiny = GenMaskConfig.preset("tiny", embedder="minilm")
    torch.manual_seed(0)
    WanTransformer3DModel(**dict(tiny.transformer, text_dim=40)).save_pretrained(root / "wan" / "transformer")
    AutoencoderKLWan(**tiny.vae).save_pretrained(root / "wan" / "vae")
    return root


@pytest.fixture(scope="module")
def model(backbones):
    torch.manual_seed(1)
    return GenMaskModel.from_backbones(backbones / "wan", vlm=str(backbones / "qwen"), resolution=32).eval()


@pytest.fixture(scope="module")
def engines(model, tmp_path_factory):
    from genmask_sdk.families.genmask.export.build import build_engines

    out = tmp_path_factory.mktemp("qwen_engines") / "engines"
    build_engines(model=model, out=out, precisions=["fp32", "fp16", "int8"], tensorrt="off", calib_size=4,
                  check_samples=2, int8_keep_blocks=0, progress=False, log=lambda _: None)
    return out


def _image(height: int, width: int) -> np.ndarray:
    """A scene-like image: a red disc and a blue square on a textured background."""
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 255 // max(width, 1)), (yy * 255 // max(height, 1)), np.full_like(xx, 90)], -1)
    disc = (yy - height * 0.5) ** 2 + (xx - width * 0.3) ** 2 < (min(height, width) * 0.25) ** 2
    image[disc] = (230, 30, 30)
    image[int(height * 0.2): int(height * 0.5), int(width * 0.6): int(width * 0.8)] = (30, 30, 230)
    return image.astype(np.uint8)


def test_defaults_follow_the_image_budget(model):
    spec = model.config.embedder
    assert spec.kind == "qwen2.5-vl" and spec.image_size == 448 and spec.max_prompt_tokens == 320
    assert model.config.transformer["text_dim"] == 64


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_torch_segmenter_returns_masks_at_the_original_size(model, size):
    seg = Segmenter.from_model(model)
    results = seg.predict(_image(*size), PROMPTS)
    assert [r.mask.shape for r in results] == [size] * 2
    assert results[0].timings["embed_image"] > 0 and results[0].phrase == PROMPTS[0]
    reference = model.segment(_image(*size), PROMPTS)
    np.testing.assert_allclose(np.stack([r.logits for r in results]), reference.numpy(), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def torch_results(model):
    seg = Segmenter.from_model(model)
    return {size: seg.predict(_image(*size), PROMPTS) for size in SIZES}


@pytest.mark.parametrize("precision, atol, min_iou", [("fp32", 1e-3, 0.99), ("fp16", 5e-2, 0.9), ("int8", 0.3, 0.8)])
def test_onnxruntime_engines_match_pytorch(engines, torch_results, precision, atol, min_iou):
    seg = Segmenter.from_engines(engines, backend="onnxruntime", precision=precision)
    assert seg.describe()["embedder"]["image_tokens"] == 256
    for size in SIZES:
        got = seg.predict(_image(*size), PROMPTS)
        seg.set_image(_image(*size))
        cached = seg.predict(PROMPTS)
        assert cached[0].timings.cached == ("preprocess", "embed_image", "vae_encoder")
        for ours, again, ref in zip(got, cached, torch_results[size]):
            assert ours.mask.shape == size
            np.testing.assert_array_equal(ours.logits, again.logits)  # set_image changes nothing
            scale = max(1.0, float(np.abs(ref.logits).max()))
            assert float(np.abs(ours.logits - ref.logits).max()) <= atol * scale, (precision, size)
            assert mask_iou(ours.mask, ref.mask) >= min_iou, (precision, size)


def test_manifest_records_the_qwen_stage(engines):
    data = json.loads((engines / "manifest.json").read_text())
    assert data["config"]["embedder"]["image_size"] == 448
    assert data["max_prompt_tokens"] == 320
    dit = next(a for a in data["artifacts"] if a["stage"] == "dit" and a["precision"] == "fp32")
    assert dit["profiles"]["context"][2][1] == 320  # the DiT context profile follows the budget


class _Answer(torch.nn.Module):
    """A language-model head that answers a fixed phrase, then <|im_end|>."""

    def __init__(self, tokenizer, vocab: int, phrase: str) -> None:
        super().__init__()
        self.tokens = tokenizer(phrase, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        self.vocab, self.step = vocab, 0

    def forward(self, hidden):
        token = self.tokens[min(self.step, len(self.tokens) - 1)]
        self.step += 1
        logits = torch.zeros(hidden.shape[0], self.vocab)
        logits[:, token] = 1.0
        return logits


def test_reasoning_segments_the_phrase_the_vlm_names(model):
    embedder = model.embedder
    head = _Answer(embedder.tokenizer, embedder.config.text_config.vocab_size, "the red circle")
    original = embedder._lm_head
    embedder._lm_head = head
    try:
        seg = Segmenter.from_model(model)
        seg.set_image(_image(480, 640))
        (reasoned,) = seg.predict(["what is round and red?"], reason=True)
        direct = seg.predict("the red circle")
    finally:
        embedder._lm_head = original
    assert reasoned.prompt == "what is round and red?" and reasoned.phrase == "the red circle"
    assert reasoned.timings["reason"] > 0 and reasoned.to_dict()["phrase"] == "the red circle"
    np.testing.assert_array_equal(reasoned.logits, direct.logits)  # the refined phrase reached the DiT


def test_reasoning_on_the_real_head_is_deterministic(model):
    seg = Segmenter.from_model(model)
    first = seg.predict(_image(480, 640), "which object would roll?", reason=True)
    second = seg.predict(_image(480, 640), "which object would roll?", reason=True)
    assert first.phrase == second.phrase
    np.testing.assert_array_equal(first.logits, second.logits)


def test_reason_with_minilm_is_a_clear_error(tiny_model):
    seg = Segmenter.from_model(tiny_model)
    with pytest.raises(InvalidStateError, match="MiniLM"):
        seg.predict(_image(64, 64), "what is round?", reason=True)


def test_vae_decoder_variant_is_exported_not_substituted(model, tmp_path):
    from genmask_sdk.families.genmask.export.build import build_engines

    variant = GenMaskModel(model.config.replace(mask_decoder="vae_decoder"), model.transformer, model.vae,
                           model.mask_head).eval()
    variant.set_embedder(model.embedder)
    out = tmp_path / "vae_decoder"
    result = build_engines(model=variant, out=out, precisions=["fp32"], tensorrt="off", check_samples=2,
                           progress=False, log=lambda _: None)
    head = next(a for a in result.manifest.data["artifacts"] if a["stage"] == "mask_head")
    assert "VAE decoder" in head["details"]["method"]
    assert head["fidelity"]["max_abs_error"] < 1e-3
    seg = Segmenter.from_engines(out, backend="onnxruntime")
    reference = variant.segment(_image(480, 640), PROMPTS)
    got = seg.predict(_image(480, 640), PROMPTS)
    np.testing.assert_allclose(np.stack([r.logits for r in got]), reference.numpy(), atol=1e-3)
    probe = model.segment(_image(480, 640), PROMPTS)
    assert float((probe - reference).abs().max()) > 1e-2  # the probe would have been a different mask


def test_cli_reason_prints_the_phrase(engines, model, tmp_path, capsys):
    from genmask_sdk.cli.main import main

    path = tmp_path / "frame.png"
    Image.fromarray(_image(480, 640)).save(path)
    expected = Segmenter.from_model(model).predict(path, "which object would roll?", reason=True)
    assert main(["segment", str(path), "which object would roll?", "--engines", str(engines), "--backend",
                 "onnxruntime", "--reason", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["prompt"] == "which object would roll?" and result["phrase"] == expected.phrase


def test_cli_reason_with_minilm_engines_is_a_clear_error(tiny_engines, capsys):
    from genmask_sdk.cli.main import main

    assert main(["segment", str(tiny_engines[1].parent / "nothing.png"), "x", "--engines", str(tiny_engines[0])]) == 2
    capsys.readouterr()
    image = tiny_engines[1].parent / "frame.png"
    Image.fromarray(_image(40, 60)).save(image)
    assert main(["segment", str(image), "what is round?", "--engines", str(tiny_engines[0]), "--backend",
                 "onnxruntime", "--reason"]) == 2
    err = capsys.readouterr().err
    assert "reason=True" in err and "MiniLM" in err and "Traceback" not in err
