"""genmask-sdk: one-step generative segmentation (GenMask, gen2seg) on edge GPUs through ONNX and TensorRT.

The names below are the public API (internal module paths may change between 0.x releases)::

    from genmask_sdk import Segmenter, InstanceSegmenter, MaskResult, GenMaskConfig, PromptConfig

They are imported on first use, so importing the package (and ``genmask --help``) loads neither
torch nor a runtime. Names that need torch (``GenMaskModel``, the embedders, ``load_gen2seg``)
import it when first touched.
"""

__version__ = "0.3.0"

#: public name -> module (relative to this package) that defines it
_LAZY = {
    # segmenters and their results
    "Segmenter": "families.genmask.segmenter",
    "InstanceSegmenter": "families.gen2seg.segmenter",
    "MaskResult": "runtime.results",
    "Timings": "runtime.results",
    "instance_overlay": "families.gen2seg.segmenter",
    "instance_colors": "families.gen2seg.segmenter",
    # configs
    "GenMaskConfig": "families.genmask.config",
    "EmbedderSpec": "families.genmask.config",
    "Gen2SegConfig": "families.gen2seg.config",
    "PromptConfig": "families.gen2seg.prompts",
    # which family a checkpoint or engines directory is
    "family_of": "families.registry",
    # building engines
    "build_engines": "families.genmask.export.build",
    "build_gen2seg_engines": "families.gen2seg.export.build",
    # the PyTorch side (needs the 'export' extra)
    "GenMaskModel": "families.genmask.modeling.model",
    "MiniLMEmbedder": "families.genmask.modeling.embedders.minilm",
    "QwenVLEmbedder": "families.genmask.modeling.embedders.qwen",
    "load_gen2seg": "families.gen2seg.modeling.loading",
    # errors
    "GenMaskError": "errors",
    "InvalidInputError": "errors",
    "ConfigError": "errors",
    "ArtifactNotFoundError": "errors",
    "ArtifactMismatchError": "errors",
    "BackendUnavailableError": "errors",
    "InputTypeError": "errors",
    "InvalidStateError": "errors",
}
__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
