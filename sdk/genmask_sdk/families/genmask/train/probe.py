"""Fit the linear-probe mask head on VAE latents of ground-truth masks (no DiT involved)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from genmask_sdk.families.genmask.modeling.mask_head import LinearProbeHead


def mask_to_pixels(masks: torch.Tensor) -> torch.Tensor:
    """bool/0-1 masks (B, H, W) -> mask images (B, 3, H, W) float32 in [-1, 1] (+1 inside)."""
    return (masks.float() * 2.0 - 1.0)[:, None].expand(-1, 3, -1, -1).contiguous()


def fit_linear_probe(head: LinearProbeHead, latents: torch.Tensor, masks: torch.Tensor, steps: int = 400,
                     batch: int = 64, lr: float = 1e-2, seed: int = 0, progress: bool = True) -> list[float]:
    """Fit ``head`` by BCE so that ``head(latent) > 0`` reproduces the mask.

    Args:
        latents: (N, 16, h, w) float32 normalised latents of mask images.
        masks: (N, 8h, 8w) bool ground-truth masks.
    Returns:
        The loss of every step.
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(head.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    losses = []
    for _ in tqdm(range(steps), desc="mask head", disable=not progress):
        index = torch.randint(0, latents.shape[0], (batch,), generator=generator)
        logits = head(latents[index])[:, 0]
        loss = F.binary_cross_entropy_with_logits(logits, masks[index].float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss))
    return losses
