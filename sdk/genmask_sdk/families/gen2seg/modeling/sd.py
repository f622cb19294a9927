"""``Gen2SegSD``: the PyTorch reference of gen2seg's Stable Diffusion 2 variant (DESIGN.md §2b).

One deterministic step, split into the three graphs the exporter writes (notes §7):

    encode   pixels (B, 3, H, W) in [-1, 1]  -> z  = mean(E(pixels)) × scaling   (B, 4, H/8, W/8)
    unet_x0  z                               -> x0 = a·z + b·UNet(z, t, c∅)        (B, 4, H/8, W/8)
    decode   x0                              -> D(x0 / scaling)                   (B, 3, H, W), ≈ [-1, 1]

then ``color_map`` (min–max to 0..255). t = ``config.timestep`` (999) and c∅, the CLIP embedding of
the empty prompt, are constants: c∅ is computed once when the model is built, so no CLIP is needed
afterwards. For v-prediction at t = 999 on SD 2's schedule, a = √ᾱ = 0.068265, b = −√(1−ᾱ) = −0.997667.
The UNet sees the image latent only (4 channels, no Marigold-style concat), as the official code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

import logging

from genmask_sdk.errors import ArtifactMismatchError
from genmask_sdk.families.gen2seg.modeling.sources import EMBEDDING_FILE, EMBEDDING_KEY, Source, _config, _expect, _load, _write_directory, resolve_source
from genmask_sdk.families.gen2seg.modeling.schedule import one_step_inference_timestep
from genmask_sdk.errors import ConfigError
from genmask_sdk.families.gen2seg.config import Gen2SegConfig
from genmask_sdk.families.gen2seg.modeling.processing import min_max_sd, preprocess_sd, resize_to_original, unpad
from genmask_sdk.families.gen2seg.modeling.schedule import scheduler_subset, x0_clip, x0_coefficients

logger = logging.getLogger("genmask_sdk.gen2seg")


@torch.no_grad()
def empty_prompt_embedding(text_encoder: nn.Module, tokenizer: Any, padding: str = "do_not_pad") -> torch.Tensor:
    """c∅ = CLIP last hidden state of the prompt "": (1, L, D) float32 on the CPU.

    ``padding="do_not_pad"`` gives L = 2 (BOS, EOS; the official inference), ``"max_length"``
    L = 77 (the official training). As upstream, no attention mask is passed to the encoder.
    """
    max_length = min(int(tokenizer.model_max_length), int(text_encoder.config.max_position_embeddings))
    ids = tokenizer("", padding=padding, max_length=max_length, truncation=True, return_tensors="pt").input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device))[0].detach().float().cpu()


class SDEncoderStage(nn.Module):
    """Graph (a): pixels (B, 3, H, W) float32 in [-1, 1], H and W multiples of 8 -> z (B, 4, H/8, W/8)
    = (posterior mean − shift) × scaling_factor (SD 2: no shift, × 0.18215)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.channels = int(vae.config.latent_channels)
        self.scale = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        moments = self.vae.encoder(pixels)
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        mean = moments[:, : self.channels]  # latent_dist.mode(): the first half of the moments
        return (mean - self.shift) * self.scale


