"""GenMask model definitions (PyTorch reference)."""

from genmask_sdk.families.genmask.modeling.model import GenMaskModel
from genmask_sdk.families.genmask.modeling.mask_head import LinearProbeHead
from genmask_sdk.families.genmask.modeling.wan_forward import OneStepDiT, wan_velocity

__all__ = ["GenMaskModel", "LinearProbeHead", "OneStepDiT", "wan_velocity"]
