"""``TorchColorizer``: a loaded gen2seg model (SD or MAE) behind the colorizer interface that
``genmask_sdk.families.gen2seg.segmenter.InstanceSegmenter`` drives.

A colorizer has three methods:

    color_map(rgb)  (H, W, 3) uint8 RGB -> (H, W, 3) uint8 instance colouring at the same size
    describe()       dict: backend, precision, provider, device, variant, processing_size, ...
    close()          release the model

This one runs the PyTorch reference (``Gen2SegSD.colorize`` / ``Gen2SegMAE.colorize``, fp32). The
engines one lives in ``genmask_sdk.families.gen2seg.engines`` (``open_colorizer``) and imports no torch.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import torch

from genmask_sdk.errors import InputTypeError, InvalidInputError, InvalidStateError
from genmask_sdk.families.gen2seg.modeling.mae import Gen2SegMAE
from genmask_sdk.families.gen2seg.modeling.sd import Gen2SegSD


class TorchColorizer:
    """Wraps a ``Gen2SegSD`` or ``Gen2SegMAE`` (on its device, fp32)."""

    def __init__(self, model: Gen2SegSD | Gen2SegMAE) -> None:
        if not isinstance(model, (Gen2SegSD, Gen2SegMAE)):
            raise InputTypeError(f"TorchColorizer wraps a Gen2SegSD or Gen2SegMAE, got {type(model).__name__}.")
        self._model: Gen2SegSD | Gen2SegMAE | None = model.eval()
        self.config = model.config
        self.device = model.device

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device = "cpu",
                        local_files_only: bool = False) -> "TorchColorizer":
        """``load_gen2seg``: a hub id (``reachomk/gen2seg-sd``, ``reachomk/gen2seg-mae-h``) or a local directory."""
        from genmask_sdk.families.gen2seg.modeling.loading import load_gen2seg

        return cls(load_gen2seg(name_or_path, local_files_only=local_files_only, device=device))

    @property
    def model(self) -> Gen2SegSD | Gen2SegMAE:
        if self._model is None:
            raise InvalidStateError("this TorchColorizer was closed.")
        return self._model

    def color_map(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (H, W, 3) uint8 instance colour map at the same size (the model's
        own pre/post-processing: resize to its processing size, one step, min-max, back to H x W)."""
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputTypeError("color_map takes an (H, W, 3) uint8 RGB numpy array, got "
                                 f"{type(rgb).__name__} {getattr(rgb, 'dtype', '')} {getattr(rgb, 'shape', '')}.")
        if rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise InvalidInputError(f"the image is empty (shape {rgb.shape}).")
        with torch.inference_mode():
            colours = self.model.colorize(rgb)
        return np.ascontiguousarray(colours, dtype=np.uint8)

    def describe(self) -> dict[str, Any]:
        config = self.config
        versions = {"torch": torch.__version__}
        for name in ("diffusers", "transformers"):
            module = sys.modules.get(name)
            if module is not None:
                versions[name] = getattr(module, "__version__", None)
        return {"backend": "torch", "precision": "fp32", "provider": None, "device": str(self.device),
                "variant": config.variant, "processing_size": config.processing_size, "gamma": config.gamma,
                "timestep": config.timestep if config.variant == "sd" else None, "name": config.name,
                "files": {}, "fallbacks": [], "versions": versions}

    def close(self) -> None:
        """Drop the model (and, on a GPU, give its cached memory back)."""
        model, self._model = self._model, None
        if model is not None and self.device.type == "cuda":
            del model
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        state = "closed" if self._model is None else str(self.device)
        return f"TorchColorizer(gen2seg-{self.config.variant}, {state})"
