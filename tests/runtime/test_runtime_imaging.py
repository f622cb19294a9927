"""The torch-free image handling (``genmask_sdk.runtime.imaging``) against torch's resampling, and
the torch-free device parsing."""

from __future__ import annotations

import numpy as np
import pytest

from genmask_sdk.errors import BackendUnavailableError, ConfigError
from genmask_sdk.runtime import imaging
from genmask_sdk.runtime.devices import Device, parse_device, resolve_device


@pytest.mark.parametrize("size", [(480, 640, 128), (37, 91, 128), (1080, 1920, 32), (5, 300, 64), (128, 128, 128),
                                  (20, 30, 128)])
def test_letterbox_matches_torch_antialiased_bilinear(size):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    height, width, resolution = size
    image = np.random.default_rng(0).random((height, width, 3), dtype=np.float32)
    pixels, box = imaging.to_engine_pixels(image, resolution)
    assert pixels.shape == (1, 3, resolution, resolution) and pixels.dtype == np.float32
    resized = F.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=(box.content_h, box.content_w),
                            mode="bilinear", antialias=True, align_corners=False)[0].numpy()
    content = pixels[0, :, box.top: box.top + box.content_h, box.left: box.left + box.content_w]
    np.testing.assert_allclose(content, resized * 2 - 1, atol=2e-5)
    outside = np.ones((resolution, resolution), bool)
    outside[box.top: box.top + box.content_h, box.left: box.left + box.content_w] = False
    assert (pixels[0][:, outside] == 0).all()  # mid-grey padding


@pytest.mark.parametrize("size", [(480, 640, 128), (37, 91, 128), (1080, 1920, 32)])
def test_logits_back_to_the_original_size_match_torch_bilinear(size):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    height, width, resolution = size
    box = imaging.Letterbox.fit(height, width, resolution)
    logits = np.random.default_rng(1).standard_normal((2, 1, resolution, resolution)).astype(np.float32)
    ours = imaging.to_original_logits(logits, box)
    content = torch.from_numpy(logits)[:, :, box.top: box.top + box.content_h, box.left: box.left + box.content_w]
    theirs = F.interpolate(content, size=(height, width), mode="bilinear", align_corners=False)[:, 0].numpy()
    assert ours.shape == (2, height, width)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_load_image_kinds_agree():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    array = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)  # CHW (3, 6, 5) is unambiguous
    expected = array.astype(np.float32) / 255
    np.testing.assert_array_equal(imaging.load_image(array), expected)
    np.testing.assert_array_equal(imaging.load_image(torch.from_numpy(array).permute(2, 0, 1)), expected)
    np.testing.assert_array_equal(imaging.load_image(imaging.to_pil(expected)), expected)


def test_devices_parse_and_refuse():
    from genmask_sdk.runtime.devices import cuda_device_count

    assert parse_device("cpu") == Device("cpu") and str(parse_device("cuda:1")) == "cuda:1"
    assert parse_device("cuda") == Device("cuda", 0)
    for bad in ("gpu", "cuda:x", "cpu:0", ""):
        with pytest.raises(ConfigError, match="'cpu', 'cuda' or 'cuda:N'"):
            parse_device(bad)
    if cuda_device_count()[0] == 0:
        device, note = resolve_device(None)
        assert device == Device("cpu") and "no CUDA GPU is visible" in note
        with pytest.raises(BackendUnavailableError, match="no CUDA GPU is visible"):
            resolve_device("cuda")


def test_prompt_cache_is_bounded_by_bytes():
    from genmask_sdk.runtime.prompt_cache import PromptCache

    cache = PromptCache(max_bytes=10_000)
    for i in range(100):
        cache.put(f"prompt {i}", np.zeros((4, 384), np.float32))  # 6144 bytes each
        assert cache.nbytes <= 10_000
    assert len(cache) == 1 and "prompt 99" in cache and cache.get("prompt 0") is None
    small = PromptCache(max_bytes=4000)
    small.put("a", np.zeros(500, np.float32))
    small.put("b", np.zeros(400, np.float32))
    small.get("a")  # a is now the most recent: b goes first
    small.put("c", np.zeros(300, np.float32))
    assert "a" in small and "c" in small and "b" not in small and small.nbytes == 3200
    small.put("huge", np.zeros(2000, np.float32))  # larger than the bound: not cached, nothing evicted
    assert "huge" not in small and len(small) == 2
    assert len(PromptCache(max_bytes=0)) == 0
