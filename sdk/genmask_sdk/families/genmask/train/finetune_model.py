"""The DiT as one trainable module for DDP / FSDP, and where its initial weights come from.

``wan_forward.wan_velocity`` (the reference forward: masked cross-attention, per-frame timesteps)
calls the transformer's sub-modules directly. DDP and FSDP only see calls of the module they wrap
(FSDP gathers a unit's sharded weights in that unit's ``forward``), so ``TrainingDiT`` re-hosts the
same parameters: every ``WanTransformerBlock`` sits in a ``TrainingBlock`` whose ``forward`` is
``wan_forward.block_forward`` (optionally under activation checkpointing), and the rest of the
computation uses ``wan_forward``'s own helpers. Outputs equal ``wan_velocity`` exactly (tested).

FSDP: wrap ``TrainingBlock`` (it is ``_no_split_modules``; accelerate's transformer-based policy picks
it up when no class is named). Naming ``WanTransformerBlock`` instead would shard weights whose
``forward`` is never called, which ``check_fsdp_wrapping`` refuses.

State-dict keys are the transformer's with ``blocks.N.block.`` for ``blocks.N.``: ``transformer_state``
maps them back for ``WanTransformer3DModel.load_state_dict``.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from diffusers import WanTransformer3DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ConfigError
from genmask_sdk.families.genmask.modeling.wan_forward import (
    block_forward,
    context_states,
    cross_attention_mask,
    frame_modulation,
    output_projection,
    patch_tokens,
    rope_tables,
    unpatchify,
)
from genmask_sdk.families.genmask.train.finetune_config import WAN_13B

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.block\.")
BLOCK_CLASS = "TrainingBlock"


class TrainingBlock(nn.Module):
    """One ``WanTransformerBlock`` whose ``forward`` is ``wan_forward.block_forward``.

    forward(hidden (B, F·T, D) float32, context (B, L, D), attn_mask (B, 1, 1, L) bool or None,
    proj (B, F, 1, 6, D) float32, rope_cos, rope_sin (1, F·T, 1, head_dim / 2), frames) -> (B, F·T, D) float32.
    """

    def __init__(self, block: nn.Module, checkpointing: bool = False) -> None:
        super().__init__()
        self.block = block
        self.checkpointing = checkpointing

    def forward(self, hidden, context, attn_mask, proj, rope_cos, rope_sin, frames: int) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block_forward, self.block, hidden, context, attn_mask, proj, (rope_cos, rope_sin), frames,
                              use_reentrant=False)
        return block_forward(self.block, hidden, context, attn_mask, proj, (rope_cos, rope_sin), frames)


class TrainingDiT(nn.Module):
    """``WanTransformer3DModel``'s parameters, run as GenMask's training forward.

    ``forward(inputs)`` takes a list of ``(latents (B, 16, F, h, w), frame_timesteps (B, F) in
    [0, 1000], context (B, L, text_dim), context_mask (B, L) bool)`` tuples (the segmentation and
    generation batches of a micro-step, whose shapes differ) and returns their velocities
    ``(B, 16, F, h, w)`` float32 in order: one call per micro-step, as DDP and FSDP want.
    """

    _no_split_modules = [BLOCK_CLASS]

    def __init__(self, transformer: WanTransformer3DModel, checkpointing: bool = False) -> None:
        super().__init__()
        self.patch_embedding = transformer.patch_embedding
        self.condition_embedder = transformer.condition_embedder
        self.rope = transformer.rope
        self.blocks = nn.ModuleList(TrainingBlock(b, checkpointing) for b in transformer.blocks)
        self.norm_out = transformer.norm_out
        self.proj_out = transformer.proj_out
        self.scale_shift_table = transformer.scale_shift_table
        self.patch_size = tuple(transformer.config.patch_size)

    def set_checkpointing(self, enabled: bool) -> None:
        for block in self.blocks:
            block.checkpointing = enabled

    def velocity(self, latents, frame_timesteps, context, context_mask=None) -> torch.Tensor:
        """One batch: the same arithmetic as ``wan_forward.wan_velocity``."""
        _, _, frames, height, width = latents.shape
        rope_cos, rope_sin = rope_tables(self, frames, height, width)
        hidden = patch_tokens(self, latents)
        modulation = frame_modulation(self, frame_timesteps)
        ctx = context_states(self, context)
        mask = cross_attention_mask(context_mask)
        for block in self.blocks:
            hidden = block(hidden, ctx, mask, modulation.proj, rope_cos, rope_sin, frames)
        out = output_projection(self, hidden, modulation.temb, frames)
        return unpatchify(out, frames, height, width, self.patch_size)

    def forward(self, inputs: Sequence[tuple]) -> list[torch.Tensor]:
        # unpatchify returns a view; FSDP2 warns about (and in-place ops would break) views as outputs
        return [self.velocity(*batch).clone() for batch in inputs]


def transformer_state(training_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``TrainingDiT`` state dict with ``WanTransformer3DModel``'s keys."""
    return {_BLOCK_KEY.sub(r"blocks.\1.", k): v for k, v in training_state.items()}


