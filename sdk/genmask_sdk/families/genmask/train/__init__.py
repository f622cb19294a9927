"""Training utilities: rectified-flow timestep samplers, noising and the flow-matching loss."""

from genmask_sdk.families.genmask.train.losses import (
    add_noise,
    flow_matching_loss,
    velocity_target,
    x0_from_velocity,
)
from genmask_sdk.families.genmask.train.timesteps import (
    DEFAULT_SEGMENTATION_SHIFT_A,
    generation_timesteps,
    segmentation_timesteps,
    shift_timesteps,
)

__all__ = [
    "DEFAULT_SEGMENTATION_SHIFT_A",
    "add_noise",
    "flow_matching_loss",
    "generation_timesteps",
    "segmentation_timesteps",
    "shift_timesteps",
    "velocity_target",
    "x0_from_velocity",
]
