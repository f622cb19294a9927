"""Segmenter: input kinds, letterbox round trip, batching, caching, threads, results, backends, errors.

Most tests use the session's tiny random model (``tiny_model``) and its fp32 ONNX engines
(``tiny_engines``, tests/tiny_engines.py). Random weights give arbitrary but deterministic
masks, so comparisons are on logits (and masks), never on mask quality.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from genmask_sdk import MaskResult, Segmenter
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    InputTypeError,
    InvalidInputError,
    InvalidStateError,
)
from genmask_sdk.data.examples import EXAMPLE_PROMPT, example_image_path, example_mask_path, render_example
from genmask_sdk.metrics import decode_rle

from conftest import requires_demo

PROMPTS = ["the red circle", "the orange star", "the shape right of the small shape", "x",
           "the largest shape", "a big blue square on the left side of the picture"]
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny graphs are latency-bound: one intra-op thread is fastest on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.asarray(Image.open(example_image_path()).convert("RGB"))  # (192, 256, 3) uint8


@pytest.fixture(scope="module")
def seg(tiny_model) -> Segmenter:
    return Segmenter.from_model(tiny_model)


@pytest.fixture(scope="module")
def seg_onnx(tiny_engines) -> Segmenter:
    return Segmenter.from_engines(tiny_engines[0], backend="onnxruntime", device="cpu")


def _same(a: MaskResult, b: MaskResult, atol: float = 1e-6) -> None:
    assert a.logits.shape == b.logits.shape
    np.testing.assert_allclose(a.logits, b.logits, atol=atol, rtol=0)
    assert np.array_equal(a.mask, a.logits > 0) and np.array_equal(b.mask, b.logits > 0)


# ------------------------------------------------------------------------------------ inputs
def test_every_input_kind_gives_the_same_mask(seg, image, tmp_path):
    reference = seg.predict(image, EXAMPLE_PROMPT)
    assert reference.mask.shape == (192, 256) and reference.mask.dtype == bool
    assert reference.logits.dtype == np.float32
    assert 0 < reference.area < reference.mask.size, "random tiny model should give a non-trivial mask"
    Image.fromarray(image).save(tmp_path / "a.png")
    rgba = np.dstack([image, np.linspace(0, 255, image.size // 3).reshape(image.shape[:2]).astype(np.uint8)])
    variants = {
        "path str": str(tmp_path / "a.png"),
        "pathlib": tmp_path / "a.png",
        "PIL": Image.fromarray(image),
        "numpy float": image.astype(np.float32) / 255.0,
        "torch CHW float": torch.from_numpy(image).permute(2, 0, 1).float() / 255.0,
        "torch HWC uint8": torch.from_numpy(image.copy()),
        "RGBA numpy": rgba,
        "RGBA PIL": Image.fromarray(rgba, "RGBA"),
    }
    for name, value in variants.items():
        result = seg.predict(value, EXAMPLE_PROMPT)
        _same(reference, result)
        assert np.array_equal(reference.mask, result.mask), name


def test_grayscale_inputs_agree(seg, image):
    gray = np.asarray(Image.fromarray(image).convert("L"))
    reference = seg.predict(np.dstack([gray] * 3), "the circle")
    for value in (gray, gray[..., None], Image.fromarray(gray, "L"), torch.from_numpy(gray.copy())[None]):
        _same(reference, seg.predict(value, "the circle"))


def test_exif_rotated_jpeg_gives_the_rotated_size(seg, image, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(image).save(path, exif=exif, quality=95)
    result = seg.predict(path, EXAMPLE_PROMPT)
    assert result.mask.shape == (256, 192)  # displayed upright: width and height swapped
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    _same(result, seg.predict(upright, EXAMPLE_PROMPT))


@pytest.mark.parametrize("height,width", [(192, 256), (256, 96), (33, 65), (5, 300), (300, 1), (1, 1)])
def test_any_size_round_trips_to_the_original_size(seg, height, width):
    array = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    result = seg.predict(array, "the red circle")
    assert result.mask.shape == result.logits.shape == (height, width)
    assert np.isfinite(result.logits).all()


# ------------------------------------------------------------------------------- batching
@pytest.mark.parametrize("which", ["seg", "seg_onnx"])
def test_multi_prompt_equals_single_prompts(which, image, request):
    segmenter = request.getfixturevalue(which)
    batched = segmenter.predict(image, PROMPTS)  # 6 prompts: two DiT chunks with max_batch 4 (onnx)
    assert isinstance(batched, list) and [r.prompt for r in batched] == PROMPTS
    for prompt, result in zip(PROMPTS, batched):
        _same(segmenter.predict(image, prompt), result, atol=1e-4)
    assert isinstance(segmenter.predict(image, ("a",)), list)


def test_set_image_then_many_prompts_equals_predict(seg, image):
    direct = [seg.predict(image, p) for p in PROMPTS[:3]]
    seg.set_image(image)
    try:
        assert seg.is_image_set
        for expected, prompt in zip(direct, PROMPTS[:3]):
            cached = seg.predict(prompt)
            _same(expected, cached)
            assert set(cached.timings.cached) == {"preprocess", "vae_encoder"}
            assert cached.timings["vae_encoder"] == 0.0 and "(cached)" in str(cached.timings)
        _same(direct[0], seg(PROMPTS[0]))  # __call__ alias
        assert [r.prompt for r in seg.predict(PROMPTS[:3])] == PROMPTS[:3]
    finally:
        seg.reset_image()
    assert not seg.is_image_set


def test_timings_and_score_definition(seg, image):
    result = seg.predict(image, "the red circle")
    assert set(result.timings) == {"preprocess", "embed_image", "reason", "embed", "vae_encoder", "dit", "mask_head",
                                   "postprocess", "total"}
    assert result.timings["embed_image"] == 0.0 and result.timings["reason"] == 0.0  # MiniLM: text only
    assert result.timings.cached == () and all(v >= 0 for v in result.timings.values())
    assert result.timings["total"] >= result.timings["dit"]
    expected = 1.0 / (1.0 + np.exp(-result.logits[result.mask].astype(np.float64)))
    assert result.score == pytest.approx(expected.mean(), abs=1e-5)
    assert 0.5 < result.score <= 1.0
    json.dumps(result.timings.to_dict())


def test_empty_mask_scores_zero(tiny_model, image):
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.mask_head.proj.bias.fill_(-1e4)  # every logit negative
    result = Segmenter.from_model(model).predict(image, "anything")
    assert result.area == 0 and result.score == 0.0


# ----------------------------------------------------------------------------- threads, memory
def test_threads_share_one_segmenter(seg_onnx, image):
    images = [image, np.ascontiguousarray(image[::-1])]
    expected = {(i, p): seg_onnx.predict(images[i], p).logits for i in range(2) for p in PROMPTS[:2]}
    errors, mismatches = [], []

    def worker(k: int) -> None:
        try:
            for call in range(50):
                key = ((k + call) % 2, PROMPTS[call % 2])
                if not np.array_equal(seg_onnx.predict(images[key[0]], key[1]).logits, expected[key]):
                    mismatches.append((k, call))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not mismatches


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux) to read the RSS")
def test_no_memory_growth_over_many_calls(seg_onnx, image):
    seg_onnx.set_image(image)
    try:
        for _ in range(50):
            seg_onnx.predict(PROMPTS[:2])
        before = _rss_mib()
        for _ in range(2000):
            seg_onnx.predict(PROMPTS[:2])
        assert _rss_mib() - before < 25.0
    finally:
        seg_onnx.reset_image()


# ----------------------------------------------------------------------------------- results
def test_results_own_writable_arrays_shared_with_nothing(seg, image):
    """Users edit masks as they do SAM's or numpy's: the arrays are writable and belong to one result
    (editing one changes neither another result nor what the cached image gives next time)."""
    seg.set_image(image)
    first, second = seg.predict([EXAMPLE_PROMPT, EXAMPLE_PROMPT])
    again = seg.predict(EXAMPLE_PROMPT)
    assert first.mask.flags.writeable and first.logits.flags.writeable
    kept = (second.mask.copy(), second.logits.copy(), again.mask.copy())
    first.mask[...] = ~first.mask
    first.logits[...] = 123.0
    assert np.array_equal(second.mask, kept[0]) and np.array_equal(second.logits, kept[1])
    assert np.array_equal(seg.predict(EXAMPLE_PROMPT).mask, kept[2]) and np.array_equal(again.mask, kept[2])
    seg.reset_image()


def test_rle_overlay_and_save(seg, image, tmp_path):
    from pycocotools import mask as coco_mask

    result = seg.predict(image, EXAMPLE_PROMPT)
    rle = result.to_rle()
    assert rle["size"] == [192, 256] and np.array_equal(decode_rle(rle), result.mask)
    assert int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()})) == result.area

    overlay = result.overlay(alpha=0.5, color="red")
    assert overlay.size == (256, 192) and overlay.mode == "RGB"
    pixels = np.asarray(overlay)
    assert np.array_equal(pixels[~result.mask], image[~result.mask])
    assert not np.array_equal(pixels[result.mask], image[result.mask])
    assert np.array_equal(np.asarray(result.overlay(image, alpha=0.0)), image)
    with pytest.raises(InvalidInputError, match="the mask is 256x192"):
        result.overlay(image[:10])

    result.save(tmp_path / "m.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m.png")) > 127, result.mask)
    result.save(tmp_path / "m.json")
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["prompt"] == EXAMPLE_PROMPT and saved["score"] == pytest.approx(result.score, abs=1e-6)
    assert np.array_equal(decode_rle(saved["rle"]), result.mask)
    with pytest.raises(InvalidInputError, match="use .png or .json"):
        result.save(tmp_path / "m.bmp")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_example_assets_are_current():
    image, mask = render_example()
    assert image.shape == (192, 256, 3) and mask.any()
    assert np.array_equal(np.asarray(Image.open(example_image_path())), image)
    assert np.array_equal(np.asarray(Image.open(example_mask_path())) > 127, mask)


# ---------------------------------------------------------------------------------- backends
def test_onnx_backend_matches_torch(seg, seg_onnx, image):
    for a, b in zip(seg.predict(image, PROMPTS[:3]), seg_onnx.predict(image, PROMPTS[:3])):
        _same(a, b, atol=1e-4)


def test_fp16_set_runs_its_mixed_precision_files(tiny_engines, seg_onnx, image):
    with Segmenter.from_engines(tiny_engines[0], backend="onnxruntime", precision="fp16", device="cpu") as half:
        files = half.describe()["files"]
        assert {s: f["precision"] for s, f in files.items()} == {"vae_encoder": "fp16", "dit": "fp16",
                                                                 "mask_head": "fp32"}
        for a, b in zip(seg_onnx.predict(image, PROMPTS[:2]), half.predict(image, PROMPTS[:2])):
            np.testing.assert_allclose(a.logits, b.logits, atol=2e-2, rtol=0)
            assert (a.mask == b.mask).mean() > 0.99


def test_torch_backend_from_engines_loads_the_recorded_checkpoint(tiny_engines, seg, image):
    with Segmenter.from_engines(tiny_engines[0], backend="torch", device="cpu") as torch_seg:
        _same(seg.predict(image, "the star"), torch_seg.predict(image, "the star"))
        assert torch_seg.describe()["files"]["checkpoint"]["file"] == str(tiny_engines[1])
    with Segmenter.from_pretrained(tiny_engines[1]) as from_dir:
        _same(seg.predict(image, "the star"), from_dir.predict(image, "the star"))


def test_auto_picks_onnxruntime_cpu_and_says_why(tiny_engines, caplog):
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine auto may pick a GPU backend")
    with caplog.at_level(logging.INFO, logger="genmask_sdk.families.genmask.segmenter"):
        auto = Segmenter.from_engines(tiny_engines[0])
    info = auto.describe()
    assert (info["backend"], info["provider"], info["precision"], info["device"]) == ("onnxruntime", "cpu", "fp32", "cpu")
    skipped = {f["option"]: f["reason"] for f in info["fallbacks"]}
    assert "CUDA" in skipped["tensorrt"] and "device" in skipped
    assert "chose onnxruntime[cpu]" in caplog.text
    assert set(info["files"]) == {"vae_encoder", "dit", "mask_head"}
    assert all(len(f["sha256"]) == 64 for f in info["files"].values())
    assert info["versions"]["onnxruntime"] and info["resolution"] == 32 and info["embedder"]["kind"] == "minilm"
    auto.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU; the refusals are for CPU-only hosts")
@pytest.mark.parametrize("kwargs,text", [
    ({"backend": "tensorrt"}, "runs on a CUDA GPU"),
    ({"backend": "tensorrt", "device": "cuda"}, "no CUDA GPU is visible"),
    ({"device": "cuda"}, "no CUDA GPU is visible"),
    ({"backend": "onnxruntime", "ort_provider": "cuda", "device": "cpu"}, "runs on a CUDA device"),
    ({"precision": "int8"}, "has only the sets ['fp16', 'fp32']"),
    ({"backend": "torch", "precision": "int8"}, "runs fp32 only"),
])
def test_unavailable_requests_are_refused(tiny_engines, kwargs, text):
    with pytest.raises(BackendUnavailableError, match=text.replace("[", r"\[").replace("]", r"\]")):
        Segmenter.from_engines(tiny_engines[0], **kwargs)


def test_from_pretrained_refuses_cuda_without_a_gpu(tiny_engines):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BackendUnavailableError, match="no CUDA GPU is visible"):
        Segmenter.from_pretrained(tiny_engines[1], device="cuda")


def test_runtime_failures_are_wrapped(seg_onnx, image, monkeypatch):
    def fail(feeds):
        raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions for input: z_img")

    monkeypatch.setattr(seg_onnx._pipeline.runners["dit"], "infer", fail)
    with pytest.raises(BackendUnavailableError, match="onnxruntime failed running the dit graph.*INVALID_ARGUMENT") as info:
        seg_onnx.predict(image, "x")
    assert info.value.__suppress_context__  # the native trace is not printed


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("bad,error,text", [
    (123, InputTypeError, "cannot read an image from a int"),
    ([[1, 2], [3, 4]], InputTypeError, "cannot read an image from a list"),
    (np.zeros((2, 3, 8, 8), np.uint8), InvalidInputError, "2 or 3 dimensions"),
    (np.zeros((8, 8, 5), np.uint8), InvalidInputError, "1, 3 or 4 channels"),
    (np.zeros((0, 10, 3), np.uint8), InvalidInputError, "the image is empty"),
    (np.full((8, 8, 3), np.nan, np.float32), InvalidInputError, "NaN"),
    (np.full((8, 8, 3), 255.0, np.float32), InvalidInputError, "divide uint8-range floats by 255"),
    (np.zeros((8, 8, 3), np.int32), InputTypeError, "use uint8"),
    ("/no/such/image.png", ArtifactNotFoundError, "does not exist"),
])
def test_bad_images(seg, bad, error, text):
    with pytest.raises(error, match=text):
        seg.predict(bad, "the red circle")
    assert issubclass(error, (ValueError, TypeError, FileNotFoundError))


@pytest.mark.parametrize("prompts,error,text", [
    ("", InvalidInputError, "prompt 0 is empty"),
    (["ok", "   "], InvalidInputError, "prompt 1 is empty"),
    ([], InvalidInputError, "no prompts given"),
    (["ok", 3], InputTypeError, "prompt 1 is a int"),
    (None, InputTypeError, "prompts must be a str or a list of str"),
    ("word " * 80, InvalidInputError, "tokens long"),
])
def test_bad_prompts(seg, image, prompts, error, text):
    with pytest.raises(error, match=text):
        seg.predict(image, prompts)


def test_state_errors(tiny_model, image):
    segmenter = Segmenter.from_model(tiny_model)
    with pytest.raises(InvalidStateError, match=r"call set_image\(image\)"):
        segmenter.predict("the red circle")
    with pytest.raises(InputTypeError, match=r"predict\(image, 'the red circle'\)"):
        segmenter.predict(image)  # an image but no prompt
    with pytest.raises(InvalidInputError):
        segmenter.set_image(np.zeros((0, 4, 3), np.uint8))
    assert not segmenter.is_image_set  # a failed set_image leaves nothing behind
    with segmenter:
        segmenter.set_image(image)
    assert not segmenter.is_image_set and segmenter.describe()["closed"]
    with pytest.raises(InvalidStateError, match="closed"):
        segmenter.predict(image, "x")
    segmenter.close()  # idempotent


def _copy_engines(tiny_engines, tmp_path):
    target = tmp_path / "engines"
    shutil.copytree(tiny_engines[0], target)
    return target


def test_engine_directory_errors(tiny_engines, tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        Segmenter.from_engines(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactNotFoundError, match="manifest.json does not exist"):
        Segmenter.from_engines(tmp_path / "empty")

    engines = _copy_engines(tiny_engines, tmp_path)
    (engines / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactMismatchError, match="not valid JSON"):
        Segmenter.from_engines(engines)

    engines = _copy_engines(tiny_engines, tmp_path / "b")
    (engines / "dit.fp32.onnx").write_bytes(b"garbage")
    with pytest.raises(ArtifactMismatchError, match="checksum"):
        Segmenter.from_engines(engines)
    with pytest.raises(ArtifactMismatchError, match="not a readable ONNX model"):
        Segmenter.from_engines(engines, verify=False)  # no raw onnxruntime error

    engines = _copy_engines(tiny_engines, tmp_path / "c")
    (engines / "mask_head.fp32.onnx").unlink()
    with pytest.raises(ArtifactNotFoundError, match="missing"):
        Segmenter.from_engines(engines)


def test_mismatched_engines_are_refused(tiny_engines, tmp_path):
    engines = _copy_engines(tiny_engines, tmp_path)
    manifest = json.loads((engines / "manifest.json").read_text())
    manifest["config"]["resolution"] = 64  # graphs were exported at 32
    (engines / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match=r"config differs .*\['resolution'\]"):
        Segmenter.from_engines(engines, backend="onnxruntime", device="cpu")
    manifest["build_inputs"]["config"]["resolution"] = manifest["resolution"] = 64  # consistently edited
    (engines / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match="different models"):  # the graphs themselves disagree
        Segmenter.from_engines(engines, backend="onnxruntime", device="cpu")


# ------------------------------------------------------------------------------- demo / GPU
@requires_demo
def test_demo_checkpoint_finds_the_example_object():
    from genmask_sdk.metrics import mask_iou

    truth = np.asarray(Image.open(example_mask_path())) > 127
    with Segmenter.from_pretrained("demo") as demo:
        result = demo.predict(example_image_path(), EXAMPLE_PROMPT)
    assert result.mask.shape == truth.shape
    assert mask_iou(result.mask, truth) > 0.5


@pytest.mark.gpu
@gpu
def test_cuda_tensor_input_matches_cpu(tiny_model, image):
    cpu = Segmenter.from_model(tiny_model).predict(image, EXAMPLE_PROMPT)
    with Segmenter.from_model(copy.deepcopy(tiny_model).to("cuda")) as cuda_seg:
        frame = torch.from_numpy(image).cuda().permute(2, 0, 1).float() / 255.0
        result = cuda_seg.predict(frame, EXAMPLE_PROMPT)
    _same(cpu, result, atol=1e-3)


@requires_demo
def test_torch_bf16_autocast_matches_fp32_and_says_so():
    from genmask_sdk.errors import ConfigError
    from genmask_sdk.data.examples import EXAMPLE_PROMPT, example_image_path
    from genmask_sdk.metrics import mask_iou

    with Segmenter.from_pretrained("demo") as fp32, Segmenter.from_pretrained("demo", dtype="bf16") as bf16:
        assert fp32.describe()["precision"] == "fp32"
        assert bf16.describe()["precision"] == "bf16-autocast" and bf16.describe()["backend"] == "torch"
        reference = fp32.predict(example_image_path(), EXAMPLE_PROMPT)
        ours = bf16.predict(example_image_path(), EXAMPLE_PROMPT)
    assert ours.logits.dtype == np.float32 and ours.found
    assert mask_iou(ours.mask, reference.mask) >= 0.95, mask_iou(ours.mask, reference.mask)
    with pytest.raises(ConfigError, match="dtype must be one of"):
        Segmenter.from_pretrained("demo", dtype="fp16")