class SDUNetStage(nn.Module):
    """Graph (b): z (B, 4, h, w) float32 -> x0 (B, 4, h, w) = a·z + b·UNet(z, t, c∅).

    ``embedding`` c∅ (1, L, D) and ``timestep`` t are constants; (a, b) come from the schedule.
    ``clip``: if set, x0 is clamped to ±clip, as diffusers' ``step`` does when the scheduler config
    has ``clip_sample`` (SD 2's has not)."""

    def __init__(self, unet: nn.Module, embedding: torch.Tensor, timestep: int, coefficients: tuple[float, float],
                 clip: float | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("embedding", embedding, persistent=False)
        self.timestep = int(timestep)
        self.a, self.b = coefficients
        self.clip = clip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        states = self.embedding.to(z.dtype).expand(z.shape[0], -1, -1)
        out = self.unet(z, self.timestep, encoder_hidden_states=states, return_dict=False)[0]
        x0 = self.a * z + self.b * out
        return x0 if self.clip is None else x0.clamp(-self.clip, self.clip)


class SDDecoderStage(nn.Module):
    """Graph (c): x0 (B, 4, h, w) float32 -> image (B, 3, 8h, 8w), roughly [-1, 1] (not clipped)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.scale = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(x0 / self.scale + self.shift, return_dict=False)[0]


class Gen2SegSD(nn.Module):
    """gen2seg-sd: diffusers ``AutoencoderKL`` + ``UNet2DConditionModel`` + the constant c∅.

    Build with ``from_pretrained`` (published pipeline folder, hub id, or our checkpoint),
    ``from_components`` (modules in memory, CLIP used once) or the constructor (c∅ given).
    ``scheduler_config`` holds the diffusers scheduler values used (``schedule.SCHEDULER_KEYS``).
    """

    def __init__(self, config: Gen2SegConfig, vae: nn.Module, unet: nn.Module,
                 scheduler_config: Mapping[str, Any], empty_prompt_embedding: torch.Tensor) -> None:
        super().__init__()
        _check_parts(config, vae, unet, empty_prompt_embedding)
        self.config = config
        self.vae = vae
        self.unet = unet
        self.scheduler_config = scheduler_subset(scheduler_config)
        self.coefficients = x0_coefficients(self.scheduler_config, config.timestep)
        self.clip = x0_clip(self.scheduler_config)
        self.register_buffer("empty_prompt_embedding", empty_prompt_embedding.float(), persistent=False)

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_components(cls, vae: nn.Module, unet: nn.Module, text_encoder: nn.Module, tokenizer: Any,
                        scheduler_config: Mapping[str, Any], config: Gen2SegConfig | None = None) -> "Gen2SegSD":
        """Compute c∅ with ``text_encoder`` + ``tokenizer`` (then not kept) and assemble the model."""
        config = config or Gen2SegConfig.sd()
        embedding = empty_prompt_embedding(text_encoder, tokenizer, config.empty_prompt_padding)
        return cls(config, vae, unet, scheduler_config, embedding).eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, local_files_only: bool = False,
                        device: str | torch.device = "cpu", **overrides: Any) -> "Gen2SegSD":
        """A published gen2seg-sd pipeline folder or hub id (``reachomk/gen2seg-sd``), or a directory
        written by ``save_pretrained``. ``overrides`` replace ``Gen2SegConfig`` fields."""
        source = resolve_source(name_or_path, local_files_only)
        _expect(source, "sd")
        return _load_sd(source, device, overrides)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``gen2seg_config.json``, ``vae/``, ``unet/``, ``scheduler/`` and c∅ (atomically)."""
        return save_sd(self, path)

    # ---------------------------------------------------------------------------------- stages
    def encoder_stage(self) -> SDEncoderStage:
        return SDEncoderStage(self.vae).eval()

    def unet_stage(self) -> SDUNetStage:
        return SDUNetStage(self.unet, self.empty_prompt_embedding, self.config.timestep, self.coefficients,
                           self.clip).eval()

    def decoder_stage(self) -> SDDecoderStage:
        return SDDecoderStage(self.vae).eval()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, H, W) float32 in [-1, 1] -> z (B, 4, H/8, W/8) (mean × scaling_factor)."""
        return self.encoder_stage()(pixels)

    def unet_x0(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, 4, h, w) -> x0 (B, 4, h, w) = √ᾱ_t·z − √(1−ᾱ_t)·v for v-prediction (clamped only if
        the scheduler config asks for ``clip_sample``)."""
        return self.unet_stage()(z)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 (B, 4, h, w) -> vae.decode(x0 / scaling_factor): (B, 3, 8h, 8w) float32, ≈ [-1, 1]."""
        return self.decoder_stage()(x0)

    def color_map(self, image: torch.Tensor, per_image: bool = True) -> torch.Tensor:
        """Decoded (B, 3, H, W) -> float in [0, 255]: the published min–max (per image by default;
        ``per_image=False`` is upstream's per-batch version), then ``config.gamma`` (1.0 = none)."""
        colour = min_max_sd(image, per_image=per_image)
        if self.config.gamma != 1.0:  # not in the published SD code (gamma is MAE-only there)
            colour = (colour / 255.0).clamp(0.0, 1.0) ** self.config.gamma * 255.0
        return colour

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, H, W) in [-1, 1] -> colour map (B, 3, H, W) float in [0, 255] (padded size)."""
        return self.color_map(self.decode(self.unet_x0(self.encode(pixels))))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @torch.no_grad()
    def colorize(self, image: Any) -> np.ndarray:
        """Reference end to end, as the official ``inference_sd.py``: any image -> (H, W, 3) uint8
        instance colouring at the original size (preprocess, 3 stages, min–max, unpad, uint8, LANCZOS)."""
        prepared = preprocess_sd(image, self.config.processing_size)
        colour = unpad(self(prepared.pixels.to(self.device)), prepared.pad)
        return resize_to_original(colour[0], prepared.original_size)


def _check_parts(config: Gen2SegConfig, vae: nn.Module, unet: nn.Module, embedding: torch.Tensor) -> None:
    if config.variant != "sd":
        raise ConfigError(f"Gen2SegSD needs a config with variant 'sd', got {config.variant!r}.")
    if embedding.dim() != 3 or embedding.shape[0] != 1:
        raise ConfigError(f"the empty-prompt embedding must be (1, L, D), got {tuple(embedding.shape)}.")
    width = unet.config.cross_attention_dim
    if embedding.shape[-1] != width:
        raise ConfigError(f"the empty-prompt embedding has width {embedding.shape[-1]}, the UNet's "
                          f"cross_attention_dim is {width}; the text encoder does not belong to this UNet.")
    if vae.config.latent_channels != unet.config.in_channels:
        raise ConfigError(f"VAE latent_channels ({vae.config.latent_channels}) differs from UNet in_channels "
                          f"({unet.config.in_channels}); gen2seg's UNet takes the image latent only.")


# ------------------------------------------------------------- reading and writing checkpoints
def _load_sd(source: Source, device: str | torch.device, overrides: dict[str, Any]) -> Gen2SegSD:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    config = _config(source, Gen2SegConfig.sd(name=source.root), overrides)
    kwargs = dict(source.kwargs(), torch_dtype=torch.float32)
    vae = _load("VAE (vae/)", source, lambda: AutoencoderKL.from_pretrained(source.root, subfolder="vae", **kwargs))
    unet = _load("UNet (unet/)", source,
                 lambda: UNet2DConditionModel.from_pretrained(source.root, subfolder="unet", **kwargs))
    scheduler = _load("scheduler config (scheduler/)", source,
                      lambda: DDPMScheduler.load_config(source.root, subfolder="scheduler", **source.kwargs()))
    scheduler = scheduler_subset(scheduler)
    _warn_timestep(source, scheduler, config.timestep)
    embedding = _saved_embedding(source, config.empty_prompt_padding)
    if embedding is None:
        embedding = _computed_embedding(source, config.empty_prompt_padding)
    return Gen2SegSD(config, vae.eval(), unet.eval(), scheduler, embedding).to(device).eval()


def _warn_timestep(source: Source, scheduler: dict[str, Any], timestep: int) -> None:
    upstream = one_step_inference_timestep(scheduler)
    if upstream != timestep:
        logger.warning("%s: the shipped scheduler (timestep_spacing=%r) gives t=%d with one inference step; "
                       "gen2seg uses t=%d (config.timestep, what training used).",
                       source.root, scheduler.get("timestep_spacing"), upstream, timestep)


def _saved_embedding(source: Source, padding: str) -> torch.Tensor | None:
    """c∅ from ``empty_prompt_embedding.safetensors`` if present and made with ``padding``."""
    from safetensors import safe_open

    path = source.file(EMBEDDING_FILE)
    if path is None:
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            saved_padding = (handle.metadata() or {}).get("padding")
            tensor = handle.get_tensor(EMBEDDING_KEY)
    except Exception as exc:
        raise ArtifactMismatchError(f"{path} is not a valid c∅ file ({exc}); re-save the checkpoint.") from exc
    if saved_padding != padding:
        logger.info("%s holds c∅ for padding %r, %r was asked: computing it with CLIP.", path, saved_padding, padding)
        return None
    return tensor.float()


def _computed_embedding(source: Source, padding: str) -> torch.Tensor:
    """c∅ from the checkpoint's ``text_encoder/`` + ``tokenizer/`` (loaded, used once, dropped)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    what = f"text encoder (text_encoder/, needed once to compute the {padding!r} empty-prompt embedding)"
    encoder = _load(what, source, lambda: CLIPTextModel.from_pretrained(
        source.root, subfolder="text_encoder", dtype=torch.float32, **source.kwargs()))
    tokenizer = _load("tokenizer (tokenizer/)", source,
                      lambda: CLIPTokenizer.from_pretrained(source.root, subfolder="tokenizer", **source.kwargs()))
    return empty_prompt_embedding(encoder.eval(), tokenizer, padding)


def save_sd(model: Gen2SegSD, path: str | os.PathLike) -> Path:
    """Our SD checkpoint: config, ``vae/``, ``unet/``, ``scheduler/`` and c∅ (no CLIP needed)."""
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    def write(staging: Path) -> None:
        model.config.save(staging)
        model.vae.save_pretrained(staging / "vae")
        model.unet.save_pretrained(staging / "unet")
        DDPMScheduler.from_config(model.scheduler_config).save_pretrained(staging / "scheduler")
        embedding = model.empty_prompt_embedding.detach().float().cpu().contiguous()
        save_file({EMBEDDING_KEY: embedding}, str(staging / EMBEDDING_FILE),
                  metadata={"padding": model.config.empty_prompt_padding})

    return _write_directory(Path(path), write)
