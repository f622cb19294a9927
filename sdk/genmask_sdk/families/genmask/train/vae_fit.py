"""Train a small ``AutoencoderKLWan`` for the demo: reconstruct scene images and mask images."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from tqdm.auto import tqdm

from genmask_sdk.families.genmask.modeling.vae import encode_mean, single_frame_convolutions


def reconstruct(vae: AutoencoderKLWan, pixels: torch.Tensor) -> torch.Tensor:
    """pixels (B, 3, H, W) in [-1, 1] -> reconstruction through the posterior mean (B, 3, H, W)."""
    latent = encode_mean(vae, pixels)
    return vae.decode(latent[:, :, None], return_dict=False)[0][:, :, 0]


def decode_unclamped(vae: AutoencoderKLWan, latent: torch.Tensor) -> torch.Tensor:
    """Decoder output (B, 3, H, W) before ``AutoencoderKLWan.decode``'s clamp to [-1, 1]
    (the clamp has no gradient outside the range, which stalls training)."""
    hidden = vae.post_quant_conv(latent[:, :, None])
    return vae.decoder(hidden, first_chunk=True)[:, :, 0]


def random_crops(pixels: torch.Tensor, size: int | None, generator: torch.Generator) -> torch.Tensor:
    """One random ``size``² crop position for the whole batch (no crop when ``size`` is None)."""
    if size is None or size >= pixels.shape[-1]:
        return pixels
    top, left = torch.randint(0, pixels.shape[-1] - size + 1, (2,), generator=generator).tolist()
    return pixels[:, :, top: top + size, left: left + size]


def train_vae(vae: AutoencoderKLWan, pixels: torch.Tensor, steps: int, batch: int = 16, lr: float = 1e-3,
              crop: int | None = 64, latent_penalty: float = 1e-4, seed: int = 0,
              progress: bool = True) -> list[float]:
    """Fit ``vae`` on ``pixels`` (N, 3, H, W) in [-1, 1]: MSE + L1 reconstruction of random crops.

    The posterior mean is used (the SDK always encodes with the mean), with a small L2 penalty on
    the latent so its scale stays bounded; per-channel μ/σ are measured afterwards. The VAE is
    fully convolutional, so ``crop``² crops (4x cheaper at 64 of 128) train it for full images.
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.05)
    vae.train()
    losses = []
    with single_frame_convolutions(vae):
        for _ in tqdm(range(steps), desc="vae", disable=not progress):
            chunk = pixels[torch.randint(0, pixels.shape[0], (batch,), generator=generator)]
            chunk = random_crops(chunk, crop, generator)
            latent = encode_mean(vae, chunk)
            error = decode_unclamped(vae, latent) - chunk
            loss = error.pow(2).mean() + error.abs().mean() + latent_penalty * latent.pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(float(loss))
    vae.eval()
    return losses


@torch.no_grad()
def reconstruction_error(vae: AutoencoderKLWan, pixels: torch.Tensor) -> float:
    """Mean squared error of full-image reconstructions, pixels in [-1, 1]."""
    with single_frame_convolutions(vae):
        return float((reconstruct(vae, pixels) - pixels).pow(2).mean())


@torch.no_grad()
def encode_all(vae: AutoencoderKLWan, pixels: torch.Tensor, batch: int = 64, desc: str = "encode",
               progress: bool = True) -> torch.Tensor:
    """Posterior means of (N, 3, H, W) pixels in [-1, 1] -> (N, 16, H/8, W/8), un-normalised."""
    out = []
    with single_frame_convolutions(vae):
        for start in tqdm(range(0, pixels.shape[0], batch), desc=desc, disable=not progress):
            out.append(encode_mean(vae, pixels[start: start + batch]))
    return torch.cat(out)


def set_latent_stats(vae: AutoencoderKLWan, latents: torch.Tensor) -> None:
    """Store per-channel μ/σ of ``latents`` (N, z, h, w) in the VAE config (latents_mean/std)."""
    mean = latents.mean(dim=(0, 2, 3))
    std = latents.std(dim=(0, 2, 3)).clamp_min(1e-3)
    vae.register_to_config(latents_mean=[round(float(v), 6) for v in mean],
                           latents_std=[round(float(v), 6) for v in std])
