"""Rectified-flow noising, velocity target and flow-matching loss.

Conventions (``t`` in [0, 1], ``t = 0`` clean, ``t = 1`` pure noise)::

    x_t = (1 - t) * x0 + t * noise          add_noise
    v   = noise - x0                        velocity_target (what the model predicts)
    x0  = x_t - t * v                       x0_from_velocity

Tensors ``x0``, ``noise``, ``x_t`` and velocities share one shape ``[B, ...]`` (e.g. latents
``[B, C, F, H, W]``); a timestep tensor ``t`` has shape ``[B]`` (one value per sample) and is
broadcast over the remaining dimensions and cast to the dtype and device of the data tensors.
Results have the data tensors' shape and device; their dtype is torch's type promotion of the
data tensors (the common dtype when, as usual, they share one).
"""

from __future__ import annotations

import torch

from genmask_sdk.errors import InputTypeError, InvalidInputError


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noisy sample of rectified flow: ``x_t = (1 - t) * x0 + t * noise``.

    Args:
        x0: clean data, float tensor ``[B, ...]``.
        noise: Gaussian noise, same shape as ``x0``.
        t: timesteps, tensor ``[B]`` with values in [0, 1].

    Returns:
        ``x_t``, tensor of ``x0``'s shape and device (dtype: see the module docstring).

    Raises:
        InputTypeError / InvalidInputError: an argument is not a tensor, or shapes do not match.
    """
    _check_same_shape(x0, noise, "x0", "noise")
    t_b = _broadcast_per_sample(t, x0)
    return (1 - t_b) * x0 + t_b * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Rectified-flow velocity ``v = noise - x0`` (``d x_t / d t``), tensor of ``x0``'s shape."""
    _check_same_shape(x0, noise, "x0", "noise")
    return noise - x0


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Clean-data estimate from a velocity: ``x0 = x_t - t * v`` (one-step prediction).

    Args:
        x_t: noisy sample, float tensor ``[B, ...]``.
        v: velocity (predicted or exact), same shape as ``x_t``.
        t: timesteps, tensor ``[B]`` with values in [0, 1].

    Returns:
        tensor of ``x_t``'s shape and device. With the exact velocity it inverts
        :func:`add_noise` up to floating-point rounding (bit-exact for dyadic inputs).
    """
    _check_same_shape(x_t, v, "x_t", "v")
    return x_t - _broadcast_per_sample(t, x_t) * v


def flow_matching_loss(
    v_pred: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Flow-matching MSE between a predicted velocity and ``noise - x0``.

    ``loss = mean_b( weight[b] * mean_{...}( (v_pred - (noise - x0))**2 )[b] )``: each sample's
    squared error is averaged over its own elements, multiplied by its weight (1 if ``weight`` is
    None), then averaged over the batch (the SD3 / diffusers convention; the weights are not
    renormalised).

    Args:
        v_pred: model output, float tensor ``[B, ...]``.
        x0: clean data, same shape.
        noise: noise, same shape.
        weight: optional per-sample weights, tensor ``[B]`` (typically >= 0).

    Returns:
        scalar tensor (shape ``[]``), >= 0 for non-negative weights; computed in at least float32
        (bf16/fp16 inputs are upcast), differentiable w.r.t. ``v_pred``.
    """
    _check_same_shape(v_pred, x0, "v_pred", "x0")
    _check_same_shape(x0, noise, "x0", "noise")
    compute_dtype = _loss_dtype(v_pred, x0, noise)
    target = velocity_target(x0.to(compute_dtype), noise.to(compute_dtype))
    squared_error = (v_pred.to(compute_dtype) - target) ** 2
    per_sample = squared_error.reshape(squared_error.shape[0], -1).mean(dim=1)
    if weight is not None:
        per_sample = per_sample * _per_sample_vector(weight, v_pred, "weight").to(compute_dtype)
    return per_sample.mean()


def _loss_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Promoted dtype of ``tensors``, at least float32 (float64 stays float64)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    for value, name in ((a, name_a), (b, name_b)):
        if not isinstance(value, torch.Tensor):
            raise InputTypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    if a.ndim < 1:
        raise InvalidInputError(f"{name_a} must have a batch dimension [B, ...], got a scalar.")
    if a.shape != b.shape:
        raise InvalidInputError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )


def _per_sample_vector(values: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """Check that ``values`` is ``[B]`` for ``like`` of shape ``[B, ...]``; move it to ``like``."""
    if not isinstance(values, torch.Tensor):
        raise InputTypeError(
            f"{name} must be a torch.Tensor of shape [B], got {type(values).__name__}."
        )
    if values.shape != like.shape[:1]:
        raise InvalidInputError(
            f"{name} must have shape [B] = [{like.shape[0]}] (one value per sample), got "
            f"{tuple(values.shape)}. Use t.expand(B) for a single shared value."
        )
    return values.to(device=like.device)


def _broadcast_per_sample(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` of shape ``[B]`` reshaped to ``[B, 1, ..., 1]`` in ``like``'s dtype and device."""
    t = _per_sample_vector(t, like, "t").to(dtype=like.dtype)
    return t.reshape(t.shape[0], *([1] * (like.ndim - 1)))
