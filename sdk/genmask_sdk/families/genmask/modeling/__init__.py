"""GenMask model definitions (PyTorch reference). The names below import torch on first use, so the
torch-free segmenter can reach ``modeling.embedders.load_embedder`` without loading the model code."""

__all__ = ["GenMaskModel", "LinearProbeHead", "OneStepDiT", "wan_velocity"]

_LAZY = {"GenMaskModel": "model", "LinearProbeHead": "mask_head", "OneStepDiT": "wan_forward",
         "wan_velocity": "wan_forward"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
