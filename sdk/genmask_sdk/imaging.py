"""Image input handling and the letterbox geometry between original images and the engine square.

Conventions:
* An image tensor is (3, H, W) float32 RGB in [0, 1], on whatever device it came from.
* The engine sees (B, 3, R, R) float32 in [-1, 1]: the image is resized so its longer side is R
  (aspect ratio kept, bilinear with antialiasing) and centred on a mid-grey (0.0) square.
* Logits come back (B, 1, R, R); the padding is cropped off and the rest is resized bilinearly to
  the original (H, W). Pixel (0, 0) is the top-left corner, x grows right, y grows down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ArtifactNotFoundError, InputTypeError, InvalidInputError

ACCEPTED = "a file path, a PIL image, a numpy HxWx3 array (uint8, or float in [0, 1]) or a torch tensor (CHW or HWC)"


def load_image(image: Any) -> torch.Tensor:
    """Any supported image -> (3, H, W) float32 in [0, 1] (device kept for torch input).

    Files honour EXIF orientation. Grayscale is replicated to RGB; an alpha channel is dropped
    (RGBA is read as its RGB values). numpy/torch inputs may be HxW (grayscale), HxWx{1,3,4}
    or {1,3,4}xHxW (torch only); uint8 is scaled by 1/255, floats must already be in [0, 1].
    """
    if isinstance(image, (str, Path)):
        return _from_pil(_open_file(Path(image)))
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(torch.from_numpy(np.ascontiguousarray(image)), channels_last=True)
    if isinstance(image, torch.Tensor):
        return _from_array(image, channels_last=_looks_channels_last(image))
    raise InputTypeError(f"cannot read an image from a {type(image).__name__}; pass {ACCEPTED}.")


def _open_file(path: Path) -> Image.Image:
    if not path.is_file():
        raise ArtifactNotFoundError(f"image file {path} does not exist; check the path.")
    try:
        with Image.open(path) as handle:
            return ImageOps.exif_transpose(handle).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInputError(f"{path} is not a readable image ({exc}); pass a PNG/JPEG file.") from exc


def _from_pil(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return _from_array(torch.from_numpy(array.copy()), channels_last=True)


def _looks_channels_last(tensor: torch.Tensor) -> bool:
    return tensor.ndim == 3 and tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4)


def _from_array(array: torch.Tensor, channels_last: bool) -> torch.Tensor:
    if array.ndim == 2:
        array = array[None] if not channels_last else array[..., None]
    if array.ndim != 3:
        raise InvalidInputError(
            f"an image must have 2 or 3 dimensions (HxW, HxWxC or CxHxW), got shape {tuple(array.shape)}; "
            "pass one image at a time."
        )
    chw = array.permute(2, 0, 1) if channels_last else array
    channels, height, width = chw.shape
    if height == 0 or width == 0:
        raise InvalidInputError(f"the image is empty (shape {tuple(array.shape)}); pass an image with pixels.")
    if channels not in (1, 3, 4):
        raise InvalidInputError(
            f"an image needs 1, 3 or 4 channels, got {channels} (shape {tuple(array.shape)}); "
            "pass RGB, RGBA or grayscale."
        )
    chw = chw[:3] if channels >= 3 else chw.expand(3, -1, -1)
    return _to_unit_float(chw)


def _to_unit_float(chw: torch.Tensor) -> torch.Tensor:
    if chw.dtype == torch.uint8:
        return chw.float() / 255.0
    if chw.dtype == torch.bool or not chw.dtype.is_floating_point:
        raise InputTypeError(f"image dtype {chw.dtype} is not supported; use uint8 (0-255) or float (0-1).")
    chw = chw.float()
    if not torch.isfinite(chw).all():
        raise InvalidInputError("the image contains NaN or infinite values; clean the input frame.")
    low, high = float(chw.min()), float(chw.max())
    if low < 0.0 or high > 1.0:
        raise InvalidInputError(
            f"float images must be in [0, 1], got values in [{low:.3g}, {high:.3g}]; "
            "divide uint8-range floats by 255."
        )
    return chw.contiguous()


@dataclass(frozen=True)
class Letterbox:
    """Where an (H, W) image sits inside the R×R engine square: ``top``/``left`` offsets and the
    resized content size ``content_h`` × ``content_w``, all in engine pixels."""

    height: int
    width: int
    resolution: int
    top: int
    left: int
    content_h: int
    content_w: int

    @classmethod
    def fit(cls, height: int, width: int, resolution: int) -> "Letterbox":
        scale = resolution / max(height, width)
        content_h = max(1, min(resolution, round(height * scale)))
        content_w = max(1, min(resolution, round(width * scale)))
        return cls(height, width, resolution, (resolution - content_h) // 2, (resolution - content_w) // 2,
                   content_h, content_w)


def to_engine_pixels(image: torch.Tensor, resolution: int) -> tuple[torch.Tensor, Letterbox]:
    """(3, H, W) in [0, 1] -> ((1, 3, R, R) float32 in [-1, 1] letterboxed, geometry)."""
    _, height, width = image.shape
    box = Letterbox.fit(height, width, resolution)
    resized = F.interpolate(image[None], size=(box.content_h, box.content_w), mode="bilinear",
                            antialias=True, align_corners=False)
    canvas = torch.zeros(1, 3, resolution, resolution, device=image.device, dtype=torch.float32)
    canvas[:, :, box.top: box.top + box.content_h, box.left: box.left + box.content_w] = resized * 2.0 - 1.0
    return canvas, box


def to_original_logits(logits: torch.Tensor, box: Letterbox) -> torch.Tensor:
    """Engine logits (B, 1, R, R) -> (B, H, W) float32 at the original image size."""
    content = logits[:, :, box.top: box.top + box.content_h, box.left: box.left + box.content_w]
    restored = F.interpolate(content.float(), size=(box.height, box.width), mode="bilinear", align_corners=False)
    return restored[:, 0]
