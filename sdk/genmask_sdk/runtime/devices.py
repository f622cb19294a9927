"""Devices without torch: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, and how many GPUs are visible.

GPUs are counted through NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``, extra ``gpu``) when it
is installed, else through torch when torch is *already imported* by the application (never
imported here); with neither, no GPU is visible and ``device=None`` means the CPU, with the reason.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from genmask_sdk.errors import BackendUnavailableError, ConfigError


@dataclass(frozen=True)
class Device:
    """``type`` ``"cpu"`` or ``"cuda"``; ``index`` the GPU ordinal (None on the CPU)."""

    type: str
    index: int | None = None

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


def cuda_device_count() -> tuple[int, str]:
    """(visible CUDA GPUs, how that was found)."""
    from genmask_sdk.runtime import cuda

    try:
        cudart = cuda.import_cudart()
    except BackendUnavailableError:
        cudart = None
    if cudart is not None:
        return cuda.device_count(cudart), "cuda-python"
    torch = sys.modules.get("torch")
    if torch is not None:
        return (torch.cuda.device_count() if torch.cuda.is_available() else 0), "torch"
    return 0, "neither cuda-python (pip install 'genmask-sdk[gpu]') nor an imported torch"


def parse_device(device) -> Device:
    """``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` / a ``Device`` / a ``torch.device`` -> ``Device``."""
    if isinstance(device, Device):
        return device
    text = str(device) if device is not None else ""
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}.")
    return Device(kind, int(index) if index else (0 if kind == "cuda" else None))


def resolve_device(device) -> tuple[Device, str | None]:
    """``None`` -> the first GPU if one is visible, else the CPU (with the reason); an explicit
    ``cuda`` without a visible GPU raises BackendUnavailableError."""
    count, source = cuda_device_count()
    if device is None:
        if count:
            return Device("cuda", 0), None
        return Device("cpu"), f"device=None: no CUDA GPU is visible (checked with {source}), so the CPU is used"
    resolved = parse_device(device)
    if resolved.type == "cpu":
        return resolved, None
    if count == 0:
        raise BackendUnavailableError(
            f"device={str(device)!r} was requested but no CUDA GPU is visible (checked with {source}). Use "
            "device='cpu', or run on a machine with an NVIDIA GPU and its driver."
        )
    if resolved.index >= count:
        raise BackendUnavailableError(f"device={str(device)!r} but only {count} GPU(s) are visible.")
    return resolved, None
