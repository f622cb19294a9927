"""Pre- and post-processing of gen2seg, as torch/PIL functions (no model needed).

SD variant (notes §1): uint8/255 → ×2−1 → resize so the long side is ``processing_size`` (floor
division, bilinear with antialias) → replicate-pad right/bottom to a multiple of 8 → … → min–max to
0..255 → unpad → uint8 (truncation) → PIL LANCZOS back to the original size.

MAE variant (notes §2): PIL resize to S×S (bicubic, aspect ratio ignored) → /255 → ImageNet
mean/std (inside ``Gen2SegMAE``) → … → per-image min–max, gamma 0.7, ×255 → uint8 → LANCZOS back.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: Spatial alignment of the SD input: the VAE downsamples by 8.
SD_ALIGN = 8


class SDInput(NamedTuple):
    """A preprocessed SD input.

    pixels: (B, 3, h + ph, w + pw) float32 in [-1, 1]; pad: (ph, pw) rows/columns of replicate
    padding added at the bottom/right; original_size: (H, W) of the input image.
    """

    pixels: torch.Tensor
    pad: tuple[int, int]
    original_size: tuple[int, int]


# ------------------------------------------------------------------------------------- inputs
def as_batch(image: Any) -> torch.Tensor:
    """An image -> (B, 3, H, W) float32 in [0, 1].

    A float tensor (B, 3, H, W) is taken to be in [0, 1] already; anything else (one image: PIL,
    path, HxWx3 array, CHW/HWC tensor) goes through the runtime's decoder and checks (``runtime.imaging.load_image``), B = 1; a torch
    input keeps its device."""
    if isinstance(image, torch.Tensor) and image.is_floating_point() and image.dim() == 4:
        return image.float()
    from genmask_sdk.runtime.imaging import load_image

    device = image.device if isinstance(image, torch.Tensor) else None
    chw = torch.from_numpy(load_image(image)).permute(2, 0, 1).contiguous()
    return (chw if device is None else chw.to(device))[None].float()


def long_side_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the longer edge = ``long_side`` and floor division: 375×500, 768 -> (576, 768)."""
    longest = max(height, width)
    size = (height * long_side // longest, width * long_side // longest)
    if min(size) == 0:
        raise ValueError(f"aspect ratio of a {width}×{height} image is too extreme to resize to {long_side}.")
    return size


def resize_long_side(pixels: torch.Tensor, long_side: int) -> torch.Tensor:
    """(B, C, H, W) float -> (B, C, h, w), long side = ``long_side``, bilinear with antialias."""
    size = long_side_size(pixels.shape[-2], pixels.shape[-1], long_side)
    return F.interpolate(pixels, size=size, mode="bilinear", antialias=True)


def pad_to_multiple(pixels: torch.Tensor, align: int = SD_ALIGN) -> tuple[torch.Tensor, tuple[int, int]]:
    """Replicate-pad the bottom and right of (B, C, H, W) to multiples of ``align``; -> (padded, (ph, pw))."""
    ph, pw = -pixels.shape[-2] % align, -pixels.shape[-1] % align
    if ph or pw:
        pixels = F.pad(pixels, (0, pw, 0, ph), mode="replicate")
    return pixels, (ph, pw)


def unpad(image: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """Drop ``pad = (ph, pw)`` rows/columns from the bottom/right of (..., H, W)."""
    ph, pw = pad
    return image[..., : image.shape[-2] - ph, : image.shape[-1] - pw]


def preprocess_sd(image: Any, processing_size: int, align: int = SD_ALIGN) -> SDInput:
    """Any image (see ``as_batch``) -> ``SDInput`` for the SD variant (pixels in [-1, 1])."""
    batch = as_batch(image)
    original = (int(batch.shape[-2]), int(batch.shape[-1]))
    pixels = resize_long_side(batch * 2.0 - 1.0, processing_size)
    pixels, pad = pad_to_multiple(pixels, align)
    return SDInput(pixels, pad, original)


def preprocess_mae(image: Any, size: int) -> torch.Tensor:
    """Any image -> (1, 3, size, size) float32 in [0, 1]: PIL resize to a square, bicubic (Pillow's
    ``resize`` default, what the official MAE inference uses; the aspect ratio is not kept)."""
    from PIL import Image

    array = _to_uint8_hwc((as_batch(image)[0] * 255.0).round())  # exact for uint8-born images
    resized = Image.fromarray(array).resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


# ---------------------------------------------------------------------------------- colour maps
def _dims(image: torch.Tensor, per_image: bool) -> tuple[int, ...]:
    return tuple(range(1, image.dim())) if per_image else tuple(range(image.dim()))


def min_max_sd(image: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """The published SD colour normalisation: (p + |min|) / (|max| + |min|) · 255.

    image: (B, 3, H, W) float, the VAE decode (roughly [-1, 1]) -> same shape, float in [0, 255]
    (a true min–max when min ≤ 0 ≤ max). Upstream takes min/max over the whole batch tensor
    (``per_image=False``); ours defaults to per image, so a batch gives the same maps as single
    images. Upstream has no ε; we only guard an all-zero image (0/0) with a 1e-12 floor.
    """
    dims = _dims(image, per_image)
    low = image.amin(dim=dims, keepdim=True).abs()
    high = image.amax(dim=dims, keepdim=True).abs()
    return (image + low) / (high + low).clamp_min(1e-12) * 255.0


def min_max_gamma(image: torch.Tensor, gamma: float, eps: float = 1e-5, per_image: bool = True) -> torch.Tensor:
    """The published MAE colour normalisation, per image: ((x + |min|) / (|max| + |min| + ε))^γ · 255.

    image: (B, 3, H, W) float -> same shape, float in [0, 255). The base is always ≥ 0, so the
    power is defined. γ = 1 gives a plain (ε-guarded) min–max.
    """
    dims = _dims(image, per_image)
    low = image.amin(dim=dims, keepdim=True).abs()
    high = image.amax(dim=dims, keepdim=True).abs()
    base = (image + low) / (high + low + eps)
    return (base.clamp_min(0.0) ** gamma if gamma != 1.0 else base) * 255.0


# ------------------------------------------------------------------------------------- outputs
def _to_uint8_hwc(chw: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 255] -> (H, W, 3) uint8, truncating like numpy's ``astype(uint8)``."""
    return chw.detach().float().clamp(0, 255).permute(1, 2, 0).cpu().numpy().astype(np.uint8)


def resize_to_original(colour: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
    """One colour map (3, h, w) float in [0, 255] -> (H, W, 3) uint8 at ``original_size`` = (H, W).

    As the official scripts do: cast to uint8 first (truncation), then PIL LANCZOS."""
    from PIL import Image

    height, width = original_size
    array = _to_uint8_hwc(colour)
    if array.shape[:2] == (height, width):
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.LANCZOS))


def reference_inputs(model, images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """The first graph's input for each image, by the PyTorch processing: SD ``(N, 3, S, S)`` in
    [-1, 1] (resize long side, replicate pad to S×S), MAE normalised ``(N, 3, S, S)``."""
    batch = []
    for rgb in images:
        if model.config.variant == "sd":
            pixels = resize_long_side(as_batch(rgb) * 2.0 - 1.0, size)
            pad = (0, size - pixels.shape[-1], 0, size - pixels.shape[-2])
            batch.append(torch.nn.functional.pad(pixels, pad, mode="replicate"))
        else:
            batch.append(model.normalise(preprocess_mae(rgb, size)))
    return torch.cat(batch)
