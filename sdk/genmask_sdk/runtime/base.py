"""The runner interface shared by every backend (PyTorch, ONNX Runtime, TensorRT).

A runner serves one graph (``vae_encoder``, ``dit`` or ``mask_head``). It never builds anything:
it loads an artefact that the exporter wrote, runs it, and releases it. Modelled on Polygraphy's
runner lifecycle (load -> infer -> close, usable as a context manager).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from genmask_sdk.errors import GenMaskError


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one graph input or output.

    ``shape`` uses ``None`` for a dynamic axis (batch, prompt length); ``dtype`` is a numpy dtype
    name such as ``"float32"``, ``"float16"`` or ``"bool"``.
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TensorSpec":
        return cls(data["name"], data["dtype"], tuple(data["shape"]))


def is_torch_tensor(value: Any) -> bool:
    """A ``torch.Tensor``, recognised without importing torch (the runtime never requires it)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "data_ptr")


def host_array(value: Any) -> np.ndarray:
    """A numpy array on the host from what a runner or embedder returns: a numpy array (as is), a torch
    tensor, a genmask ``DeviceArray`` or an onnxruntime ``OrtValue`` (copied from the device)."""
    if isinstance(value, np.ndarray):
        return value
    if is_torch_tensor(value):
        return value.detach().cpu().numpy()
    for method in ("to_numpy", "numpy"):  # DeviceArray.to_numpy, OrtValue.numpy
        convert = getattr(value, method, None)
        if callable(convert):
            return np.asarray(convert())
    return np.asarray(value)


def shape_of(value: Any) -> tuple[int, ...]:
    """The shape of a numpy array, torch tensor, DeviceArray or OrtValue (whose ``shape`` is a method)."""
    shape = value.shape
    return tuple(int(d) for d in (shape() if callable(shape) else shape))


class RunnerClosedError(GenMaskError, RuntimeError):
    """``infer`` was called on a runner that is not loaded (never loaded, or closed)."""


class Runner(abc.ABC):
    """Load / infer / close. Subclasses implement the ``_*_impl`` methods.

    ``infer`` takes and returns a mapping of tensor name -> array. Which array type (numpy array or
    torch tensor, host or device) is documented per runner; outputs may reuse internal buffers, so a
    caller that keeps them across calls must copy them.
    """

    name: str = "runner"

    def __init__(self) -> None:
        self._loaded = False

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    def load(self) -> "Runner":
        if not self._loaded:
            self._load_impl()
            self._loaded = True
        return self

    def infer(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        if not self._loaded:
            raise RunnerClosedError(
                f"{self.name}: infer() called before load() or after close(); "
                "call load() or use the runner as a context manager ('with runner: ...')."
            )
        return self._infer_impl(feeds)

    def close(self) -> None:
        if self._loaded:
            self._close_impl()
            self._loaded = False

    def __enter__(self) -> "Runner":
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def _load_impl(self) -> None: ...

    @abc.abstractmethod
    def _infer_impl(self, feeds: Mapping[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _close_impl(self) -> None: ...
