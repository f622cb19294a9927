"""Architecture configs of gen2seg's backbones: the published sizes (build them on the meta device)
and tiny random ones for tests.

Real sizes, from the public configs of the base models (values written from those configs; the
gen2seg checkpoints themselves were not fetched, so a loaded checkpoint's own config always wins):

- ``SD2_UNET`` / ``SD2_VAE`` / ``SD2_TEXT_ENCODER`` / ``SD2_SCHEDULER``: ``stabilityai/stable-diffusion-2``
  (the 768-v model gen2seg-sd fine-tunes; only the UNet is trained, notes §5).
- ``VIT_MAE_HUGE``: ``facebook/vit-mae-huge`` at 224² (ViT-H/14: a 16×16 patch grid).

Meta-device parameter counts (tests/test_gen2seg_model.py): UNet 865,910,724; VAE 83,653,863;
ViT-MAE-H encoder ≈ 630.8 M (≈ 632 M with a 1000-class head, the ViT paper's "ViT-H/14").
"""

from __future__ import annotations

from typing import Any

import torch

#: diffusers ``UNet2DConditionModel`` kwargs of SD 2 (768-v). ``upcast_attention`` is True for the
#: 768-v model (False for SD 2-base); it only changes numerics in half precision.
SD2_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 96,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
    "upcast_attention": True,
}

#: diffusers ``AutoencoderKL`` kwargs of SD 2 (the SD 1.x/2.x KL-f8 VAE, 4 latent channels).
SD2_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 768,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "scaling_factor": 0.18215,
}

#: transformers ``CLIPTextConfig`` of SD 2's text encoder (OpenCLIP ViT-H/14 text tower, the last
#: of its 24 layers dropped). Only needed to compute the empty-prompt embedding once.
SD2_TEXT_ENCODER: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "max_position_embeddings": 77,
    "projection_dim": 512,
    "vocab_size": 49408,
}

#: The scheduler values gen2seg needs (SD 2's training schedule, v-prediction, ``clip_sample`` False
#: as in SD 2's scheduler config). ``timestep_spacing`` is what gen2seg's train.py saves
#: ("trailing"); the HF gen2seg-sd scheduler config itself is unverified (notes §1).
SD2_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "timestep_spacing": "trailing",
    "steps_offset": 1,
    "clip_sample": False,
}

#: transformers ``ViTMAEConfig`` kwargs of ViT-MAE-Huge at 224² (gen2seg-mae-h's architecture).
#: ``mask_ratio`` is 0: gen2seg trains and runs without masking.
VIT_MAE_HUGE: dict[str, Any] = {
    "hidden_size": 1280,
    "num_hidden_layers": 32,
    "num_attention_heads": 16,
    "intermediate_size": 5120,
    "hidden_act": "gelu",
    "patch_size": 14,
    "image_size": 224,
    "num_channels": 3,
    "qkv_bias": True,
    "decoder_hidden_size": 512,
    "decoder_num_hidden_layers": 8,
    "decoder_num_attention_heads": 16,
    "decoder_intermediate_size": 2048,
    "mask_ratio": 0.0,
}


# ------------------------------------------------------------------------------------- builders
def build_sd2_unet(device: str | torch.device = "meta"):
    """SD 2's UNet with random weights; on ``"meta"`` (default) nothing is allocated."""
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        return UNet2DConditionModel(**SD2_UNET)


def build_sd2_vae(device: str | torch.device = "meta"):
    """SD 2's VAE with random weights; on ``"meta"`` (default) nothing is allocated."""
    from diffusers import AutoencoderKL

    with torch.device(device):
        return AutoencoderKL(**SD2_VAE)


def build_vit_mae_huge(device: str | torch.device = "meta"):
    """ViT-MAE-Huge (``ViTMAEForPreTraining``) with random weights; meta by default."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    with torch.device(device):
        return ViTMAEForPreTraining(ViTMAEConfig(**VIT_MAE_HUGE))


# ---------------------------------------------------------------------------------------- tiny
TINY_TEXT_WIDTH = 32


def tiny_tokenizer():
    """A CLIP tokenizer that knows only BOS, EOS and the pad token "!" (ids 0, 1, 2): enough for
    the empty prompt, built in memory (offline), ``model_max_length`` 77 like SD 2's."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token="!", model_max_length=77)


def tiny_sd_components(seed: int = 0) -> dict[str, Any]:
    """Random tiny SD components with the real structure (8× VAE, cross-attention UNet, CLIP).

    Returns a dict with ``vae`` (AutoencoderKL, 4 latent channels), ``unet`` (UNet2DConditionModel,
    cross_attention_dim = 32), ``text_encoder`` (CLIPTextModel, width 32), ``tokenizer`` and
    ``scheduler_config`` (SD 2's schedule). A few hundred kB of weights in all.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_WIDTH, attention_head_dim=(2, 4), use_linear_projection=True,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        sample_size=64, scaling_factor=0.18215,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=3, hidden_size=TINY_TEXT_WIDTH, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=16, bos_token_id=0, eos_token_id=1, pad_token_id=2,
    ))
    return {
        "vae": vae.eval(),
        "unet": unet.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tiny_tokenizer(),
        "scheduler_config": dict(SD2_SCHEDULER),
    }


def tiny_mae_config(**overrides: Any):
    """A tiny ``ViTMAEConfig``: 56² input, patch 14 (a 4×4 grid, 588-dim predictions like MAE-H),
    width 32, 2 + 1 layers, no masking."""
    from transformers import ViTMAEConfig

    fields = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, patch_size=14,
        image_size=56, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=24, mask_ratio=0.0,
    )
    fields.update(overrides)
    return ViTMAEConfig(**fields)
