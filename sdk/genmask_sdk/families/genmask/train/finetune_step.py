"""The learning-rate schedule and the losses of one micro-step."""

from __future__ import annotations

import math

import torch

from genmask_sdk.families.genmask.train.finetune_config import FinetuneConfig
from genmask_sdk.families.genmask.train.finetune_data import (
    generation_inputs,
    micro_generator,
    segmentation_inputs,
    to_device,
)
from genmask_sdk.families.genmask.train.losses import flow_matching_loss


def lr_at(step: int, cfg: FinetuneConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up over ``warmup_steps``, then
    cosine from ``lr`` to ``min_lr`` at ``max_steps`` (held there beyond)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(cfg: FinetuneConfig):
    """``LambdaLR`` factor: ``lr_at(step) / lr``."""
    return lambda step: lr_at(step, cfg) / cfg.lr


def micro_step_losses(model, reader, streams, null_states, cfg: FinetuneConfig, rank: int, step: int, micro: int,
                      device) -> tuple[torch.Tensor, torch.Tensor]:
    """(segmentation loss, generation loss), scalar float32 tensors, of one micro-step: ``micro_batch``
    rows of each task from this process's streams, one forward of ``model`` (a ``TrainingDiT``,
    possibly wrapped by DDP / FSDP) over both batches."""
    generator = micro_generator(cfg.seed, rank, step, micro)
    seg_in, (seg_x0, seg_noise) = segmentation_inputs(reader.batch(streams["seg"].take(cfg.micro_batch)),
                                                      cfg.shift_a, generator)
    gen_in, (gen_x0, gen_noise) = generation_inputs(reader.batch(streams["gen"].take(cfg.micro_batch)),
                                                    null_states, cfg.cfg_dropout, generator)
    seg_v, gen_v = model([to_device(seg_in, device), to_device(gen_in, device)])
    seg_x0, seg_noise, gen_x0, gen_noise = to_device((seg_x0, seg_noise, gen_x0, gen_noise), device)
    return (flow_matching_loss(seg_v[:, :, 1], seg_x0, seg_noise),
            flow_matching_loss(gen_v[:, :, 0], gen_x0, gen_noise))
