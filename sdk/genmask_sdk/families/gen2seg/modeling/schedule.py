"""The diffusion-schedule arithmetic gen2seg-sd needs: ᾱ_t, and x0 from one UNet output.

Computed from the scheduler config (never hard-coded). For SD 2's schedule (scaled_linear
0.00085 → 0.012, 1000 steps) and t = 999: ᾱ = 0.0046601, so x0 = 0.068265·z − 0.997667·v.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from genmask_sdk.errors import ConfigError

#: Keys of a diffusers scheduler config that gen2seg uses (the rest is ignored).
SCHEDULER_KEYS = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
    "prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr",
    "clip_sample", "clip_sample_range", "thresholding",
)
PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")


def scheduler_subset(config: Mapping[str, Any]) -> dict[str, Any]:
    """The gen2seg-relevant keys of a diffusers scheduler config (``SCHEDULER_KEYS``)."""
    return {key: config[key] for key in SCHEDULER_KEYS if key in config}


def alphas_cumprod(config: Mapping[str, Any]) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t} (1 − β_s) for t = 0 … N−1, float64, from a diffusers scheduler config.

    Supports ``trained_betas`` and the "linear" / "scaled_linear" schedules (SD 1.x/2.x); others
    raise ``ConfigError``. Defaults follow diffusers' DDPMScheduler (N = 1000, 1e-4 → 0.02, linear).
    """
    if config.get("rescale_betas_zero_snr"):
        raise ConfigError("rescale_betas_zero_snr=True schedules are not supported by gen2seg-sd.")
    steps = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float64)
    else:
        start, end = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02))
        schedule = config.get("beta_schedule", "linear")
        if schedule == "linear":
            betas = torch.linspace(start, end, steps, dtype=torch.float64)
        elif schedule == "scaled_linear":
            betas = torch.linspace(start**0.5, end**0.5, steps, dtype=torch.float64) ** 2
        else:
            raise ConfigError(f"beta_schedule {schedule!r} is not supported; use 'linear' or 'scaled_linear'.")
    return torch.cumprod(1.0 - betas, dim=0)


def x0_coefficients(config: Mapping[str, Any], timestep: int) -> tuple[float, float]:
    """(a, b) with x0 = a·z + b·out for the UNet output ``out`` at ``timestep`` on input ``z``.

    v_prediction: a = √ᾱ, b = −√(1−ᾱ); epsilon: a = 1/√ᾱ, b = −√(1−ᾱ)/√ᾱ; sample: a = 0, b = 1
    (what diffusers' ``scheduler.step(...).pred_original_sample`` computes).
    """
    alphas = alphas_cumprod(config)
    if not 0 <= timestep < len(alphas):
        raise ConfigError(f"timestep {timestep} is outside the schedule's 0..{len(alphas) - 1}.")
    alpha = float(alphas[timestep])
    kind = config.get("prediction_type", "epsilon")
    if kind == "v_prediction":
        return alpha**0.5, -((1.0 - alpha) ** 0.5)
    if kind == "epsilon":
        return 1.0 / alpha**0.5, -((1.0 - alpha) ** 0.5) / alpha**0.5
    if kind == "sample":
        return 0.0, 1.0
    raise ConfigError(f"prediction_type {kind!r} is unknown; use one of {PREDICTION_TYPES}.")


def x0_clip(config: Mapping[str, Any]) -> float | None:
    """The bound diffusers' ``step`` clamps x0 to, or None: ``clip_sample_range`` (default 1) when
    ``clip_sample`` is set. An absent ``clip_sample`` means True, diffusers' DDPM/DDIM default;
    SD 2's own scheduler config sets it False. Dynamic ``thresholding`` is not supported."""
    if config.get("thresholding"):
        raise ConfigError("schedulers with thresholding=True are not supported by gen2seg-sd.")
    if not config.get("clip_sample", True):
        return None
    return float(config.get("clip_sample_range", 1.0))


def one_step_inference_timestep(config: Mapping[str, Any]) -> int:
    """The timestep the official SD pipeline would use: diffusers ``set_timesteps(1)`` on this
    scheduler config. 999 with ``timestep_spacing="trailing"``; 1 with "leading" + steps_offset 1."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(scheduler_subset(config))
    scheduler.set_timesteps(1)
    return int(scheduler.timesteps[0])
