"""Fidelity of exported graphs against the float32 PyTorch reference, the family-agnostic parts: the
per-precision tolerances, running a graph (ONNX Runtime CPU) or a plan (TensorRT), the max error and
mask IoU. Each family's recipe (which inputs each stage gets, what is compared) is in its
``export/`` folder (GenMask: ``families/genmask/export/fidelity.py``).

Tolerance: ``max_abs_error <= atol + rtol * max|reference|`` per precision (``TOLERANCES``);
non-finite outputs always fail. These bounds catch broken graphs (wrong weights, overflow), not
small accuracy losses; the tests and benchmarks hold the tighter, model-specific bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genmask_sdk.errors import ExportError

#: precision -> (atol, rtol) of the build-time check.
TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-3, 1e-3), "fp16": (5e-2, 5e-2), "int8": (0.25, 0.35),
                                               "fp8": (0.25, 0.35), "int8-dynamic": (0.25, 0.35)}


class FidelityError(ExportError):
    """An exported graph's output is too far from the PyTorch reference."""


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The single output of an ONNX graph under ONNX Runtime's CPU provider."""
    from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(path, provider="cpu") as runner:
        (out,) = runner.infer(feeds).values()
    return np.asarray(out, dtype=np.float32)


def run_plan(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The single output of a TensorRT plan on the current CUDA device (inputs copied to it)."""
    from genmask_sdk.runtime.tensorrt_runner import TensorRTRunner

    with TensorRTRunner(path) as runner:
        (out,) = runner.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()}).values()
        return out.to_numpy().astype(np.float32, copy=False)


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(diff.max()) if np.isfinite(diff).all() else float("inf")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks give 1.0 (as genmask_sdk.metrics)."""
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union
