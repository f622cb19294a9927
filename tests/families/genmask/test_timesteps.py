"""Tests of genmask_sdk.families.genmask.train: timestep samplers and rectified-flow helpers."""

from __future__ import annotations

import pytest
import torch

from genmask_sdk.errors import ConfigError, InputTypeError, InvalidInputError
from genmask_sdk.families.genmask.train import (
    add_noise,
    flow_matching_loss,
    generation_timesteps,
    segmentation_timesteps,
    shift_timesteps,
    velocity_target,
    x0_from_velocity,
)

N_SAMPLES = 1_000_000


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def histogram_100(t: torch.Tensor) -> torch.Tensor:
    """Fraction of samples in each of 100 equal bins on [0, 1]."""
    return torch.histc(t.double(), bins=100, min=0.0, max=1.0) / t.numel()


@pytest.fixture(scope="module")
def generation_samples() -> torch.Tensor:
    return generation_timesteps(N_SAMPLES, generator=seeded(0))


@pytest.fixture(scope="module")
def segmentation_samples() -> torch.Tensor:
    return segmentation_timesteps(N_SAMPLES, generator=seeded(1))


# --- distributions -----------------------------------------------------------------------------


def test_samplers_return_float32_vectors_in_unit_interval(generation_samples, segmentation_samples):
    for t in (generation_samples, segmentation_samples):
        assert t.dtype == torch.float32 and t.shape == (N_SAMPLES,)
        assert 0.0 <= t.min().item() and t.max().item() <= 1.0


def test_generation_peak_bin_matches_paper(generation_samples):
    hist = histogram_100(generation_samples)
    assert 0.014 <= hist.max().item() <= 0.018  # paper: ~1.6 %
    assert 0.45 <= hist.argmax().item() / 100 < 0.55  # logit-normal mode is 0.5


def test_segmentation_statistics_match_paper(segmentation_samples):
    below_085 = (segmentation_samples < 0.85).double().mean().item()
    assert 0.08 <= below_085 <= 0.12  # paper: ~0.10
    hist = histogram_100(segmentation_samples)
    assert 0.11 <= hist.max().item() <= 0.15  # paper: ~13 %
    peak_bin_start = hist.argmax().item() / 100
    assert 0.95 <= peak_bin_start and peak_bin_start + 0.01 <= 1.0  # paper: near t = 0.97


def test_samplers_are_deterministic_with_seeded_generator():
    assert torch.equal(generation_timesteps(1000, seeded(7)), generation_timesteps(1000, seeded(7)))
    assert torch.equal(
        segmentation_timesteps(1000, generator=seeded(7)),
        segmentation_timesteps(1000, generator=seeded(7)),
    )
    assert not torch.equal(
        generation_timesteps(1000, seeded(7)), generation_timesteps(1000, seeded(8))
    )


def test_shift_a_equal_one_is_logit_normal():
    assert torch.equal(
        segmentation_timesteps(10_000, a=1.0, generator=seeded(3)),
        generation_timesteps(10_000, generator=seeded(3)),
    )


def test_shift_is_increasing_and_fixes_endpoints():
    t = torch.linspace(0, 1, 101)
    shifted = shift_timesteps(t, 0.05)
    assert shifted[0].item() == 0.0 and shifted[-1].item() == 1.0
    assert torch.all(shifted[1:] > shifted[:-1])
    assert torch.all(shifted >= t)  # pushes towards noise
    assert shift_timesteps(torch.tensor([0.5]), 0.05).item() == pytest.approx(20 / 21)


def test_zero_samples_and_bad_n():
    assert generation_timesteps(0).shape == (0,)
    with pytest.raises(InvalidInputError):
        generation_timesteps(-1)
    with pytest.raises(InputTypeError):
        segmentation_timesteps(2.5)


@pytest.mark.parametrize("a", [0.0, -0.1, 1.5, float("nan"), float("inf"), "0.05", True, None])
def test_bad_shift_a_raises_config_error(a):
    with pytest.raises(ConfigError, match="0 < a <= 1"):
        segmentation_timesteps(4, a=a)


# --- noising and loss --------------------------------------------------------------------------


def random_batch(shape=(3, 4, 2, 5), dtype=torch.float32, seed=0):
    g = seeded(seed)
    x0 = torch.randn(shape, generator=g, dtype=dtype)
    noise = torch.randn(shape, generator=g, dtype=dtype)
    t = torch.rand(shape[0], generator=g, dtype=dtype)
    return x0, noise, t


