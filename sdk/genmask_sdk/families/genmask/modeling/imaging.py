"""The torch side of image handling (the PyTorch reference, training, calibration): the same
letterbox geometry as ``runtime.imaging`` (whose loader and ``Letterbox`` are used here), on tensors.

Conventions:
* An image tensor is (3, H, W) float32 RGB in [0, 1], on whatever device it came from.
* The engine sees (B, 3, R, R) float32 in [-1, 1]: the image is resized so its longer side is R
  (aspect ratio kept, bilinear with antialiasing) and centred on a mid-grey (0.0) square.
* Logits come back (B, 1, R, R); the padding is cropped off and the rest is resized bilinearly to
  the original (H, W). Pixel (0, 0) is the top-left corner, x grows right, y grows down.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from genmask_sdk.runtime.imaging import ACCEPTED, Letterbox  # noqa: F401  (re-exported)
from genmask_sdk.runtime.imaging import load_image as load_image_array

def load_image(image: Any) -> torch.Tensor:
    """Any supported image (``runtime.imaging.ACCEPTED``) -> (3, H, W) float32 in [0, 1]; a torch
    input keeps its device. Decoding and validation are the runtime's (``runtime.imaging.load_image``)."""
    device = image.device if isinstance(image, torch.Tensor) else None
    chw = torch.from_numpy(load_image_array(image)).permute(2, 0, 1).contiguous()
    return chw if device is None else chw.to(device)


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
