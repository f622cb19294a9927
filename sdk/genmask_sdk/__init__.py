"""genmask-sdk: GenMask referring segmentation on edge GPUs through ONNX and TensorRT."""

__version__ = "0.1.0"