def test_add_noise_endpoints_and_broadcast():
    x0, noise, _ = random_batch()
    t = torch.tensor([0.0, 1.0, 0.25])
    x_t = add_noise(x0, noise, t)
    assert x_t.shape == x0.shape
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[1], noise[1])
    torch.testing.assert_close(x_t[2], 0.75 * x0[2] + 0.25 * noise[2])


def test_x0_from_velocity_inverts_add_noise_bit_exactly_on_dyadic_values():
    # Dyadic rationals (k / 2**m) make every product and sum exact in floating point.
    x0 = torch.tensor(
        [[1.5, -2.0, 0.25], [3.0, 0.5, -0.75], [-1.0, 2.5, 0.0]], dtype=torch.float64
    )
    noise = torch.tensor(
        [[0.5, 1.0, -1.5], [-2.0, 0.125, 1.0], [0.75, -0.25, 2.0]], dtype=torch.float64
    )
    t = torch.tensor([0.0, 0.5, 0.75], dtype=torch.float64)
    x_t = add_noise(x0, noise, t)
    assert torch.equal(x0_from_velocity(x_t, velocity_target(x0, noise), t), x0)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float64, 1e-13)])
def test_x0_from_velocity_inverts_add_noise_on_random_values(dtype, tolerance):
    x0, noise, t = random_batch(dtype=dtype)
    x_t = add_noise(x0, noise, t)
    recovered = x0_from_velocity(x_t, velocity_target(x0, noise), t)
    assert recovered.dtype == dtype
    torch.testing.assert_close(recovered, x0, atol=tolerance, rtol=0)


def test_velocity_is_time_derivative_of_x_t():
    x0, noise, _ = random_batch()
    t0, t1 = torch.full((3,), 0.3), torch.full((3,), 0.7)
    finite_difference = (add_noise(x0, noise, t1) - add_noise(x0, noise, t0)) / 0.4
    torch.testing.assert_close(finite_difference, velocity_target(x0, noise), atol=1e-5, rtol=0)


def test_loss_is_zero_for_exact_target_and_positive_otherwise():
    x0, noise, _ = random_batch()
    target = velocity_target(x0, noise)
    assert flow_matching_loss(target, x0, noise).item() == 0.0
    off = flow_matching_loss(target + 0.1, x0, noise)
    assert off.shape == () and off.item() == pytest.approx(0.01)
    assert flow_matching_loss(torch.zeros_like(x0), x0, noise).item() > 0.0


def test_loss_per_sample_weights():
    x0, noise, _ = random_batch()
    v_pred = velocity_target(x0, noise)
    v_pred[0] += 1.0  # sample 0 has squared error 1 everywhere, the others 0
    assert flow_matching_loss(v_pred, x0, noise).item() == pytest.approx(1 / 3)
    weight = torch.tensor([2.0, 5.0, 5.0])
    assert flow_matching_loss(v_pred, x0, noise, weight).item() == pytest.approx(2 / 3)
    assert flow_matching_loss(v_pred, x0, noise, torch.tensor([0.0, 1.0, 1.0])).item() == 0.0


def test_loss_is_differentiable_and_upcasts_low_precision():
    x0, noise, _ = random_batch(dtype=torch.bfloat16)
    v_pred = torch.zeros_like(x0, requires_grad=True)
    loss = flow_matching_loss(v_pred, x0, noise)
    assert loss.dtype == torch.float32
    loss.backward()
    assert v_pred.grad is not None and v_pred.grad.shape == x0.shape


def test_shape_errors():
    x0, noise, t = random_batch()
    with pytest.raises(InvalidInputError, match="same shape"):
        add_noise(x0, noise[:2], t)
    with pytest.raises(InvalidInputError, match=r"shape \[B\]"):
        add_noise(x0, noise, t[:2])
    with pytest.raises(InvalidInputError, match=r"shape \[B\]"):
        x0_from_velocity(x0, noise, t[:, None])
    with pytest.raises(InvalidInputError, match=r"shape \[B\]"):
        flow_matching_loss(x0, x0, noise, weight=torch.ones(2))
    with pytest.raises(InputTypeError):
        add_noise(x0.numpy(), noise, t)
