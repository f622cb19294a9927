"""Data order and the model inputs of one micro-step (segmentation and generation batches).

Order: per task, an endless sequence of epochs; epoch ``e`` is ``torch.utils.data.DistributedSampler``
over that task's cache rows (shuffled with ``seed``, ``set_epoch(e)``, padded to equal shares), so
process ``r`` of ``W`` reads every W-th row of the permutation and the processes never overlap within an
epoch. The position (epoch, rows taken) is a pair of ints per task, saved with the training state: a
resumed run continues with exactly the rows it would have read.

Randomness of a micro-step (timesteps, noise, CFG dropout) comes from a generator seeded by
``(seed, rank, step, micro)``, so it is reproducible and needs no saved generator state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from genmask_sdk.families.genmask.train.cache_reader import CachedBatch
from genmask_sdk.families.genmask.train.demo import with_cfg_dropout
from genmask_sdk.families.genmask.train.losses import add_noise
from genmask_sdk.families.genmask.train.timesteps import generation_timesteps, segmentation_timesteps


class TaskStream:
    """Endless, per-process, resumable order over one task's rows (see the module docstring)."""

    def __init__(self, rows: np.ndarray, rank: int, world: int, seed: int, epoch: int = 0, taken: int = 0) -> None:
        self.rows, self.rank, self.world, self.seed = np.asarray(rows, dtype=np.int64), rank, world, seed
        self.epoch, self.taken = epoch, taken
        self._order = self._epoch_order(epoch)

    def _epoch_order(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(range(len(self.rows)), num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=self.seed, drop_last=False)
        sampler.set_epoch(epoch)
        return [int(self.rows[i]) for i in sampler]

    def take(self, n: int) -> list[int]:
        """The next ``n`` cache rows of this process (crossing into the next epoch as needed)."""
        out: list[int] = []
        while len(out) < n:
            if self.taken == len(self._order):
                self.epoch, self.taken = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            chunk = self._order[self.taken: self.taken + n - len(out)]
            out.extend(chunk)
            self.taken += len(chunk)
        return out

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "taken": self.taken}


def micro_generator(seed: int, rank: int, step: int, micro: int) -> torch.Generator:
    """CPU generator of one micro-step of one process."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + step) * 1_009 + micro)


def segmentation_inputs(batch: CachedBatch, shift_a: float, generator: torch.Generator):
    """(model input, (x0, noise)) of a segmentation batch: frame 0 the clean image latent at t = 0,
    frame 1 the noised mask latent at t from the shifted sampler (DESIGN.md §2).

    Model input: (latents (B, 16, 2, h, w), frame timesteps (B, 2) = [0, 1000 t], states, mask)."""
    x0 = batch.z_mask
    t = segmentation_timesteps(x0.shape[0], a=shift_a, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    latents = torch.stack([batch.z_image, add_noise(x0, noise, t)], dim=2)
    frame_t = torch.stack([torch.zeros_like(t), 1000.0 * t], dim=1)
    return (latents, frame_t, batch.states, batch.mask), (x0, noise)


def generation_inputs(batch: CachedBatch, null_states: torch.Tensor, cfg_dropout: float, generator: torch.Generator):
    """(model input, (x0, noise)) of a generation batch: one frame, the noised image latent at a
    logit-normal t; each instruction replaced by the empty one with probability ``cfg_dropout``."""
    x0 = batch.z_image
    t = generation_timesteps(x0.shape[0], generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    drop = torch.rand(x0.shape[0], generator=generator) < cfg_dropout
    states, mask = with_cfg_dropout(batch.states, batch.mask, null_states, drop)
    return (add_noise(x0, noise, t)[:, :, None], 1000.0 * t[:, None], states, mask), (x0, noise)


def to_device(tensors, device):
    """A tuple of tensors moved to ``device`` (non-blocking)."""
    return tuple(t.to(device, non_blocking=True) for t in tensors)
