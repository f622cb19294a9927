"""gen2seg's instance-colouring loss (notes/gen2seg.md §4, ``InstanceSegmentationLoss`` upstream).

Our own implementation from the notes. Per sample, with ``pred`` the colour map in 0–255 units and
the instances given by the ground truth:

* **variance** (every instance): ``huber(pred_inst, mean_inst)`` (δ = 1, mean over pixels × 3);
  the **background** (id 0) is pulled to black instead, ``huber(pred_bg, 0)``, and contributes
  the fixed mean (0, 0, 0) to the list of means. Each variance term adds 1 to the count ``ct``.
* **pixel separation** (non-background instances): ``w · mean(300 / (1 + ‖p − μ‖²))`` over every
  pixel *outside* the instance (background included), ``w = 10 / √|inst|``.
* **mean separation**: the average over pairs i < j of ``300 / (‖μi − μj‖² + 1)``.
* sample loss = (Σ variance + Σ separation + mean separation) / ct; batch loss = mean over samples.

Upstream stops adding instances once ``ct`` exceeds 1250 (``max_terms``); our scenes have at most
nine groups, so that never triggers, but it is kept. Upstream finds instances with
``torch.unique`` over the ground-truth *colours*; we take an id map (0 = background), which
groups pixels identically. ``include_background=False`` is upstream's ``no_bg`` (VKITTI2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from genmask_sdk.errors import ConfigError, InvalidInputError


@dataclass(frozen=True)
class InstanceLossConfig:
    """Constants of the loss (defaults: the published code, notes §4).

    huber_delta: δ of the variance terms (0–255 units). separation_scale / mean_scale: the 300 of
    the two repulsion terms. separation_weight: the 10 of ``w = 10 / √|inst|`` (upstream's comment
    says 30 was used for SD2). include_background: pull background pixels to black (Hypersim
    setting). max_terms: stop adding instances once the term count exceeds this.
    """

    huber_delta: float = 1.0
    separation_scale: float = 300.0
    separation_weight: float = 10.0
    mean_scale: float = 300.0
    include_background: bool = True
    max_terms: int = 1250

    def __post_init__(self) -> None:
        for name in ("huber_delta", "separation_scale", "separation_weight", "mean_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"InstanceLossConfig.{name} must be a number > 0, got {value!r}")
        if isinstance(self.max_terms, bool) or not isinstance(self.max_terms, int) or self.max_terms < 1:
            raise ConfigError(f"InstanceLossConfig.max_terms must be an int >= 1, got {self.max_terms!r}")


def _mean_separation(means: list[torch.Tensor], scale: float) -> torch.Tensor:
    """Average over pairs i < j of ``scale / (‖μi − μj‖² + 1)``; 0 with fewer than two means."""
    if len(means) < 2:
        return means[0].new_zeros(()) if means else torch.zeros(())
    stacked = torch.stack(means)  # (K, 3)
    d2 = (stacked[:, None, :] - stacked[None, :, :]).pow(2).sum(-1)
    i, j = torch.triu_indices(len(means), len(means), offset=1)
    return (scale / (d2[i, j] + 1.0)).mean()


def reference_sample_loss(pred: torch.Tensor, ids: torch.Tensor, config: InstanceLossConfig) -> dict[str, torch.Tensor]:
    """One sample, written as the published loop (one instance at a time); ``sample_loss`` is the
    vectorised equivalent that training uses (tests check they agree).

    ``pred`` float (3, H, W) in 0–255, ``ids`` integer (H, W), 0 = background. Returns
    ``{"loss", "variance", "separation", "mean_separation"}``, scalar tensors; the parts are
    divided by ``ct`` like the loss, so ``loss`` is their sum."""
    pixels = pred.reshape(pred.shape[0], -1).t()  # (N, 3)
    labels = ids.reshape(-1)
    zero = pixels.new_zeros(())
    variance, separation, count = zero, zero, 0
    means: list[torch.Tensor] = []
    for label in torch.unique(labels).tolist():
        if count > config.max_terms:
            break
        inside = labels == label
        group = pixels[inside]
        if label == 0:
            if not config.include_background:
                continue
            variance = variance + F.huber_loss(group, torch.zeros_like(group), delta=config.huber_delta)
            means.append(pixels.new_zeros(3))
            count += 1
            continue
        mean = group.mean(dim=0)
        variance = variance + F.huber_loss(group, mean.expand_as(group), delta=config.huber_delta)
        count += 1
        outside = pixels[~inside]
        if outside.shape[0]:
            closeness = config.separation_scale / (1.0 + (outside - mean).pow(2).sum(-1))
            separation = separation + config.separation_weight / float(group.shape[0]) ** 0.5 * closeness.mean()
        means.append(mean)
    mean_sep = _mean_separation(means, config.mean_scale).to(pixels)
    count = max(count, 1)
    parts = {"variance": variance / count, "separation": separation / count, "mean_separation": mean_sep / count}
    parts["loss"] = parts["variance"] + parts["separation"] + parts["mean_separation"]
    return parts


def sample_loss(pred: torch.Tensor, ids: torch.Tensor, config: InstanceLossConfig) -> dict[str, torch.Tensor]:
    """``reference_sample_loss`` with every instance at once (K groups × N pixels dense ops)."""
    pixels = pred.reshape(pred.shape[0], -1).t()  # (N, 3)
    values, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
    keep = torch.ones(len(values), dtype=torch.bool)
    if not config.include_background:
        keep &= values != 0
    keep &= torch.cumsum(keep.long(), 0) <= config.max_terms + 1  # the loop stops once ct > max_terms
    count = int(keep.sum())
    zero = pixels.new_zeros(())
    if count == 0:
        return {"loss": zero, "variance": zero, "separation": zero, "mean_separation": zero}
    sizes = torch.bincount(inverse, minlength=len(values)).to(pixels.dtype)  # (K,)
    means = pixels.new_zeros(len(values), 3).index_add(0, inverse, pixels) / sizes[:, None]
    background = values == 0
    targets = torch.where(background[:, None], torch.zeros_like(means), means)  # background is pulled to black
    huber = F.huber_loss(pixels, targets[inverse], delta=config.huber_delta, reduction="none").sum(-1)
    group_huber = pixels.new_zeros(len(values)).index_add(0, inverse, huber) / (sizes * 3.0)
    variance = group_huber[keep].sum()
    fg = keep & ~background
    separation = zero
    if bool(fg.any()):
        fg_index = torch.nonzero(fg).squeeze(1)
        d2 = (pixels[None, :, :] - means[fg_index][:, None, :]).pow(2).sum(-1)  # (F, N)
        outside = (inverse[None, :] != fg_index[:, None]).to(pixels.dtype)
        closeness = (config.separation_scale / (1.0 + d2) * outside).sum(1) / outside.sum(1).clamp_min(1.0)
        weight = config.separation_weight / sizes[fg_index].sqrt()
        separation = (weight * closeness * (outside.sum(1) > 0)).sum()
    mean_sep = _mean_separation(list(targets[keep]), config.mean_scale).to(pixels)
    parts = {"variance": variance / count, "separation": separation / count, "mean_separation": mean_sep / count}
    parts["loss"] = parts["variance"] + parts["separation"] + parts["mean_separation"]
    return parts


def instance_colouring_loss(pred: torch.Tensor, ids: torch.Tensor,
                            config: InstanceLossConfig = InstanceLossConfig()) -> dict[str, torch.Tensor]:
    """Batch loss: ``pred`` float (B, 3, H, W) in 0–255 (the min–max-normalised colour map),
    ``ids`` integer (B, H, W), 0 = background. Returns the batch means of ``sample_loss``'s keys."""
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise InvalidInputError(f"pred must be (B, 3, H, W), got {tuple(pred.shape)}")
    if ids.shape != (pred.shape[0], *pred.shape[2:]):
        raise InvalidInputError(f"ids must be (B, H, W) = {(pred.shape[0], *pred.shape[2:])}, got {tuple(ids.shape)}")
    samples = [sample_loss(p, i, config) for p, i in zip(pred, ids)]
    return {key: torch.stack([s[key] for s in samples]).mean() for key in samples[0]}
