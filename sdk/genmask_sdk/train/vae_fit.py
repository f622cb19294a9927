"""Train a small ``AutoencoderKLWan`` for the demo: reconstruct scene images and mask images."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from tqdm.auto import tqdm

from ..model.vae import encode_mean, single_frame_convolutions


def reconstruct(vae: AutoencoderKLWan, pixels: torch.Tensor) -> torch.Tensor:
    """pixels (B, 3, H, W) in [-1, 1] -> reconstruction through the posterior mean (B, 3, H, W)."""
    latent = encode_mean(vae, pixels)
    return vae.decode(latent[:, :, None], return_dict=False)[0][:, :, 0]


def train_vae(vae: AutoencoderKLWan, pixels: torch.Tensor, steps: int, batch: int = 16, lr: float = 2e-3,
              latent_penalty: float = 1e-4, seed: int = 0, progress: bool = True) -> list[float]:
    """Fit ``vae`` on ``pixels`` (N, 3, H, W) in [-1, 1] with MSE reconstruction.

    The posterior mean is used (the SDK always encodes with the mean), with a small L2 penalty on
    the latent so its scale stays bounded; per-channel μ/σ are measured afterwards.
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    vae.train()
    losses = []
    with single_frame_convolutions():
        for _ in tqdm(range(steps), desc="vae", disable=not progress):
            chunk = pixels[torch.randint(0, pixels.shape[0], (batch,), generator=generator)]
            latent = encode_mean(vae, chunk)
            recon = vae.decode(latent[:, :, None], return_dict=False)[0][:, :, 0]
            loss = (recon - chunk).pow(2).mean() + latent_penalty * latent.pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(float(loss))
    vae.eval()
    return losses


@torch.no_grad()
def encode_all(vae: AutoencoderKLWan, pixels: torch.Tensor, batch: int = 64, desc: str = "encode",
               progress: bool = True) -> torch.Tensor:
    """Posterior means of (N, 3, H, W) pixels in [-1, 1] -> (N, 16, H/8, W/8), un-normalised."""
    out = []
    with single_frame_convolutions():
        for start in tqdm(range(0, pixels.shape[0], batch), desc=desc, disable=not progress):
            out.append(encode_mean(vae, pixels[start: start + batch]))
    return torch.cat(out)


def set_latent_stats(vae: AutoencoderKLWan, latents: torch.Tensor) -> None:
    """Store per-channel μ/σ of ``latents`` (N, z, h, w) in the VAE config (latents_mean/std)."""
    mean = latents.mean(dim=(0, 2, 3))
    std = latents.std(dim=(0, 2, 3)).clamp_min(1e-3)
    vae.register_to_config(latents_mean=[round(float(v), 6) for v in mean],
                           latents_std=[round(float(v), 6) for v in std])
