"""Periodic held-out evaluation during fine-tuning: mIoU / oIoU of one-step segmentation.

The held-out set is a prepared set with its own cache (same frozen stages as the training cache). Each
process scores every W-th segmentation row (all processes run the same number of forwards, as FSDP
needs); predictions follow inference exactly (DESIGN.md §2): the mask frame is x_t* = t*·ε* (the
config's fixed noise) at timestep 1000·t*, the image frame is clean at 0, x0 = x_t* − t*·v, then the
linear probe, the letterbox undone (``imaging.to_original_logits``) and logits > 0 compared with the
ground-truth mask at the original size.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ArtifactMismatchError
from genmask_sdk.families.genmask.modeling.imaging import Letterbox, to_original_logits
from genmask_sdk.metrics import intersection_union, iou_from_counts
from genmask_sdk.families.genmask.modeling.model import fixed_noise
from genmask_sdk.families.genmask.train.cache_reader import CacheReader, CacheSet, open_cache
from genmask_sdk.families.genmask.train.losses import x0_from_velocity


class HeldOut:
    """The held-out rows: their cache (for the model inputs) and prepared set (for the ground truth)."""

    def __init__(self, data: Path, train_cache: CacheReader | CacheSet, samples: int) -> None:
        from genmask_sdk.data.prepared import open_prepared

        self.reader = open_cache(data, identity=train_cache.info.identity)
        if self.reader.info.resolution != train_cache.info.resolution:
            raise ArtifactMismatchError(f"the held-out cache of {data} is at resolution {self.reader.info.resolution}, "
                                        f"the training cache at {train_cache.info.resolution}; cache both alike.")
        self.prepared = open_prepared(data)
        self.rows = self.reader.indices("seg")[:samples]
        if len(self.rows) == 0:
            raise ArtifactMismatchError(f"the held-out set {data} has no segmentation rows to evaluate on.")

    def share(self, rank: int, world: int) -> tuple[list[int], int]:
        """(rows of process ``rank``, padded to equal length with its last row; count of real ones)."""
        mine = [int(r) for r in self.rows[rank::world]]
        length = math.ceil(len(self.rows) / world)
        return (mine + [mine[-1] if mine else int(self.rows[0])] * (length - len(mine))), len(mine)


@torch.no_grad()
def predict_logits(model, probe, batch, config: GenMaskConfig, device) -> torch.Tensor:
    """One-step mask logits (B, 1, R, R) float32 on the CPU for a ``CachedBatch``."""
    t_star = config.t_star
    x_t = (t_star * fixed_noise(config)).expand(batch.z_image.shape[0], -1, -1, -1)
    latents = torch.stack([batch.z_image, x_t], dim=2)
    frame_t = torch.tensor([[0.0, 1000.0 * t_star]]).expand(latents.shape[0], -1)
    inputs = tuple(t.to(device) for t in (latents, frame_t, batch.states, batch.mask))
    velocity = model([inputs])[0][:, :, 1].float().cpu()
    x0 = x0_from_velocity(x_t, velocity, torch.full((x_t.shape[0],), t_star))
    return probe(x0)


def evaluate(accelerator, model, probe, held_out: HeldOut, config: GenMaskConfig, batch_size: int) -> dict:
    """{"eval_miou", "eval_oiou", "eval_count"} over the held-out rows; call on every process."""
    rows, real = held_out.share(accelerator.process_index, accelerator.num_processes)
    counts = []
    model.eval()
    try:
        with accelerator.autocast():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start: start + batch_size]
                logits = predict_logits(model, probe, held_out.reader.batch(chunk), config, accelerator.device)
                counts.extend(_counts(logits, chunk, held_out, config.resolution))
    finally:
        model.train()
    valid = [1] * real + [0] * (len(rows) - real)
    local = torch.tensor([[i, u, v] for (i, u), v in zip(counts, valid)], dtype=torch.int64, device=accelerator.device)
    gathered = accelerator.gather(local).cpu().numpy()
    kept = gathered[gathered[:, 2] == 1]
    ious = [iou_from_counts(int(i), int(u)) for i, u, _ in kept]
    return {"eval_miou": float(np.mean(ious)), "eval_oiou": iou_from_counts(int(kept[:, 0].sum()), int(kept[:, 1].sum())),
            "eval_count": int(len(kept))}


def _counts(logits: torch.Tensor, rows: list[int], held_out: HeldOut, resolution: int) -> list[tuple[int, int]]:
    out = []
    for i, row in enumerate(rows):
        gt = held_out.prepared[row].mask
        box = Letterbox.fit(gt.shape[0], gt.shape[1], resolution)
        pred = (to_original_logits(logits[i: i + 1], box)[0] > 0).numpy()
        out.append(intersection_union(pred, gt))
    return out