def build_transformer(config: GenMaskConfig, init: str | None) -> WanTransformer3DModel:
    """The DiT to fine-tune, float32: random for ``config.transformer`` (``init`` None), the
    transformer of a GenMask checkpoint, or a Wan2.1 diffusers transformer whose text projection is
    re-initialised for ``text_dim`` (``GenMaskModel.from_backbones``' rule)."""
    text_dim = config.transformer["text_dim"]
    if init is None:
        return WanTransformer3DModel(**config.transformer)
    from genmask_sdk.families.genmask.checkpoints import local_checkpoint
    from genmask_sdk.families.genmask.config import CONFIG_NAME

    local = local_checkpoint(init)
    if local is not None and (local / CONFIG_NAME).is_file():
        transformer = WanTransformer3DModel.from_pretrained(local / "transformer")
        if transformer.config.text_dim != text_dim:
            raise ConfigError(f"the GenMask checkpoint {init} has text_dim {transformer.config.text_dim}, but the cached "
                              f"embedder states have D = {text_dim}; start from a checkpoint of the same embedder.")
        return transformer.float()
    return load_wan_transformer(init, text_dim)


def load_wan_transformer(wan: str, text_dim: int) -> WanTransformer3DModel:
    """``transformer/`` of a Wan2.1 diffusers checkpoint (hub id or directory), float32, with the
    text projection's first layer replaced for ``text_dim`` inputs when its width differs."""
    from genmask_sdk.families.genmask.modeling.model import with_text_width

    try:
        transformer = WanTransformer3DModel.from_pretrained(wan, subfolder="transformer")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a Wan2.1 transformer from {wan!r} ({exc}); pass a GenMask checkpoint, a "
                          "Wan2.1 diffusers directory (with transformer/) or a hub id such as "
                          "Wan-AI/Wan2.1-T2V-1.3B-Diffusers.") from None
    if transformer.config.text_dim != text_dim:
        transformer = with_text_width(transformer, text_dim)
    return transformer.float()


def architecture(transformer: WanTransformer3DModel) -> dict:
    """The transformer's constructor kwargs (what ``GenMaskConfig.transformer`` holds)."""
    from genmask_sdk.families.genmask.modeling.model import transformer_init_kwargs

    return dict(transformer_init_kwargs(transformer))


def check_fsdp_wrapping(accelerator) -> None:
    """ConfigError when FSDP is asked to wrap a class other than ``TrainingBlock``."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    names = getattr(plugin, "transformer_cls_names_to_wrap", None) or []
    wrong = [n for n in names if n != BLOCK_CLASS]
    if plugin is not None and wrong:
        raise ConfigError(f"FSDP is set to wrap {wrong}; GenMask's training forward runs the blocks through "
                          f"{BLOCK_CLASS}, so set fsdp_transformer_layer_cls_to_wrap: {BLOCK_CLASS} (or leave it "
                          "empty) in the accelerate config.")


def genmask_config(cfg, info) -> GenMaskConfig:
    """The preset's config with the cache's embedder, resolution and VAE."""
    from genmask_sdk.families.genmask.config import EmbedderSpec

    return GenMaskConfig.preset(cfg.preset, embedder=EmbedderSpec(**info.embedder), resolution=info.resolution,
                                vae=dict(info.vae_config), name=f"{cfg.preset}-finetuned")


def initial_transformer(cfg, config: GenMaskConfig):
    """(transformer, config with its architecture): random, or from ``--init`` (the Wan preset's default)."""
    init = cfg.init or (WAN_13B if cfg.preset == "wan2.1-1.3b" else None)
    transformer = build_transformer(config, init)
    shape = ("num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim", "in_channels", "patch_size")
    loaded = architecture(transformer)
    wrong = [f"{k}: preset {config.transformer[k]}, loaded {loaded[k]}" for k in shape
             if _plain(config.transformer[k]) != _plain(loaded[k])]
    if wrong:
        raise ConfigError(f"--init {init} is not a {cfg.preset} DiT ({'; '.join(wrong)}); pick the preset that matches "
                          "the initial weights.")
    return transformer, config.replace(transformer=loaded)


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value
