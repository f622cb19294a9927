"""The linear-probe mask head (paper §2.3 variant 3): Linear(16 -> 8·8) per latent cell + pixel shuffle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearProbeHead(nn.Module):
    """Decode a normalised mask latent into mask logits at engine resolution.

    forward(latent (B, z_dim, h, w) float32) -> logits (B, 1, h·s, w·s) float32, s = ``scale``
    (8 for Wan's VAE). Logit > 0 means "inside the mask". Each latent cell predicts its own s×s
    block of pixels; the sub-pixel (i, j) of a cell is output channel ``i·s + j`` (pixel shuffle).
    """

    def __init__(self, z_dim: int = 16, scale: int = 8) -> None:
        super().__init__()
        self.scale = scale
        self.proj = nn.Linear(z_dim, scale * scale)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        cells = self.proj(latent.permute(0, 2, 3, 1))  # (B, h, w, s·s)
        return F.pixel_shuffle(cells.permute(0, 3, 1, 2), self.scale)
