"""``PixelHead``: an optional full-resolution refinement of a small ViT-MAE's per-patch colours.

Not in the published gen2seg: ViT-MAE-H predicts each 14×14 patch from one token, which is fine
at 224² on real photos with a 632 M-parameter decoder. The embedded demo's ViT is 1 M parameters
at 128² with 8×8 patches, and a linear map from one 128-wide token to 192 pixel values paints
each patch nearly flat: masks come out in 8-pixel blocks and objects smaller than a few patches
merge with their neighbours. The head sees the ViT's colour image and the input image at full
resolution and corrects the colours along the image's edges (a residual, zero at start):

    raw = coarse + conv1x1(GELU(conv3x3_d(... GELU(conv3x3_1(cat(coarse, image))))))

with dilations 1, 2, 4, … (``depth`` layers, receptive field 1 + 2·(2^depth − 1) pixels: 15 for
depth 3, enough to move an edge across a whole 8-pixel patch). A checkpoint without a head (the
published MAE-H, ``pixel_head_channels = 0``) is unchanged.

Shapes: coarse (B, 3, S, S) float32 raw colours; image (B, 3, S, S) ImageNet-normalised pixels;
output (B, 3, S, S) float32 raw colours (before the min–max to 0–255).
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_FILE = "pixel_head.safetensors"


class PixelHead(nn.Module):
    """Edge-aware residual refinement of a colour image at full resolution (see the module docs)."""

    def __init__(self, channels: int, depth: int, colour_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 2 * colour_channels
        for index in range(depth):
            dilation = 2**index
            layers += [nn.Conv2d(width, channels, 3, padding=dilation, dilation=dilation), nn.GELU()]
            width = channels
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, colour_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, coarse: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return coarse + self.out(self.body(torch.cat([coarse, image], dim=1)))
