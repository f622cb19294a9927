"""Image <-> normalised latent with diffusers' ``AutoencoderKLWan`` at T = 1 (one frame)."""

from __future__ import annotations

import types

import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
from torch import nn

_ORIGINAL_CAUSAL_FORWARD = WanCausalConv3d.forward


def latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel μ and σ from the VAE config, shaped (1, z, 1, 1) on ``like``'s device/dtype."""
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=like.dtype)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=like.dtype)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def encode_mean(vae: AutoencoderKLWan, pixels: torch.Tensor) -> torch.Tensor:
    """Un-normalised posterior mean: pixels (B, 3, H, W) in [-1, 1] -> (B, z, H/8, W/8)."""
    moments = vae._encode(pixels[:, :, None])  # (B, 2z, 1, h, w); T = 1 makes the encoder 2-D
    return moments[:, : vae.config.z_dim, 0]


class VaeEncoder(nn.Module):
    """z_img = (E(I) − μ) / σ: pixels (B, 3, H, W) float32 in [-1, 1] -> (B, 16, H/8, W/8) float32."""

    def __init__(self, vae: AutoencoderKLWan) -> None:
        super().__init__()
        self.vae = vae
        mean, std = latent_stats(vae, torch.zeros(()))
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("inv_std", 1.0 / std, persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (encode_mean(self.vae, pixels) - self.mean) * self.inv_std


class VaeMaskDecoder(nn.Module):
    """Optional mask path (paper's best variant): decode x0_hat and average RGB.

    forward(latent (B, 16, h, w) normalised) -> logits (B, 1, 8h, 8w) in [-1, 1]; > 0 is "mask"
    (a mask image is +1 inside and −1 outside).
    """

    def __init__(self, vae: AutoencoderKLWan) -> None:
        super().__init__()
        self.vae = vae
        mean, std = latent_stats(vae, torch.zeros(()))
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        raw = latent * self.std + self.mean
        image = self.vae.decode(raw[:, :, None], return_dict=False)[0][:, :, 0]
        return image.mean(dim=1, keepdim=True)


def _single_frame_conv(conv, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """``WanCausalConv3d.forward`` for one frame and no cache, computed as a 2-D convolution.

    With T = 1 the causal padding puts ``kernel_t − 1`` zero frames before the input, so only the
    kernel's last temporal slice touches data: the result equals conv2d with ``weight[:, :, -1]``.
    Anything else (several frames, a cache, other paddings) takes diffusers' own path.
    """
    kernel_t = conv.kernel_size[0]
    if x.shape[2] != 1 or cache_x is not None or conv._padding[4] != kernel_t - 1 or conv.stride[0] != 1:
        return _ORIGINAL_CAUSAL_FORWARD(conv, x, cache_x)
    out = torch.nn.functional.conv2d(
        x[:, :, 0], conv.weight[:, :, -1], conv.bias, stride=conv.stride[1:],
        padding=(conv._padding[2], conv._padding[0]),
    )
    return out[:, :, None]


class single_frame_convolutions:
    """Context manager: run the ``WanCausalConv3d`` layers of ``module`` on single-frame inputs as 2-D convs.

    Exactly equivalent for T = 1 (tested), about 3x less work; used to train and encode the demo
    VAE on CPU and for the exported VAE graph (no 3-D convolutions for runtimes to handle). Only
    the layers inside ``module`` change, through an instance attribute that is removed on exit:
    diffusers' class, other models and other threads' models are untouched. Not re-entrant for the
    same module from two threads at once.
    """

    def __init__(self, module: nn.Module) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, WanCausalConv3d)]

    def __enter__(self):
        for layer in self.layers:
            layer.forward = types.MethodType(_single_frame_conv, layer)
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.__dict__.pop("forward", None)
