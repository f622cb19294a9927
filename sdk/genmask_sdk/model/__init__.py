"""GenMask model definitions (PyTorch reference)."""

from .genmask import GenMaskModel
from .mask_head import LinearProbeHead
from .wan_forward import OneStepDiT, wan_velocity

__all__ = ["GenMaskModel", "LinearProbeHead", "OneStepDiT", "wan_velocity"]
