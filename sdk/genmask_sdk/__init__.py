"""genmask-sdk: GenMask referring segmentation on edge GPUs through ONNX and TensorRT.

``from genmask_sdk import Segmenter, InstanceSegmenter, MaskResult``. They are imported on first
use, so importing the package (and ``genmask --help``) does not load torch.
"""

__version__ = "0.2.0"
__all__ = ["InstanceSegmenter", "MaskResult", "Segmenter", "Timings", "__version__"]

_LAZY = {"Segmenter": "segmenter", "InstanceSegmenter": "instance.segmenter", "MaskResult": "results",
         "Timings": "results"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
