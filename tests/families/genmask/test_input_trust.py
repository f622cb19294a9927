"""Inputs a careless or hostile caller passes to ``predict``: each one gets the correct result or a
typed error that says what was wrong (never a silently wrong mask, never a library's traceback),
and loading from an engines directory never reaches the network."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from genmask_sdk import Segmenter
from genmask_sdk.families.genmask.modeling.embedders.minilm import MiniLMEmbedder
from genmask_sdk.errors import ArtifactNotFoundError, BackendUnavailableError, InputTypeError, InvalidInputError
from genmask_sdk.data.examples import example_image_path
from genmask_sdk.runtime.imaging import MAX_PIXELS, load_image

PROMPT = "the red circle"


@pytest.fixture(scope="module")
def seg(tiny_engines):
    with Segmenter.from_engines(tiny_engines[0], backend="onnxruntime", device="cpu") as segmenter:
        yield segmenter


@pytest.fixture(scope="module")
def gray():
    return Image.open(example_image_path()).convert("L")


def test_16_bit_grayscale_is_read_at_its_depth(gray, tmp_path):
    eight = load_image(gray)
    sixteen = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    np.testing.assert_allclose(load_image(sixteen), eight, atol=1e-6)
    path = tmp_path / "gray16.png"
    sixteen.save(path)
    with Image.open(path) as reopened:
        assert reopened.mode in ("I;16", "I")  # what Pillow makes of a 16-bit PNG
    np.testing.assert_allclose(load_image(path), eight, atol=1e-6)
    np.testing.assert_allclose(load_image(np.asarray(gray).astype(np.uint16) * 257), eight, atol=1e-6)


def test_ambiguous_torch_layouts_are_refused_not_guessed():
    with pytest.raises(InvalidInputError, match=r"shape \(4, 6, 3\) could be CxHxW or HxWxC"):
        load_image(torch.rand(4, 6, 3))
    assert load_image(torch.rand(3, 6, 8)).shape == (6, 8, 3)  # CHW
    assert load_image(torch.rand(6, 8, 3)).shape == (6, 8, 3)  # only HWC fits


def test_object_and_unsupported_dtypes_are_type_errors():
    with pytest.raises(InputTypeError, match="image dtype object is not supported"):
        load_image(np.full((8, 8, 3), 0.5, dtype=object))
    with pytest.raises(InputTypeError, match="image dtype <U1 is not supported"):
        load_image(np.full((8, 8, 3), "a"))


def test_tensor_with_requires_grad_runs(seg):
    image = torch.from_numpy(load_image(example_image_path())).permute(2, 0, 1).contiguous().requires_grad_(True)
    reference = seg.predict(example_image_path(), PROMPT)
    np.testing.assert_allclose(seg.predict(image, PROMPT).logits, reference.logits, atol=1e-5)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (what a decompression bomb looks like before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20000, 7000])
def test_huge_images_are_refused_before_decoding(tmp_path, side):
    path = tmp_path / f"bomb{side}.png"
    path.write_bytes(_png_header_only(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        with pytest.raises(InvalidInputError, match=f"at most {MAX_PIXELS:,}"):
            load_image(path)
    with pytest.raises(InvalidInputError, match="pixels; at most"):
        load_image(np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (side, side, 3)))


@pytest.mark.parametrize(("prompt", "match"), [
    ("\u200b", "has no visible characters"),
    ("  \u200b\u2060 ", "has no visible characters"),
    ("\x00", r"control characters \(U\+0000\)"),
    ("the cup\x07", r"control characters \(U\+0007\)"),
    ("x" * 200_000, "200000 characters long"),
])  # fmt: skip
def test_bad_prompts_are_refused(seg, prompt, match):
    with pytest.raises(InvalidInputError, match=match):
        seg.predict(example_image_path(), prompt)


def test_a_tab_or_accent_is_a_normal_prompt(seg):
    size = load_image(example_image_path()).shape[:2]
    assert seg.predict(example_image_path(), "the\tred circle").logits.shape == size
    assert seg.predict(example_image_path(), "le cercle élevé").logits.shape == size


def test_none_image_is_an_error_even_with_an_image_set(seg):
    seg.set_image(example_image_path())
    with pytest.raises(InputTypeError, match="the image is None"):
        seg.predict(None, PROMPT)
    seg.reset_image()


def test_float_range_message_shows_the_real_value():
    image = np.full((4, 5, 3), 0.5, np.float32)
    image[0, 0, 0] = 1.0000001
    with pytest.raises(InvalidInputError, match=r"values in \[0\.5, 1\.00000012\]"):
        load_image(image)


def test_a_directory_is_not_called_missing(tmp_path):
    with pytest.raises(InvalidInputError, match="is a directory, not an image file"):
        load_image(tmp_path)


def test_read_only_arrays_raise_no_warning(demo_model):
    image = np.asarray(Image.open(example_image_path()).convert("RGB"))
    image.setflags(write=False)
    segmenter = Segmenter.from_model(demo_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segmenter.predict(image, PROMPT)


# ---- loading from an engines directory is local-only ---------------------------------------------


def test_missing_local_embedder_path_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="no MiniLM checkpoint directory at"):
        MiniLMEmbedder.from_pretrained(str(tmp_path / "missing" / "minilm"))


def _edit(directory, change):
    data = json.loads((directory / "manifest.json").read_text())
    change(data)
    (directory / "manifest.json").write_text(json.dumps(data))


def test_engines_never_download_an_embedder(tiny_engines, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    directory = tmp_path / "engines"
    shutil.copytree(tiny_engines[0], directory)

    def hub_embedder(data):
        data.pop("text_embedder", None)
        for config in (data["config"], data["build_inputs"]["config"]):
            config["embedder"]["name_or_path"] = "someone/not-in-any-cache"

    _edit(directory, hub_embedder)
    with pytest.raises(ArtifactNotFoundError, match="in the local cache \\(local files only\\)"):
        Segmenter.from_engines(directory, backend="onnxruntime", device="cpu")


def test_torch_backend_never_downloads_the_checkpoint(tiny_engines, tmp_path):
    directory = tmp_path / "engines"
    shutil.copytree(tiny_engines[0], directory)
    _edit(directory, lambda d: d["checkpoint"].update(path=str(tmp_path / "gone"), source="someone/checkpoint"))
    with pytest.raises(BackendUnavailableError, match="loads local files only"):
        Segmenter.from_engines(directory, backend="torch", device="cpu")


def test_loading_prints_no_weight_bars(demo_model, capfd):
    capfd.readouterr()
    Segmenter.from_pretrained("demo")
    assert "Loading weights" not in capfd.readouterr().err
