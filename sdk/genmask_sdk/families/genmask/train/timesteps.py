"""Timestep samplers for rectified-flow training of GenMask.

Rectified flow: ``x_t = (1 - t) * x0 + t * noise`` with ``t`` in [0, 1]; ``t = 0`` is clean data
and ``t = 1`` is pure noise (see :mod:`genmask_sdk.families.genmask.train.losses`).

GenMask trains two tasks with different timestep distributions:

* **generation** (image latents): logit-normal, ``t = sigmoid(u)`` with ``u ~ N(0, 1)``. The
  density peaks at ``t = 0.5``; with 100 bins on [0, 1] the peak bin holds about 1.6 % of samples.
* **segmentation** (mask latents): the same logit-normal sample pushed towards pure noise by the
  SD3 time shift with shift factor ``1 / a``::

      t = t_ln / (a + (1 - a) * t_ln)        (= s * t_ln / (1 + (s - 1) * t_ln), s = 1 / a)

  With the default ``a = 0.05`` about 10 % of samples fall below ``t = 0.85`` and the peak
  100-bin histogram bin (about 13 % of samples) lies near ``t = 0.97``. This matches one-step
  inference, which starts the mask from (almost) pure noise.

Samplers return float32 tensors of shape ``[n]`` with values in [0, 1], on the device of the
``generator`` (CPU when no generator is given), and are deterministic for a seeded generator.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch

from genmask_sdk.errors import ConfigError, InputTypeError, InvalidInputError

#: Default ``a`` of :func:`segmentation_timesteps` (SD3 shift factor 1 / a = 20).
DEFAULT_SEGMENTATION_SHIFT_A: float = 0.05


def generation_timesteps(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``n`` generation timesteps from the logit-normal distribution.

    ``t = sigmoid(u)`` with ``u ~ N(0, 1)``.

    Args:
        n: number of samples, an int >= 0.
        generator: optional ``torch.Generator`` for reproducible draws; samples are created on its
            device.

    Returns:
        float32 tensor of shape ``[n]``, values in (0, 1) (mean 0.5, mode 0.5).

    Raises:
        InputTypeError / InvalidInputError: ``n`` is not an int or is negative.
    """
    return torch.sigmoid(_standard_normal(n, generator))


def segmentation_timesteps(
    n: int, a: float = DEFAULT_SEGMENTATION_SHIFT_A, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample ``n`` segmentation timesteps: logit-normal, then SD3 time shift by ``1 / a``.

    ``t_ln = sigmoid(u)``, ``u ~ N(0, 1)``; ``t = t_ln / (a + (1 - a) * t_ln)``. ``a = 1`` gives the
    plain logit-normal of :func:`generation_timesteps` (same values for the same generator state);
    smaller ``a`` pushes ``t`` towards 1 (noise).

    Args:
        n: number of samples, an int >= 0.
        a: shift parameter, a real number with ``0 < a <= 1`` (default 0.05, i.e. shift 20).
        generator: optional ``torch.Generator`` for reproducible draws; samples are created on its
            device.

    Returns:
        float32 tensor of shape ``[n]``, values in [0, 1].

    Raises:
        ConfigError: ``a`` is not a real number with ``0 < a <= 1``.
        InputTypeError / InvalidInputError: ``n`` is not an int or is negative.
    """
    _check_shift_a(a)
    logit_normal = torch.sigmoid(_standard_normal(n, generator))
    return shift_timesteps(logit_normal, a)


def shift_timesteps(t: torch.Tensor, a: float) -> torch.Tensor:
    """Apply the SD3 time shift ``t / (a + (1 - a) * t)`` (shift factor ``1 / a``).

    Args:
        t: float tensor of any shape with values in [0, 1].
        a: real number with ``0 < a <= 1``; ``a = 1`` returns ``t`` unchanged.

    Returns:
        tensor of ``t``'s shape and dtype with values in [0, 1]; maps 0 -> 0 and 1 -> 1 and is
        increasing. Computed in float64, then clamped to [0, 1] against rounding.

    Raises:
        ConfigError: ``a`` is not a real number with ``0 < a <= 1``.
    """
    _check_shift_a(a)
    t64 = t.to(torch.float64)
    shifted = t64 / (a + (1.0 - a) * t64)
    return shifted.clamp_(0.0, 1.0).to(t.dtype)


def _standard_normal(n: int, generator: torch.Generator | None) -> torch.Tensor:
    """float32 ``[n]`` draws from N(0, 1) on the generator's device (CPU without generator)."""
    if not isinstance(n, Integral) or isinstance(n, bool):
        raise InputTypeError(f"n (number of timesteps) must be an int, got {type(n).__name__}.")
    if n < 0:
        raise InvalidInputError(f"n (number of timesteps) must be >= 0, got {n}.")
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(int(n), generator=generator, device=device, dtype=torch.float32)


def _check_shift_a(a: float) -> None:
    if (
        not isinstance(a, Real)
        or isinstance(a, bool)
        or not math.isfinite(a)
        or not 0.0 < a <= 1.0
    ):
        raise ConfigError(
            f"segmentation timestep shift 'a' must be a number with 0 < a <= 1, got {a!r}. "
            f"'a' is the inverse of the SD3 shift factor: a = 0.05 means shift 20 (GenMask "
            f"default); a = 1 means no shift. For a shift factor s, pass a = 1 / s."
        )
