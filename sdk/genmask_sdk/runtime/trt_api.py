"""Thin helpers around the ``tensorrt`` Python module (TensorRT 10.x and 11.x).

Everything here takes the module as an argument so tests can pass a test double; production code
passes ``None`` and gets the real module from :func:`import_tensorrt`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from packaging.version import InvalidVersion, Version

from genmask_sdk.errors import BackendUnavailableError

MIN_TENSORRT = Version("10.0")
INSTALL_HINT = (
    "Install it on a machine with an NVIDIA GPU: pip install 'genmask-sdk[gpu]' (or pip install "
    "tensorrt); on Jetson use the TensorRT that ships with JetPack."
)

# TensorRT DataType member name -> numpy dtype name of its buffers. BF16 and FP8 have no numpy dtype:
# engines with such I/O are refused (the exporter keeps graph I/O in float32). Members missing from a
# TRT build are simply unused.
_NUMPY_DTYPES: dict[str, str] = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


def import_tensorrt() -> ModuleType:
    """Import and return ``tensorrt``; raise BackendUnavailableError when it is not installed."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError as exc:
        raise BackendUnavailableError(
            f"The 'tensorrt' Python package is not installed ({exc}). {INSTALL_HINT}"
        ) from None
    return tensorrt


def tensorrt_version(trt: Any) -> Version:
    """``trt.__version__`` parsed, e.g. Version('10.13.3.9')."""
    try:
        return Version(str(trt.__version__))
    except (AttributeError, InvalidVersion) as exc:
        raise BackendUnavailableError(
            f"Could not read the TensorRT version ({exc}); reinstall the tensorrt package."
        ) from None


def require_supported_tensorrt(trt: Any) -> Version:
    """Return the TensorRT version, or raise BackendUnavailableError for TensorRT < 10.0.

    genmask-sdk relies on the 10.x API (strongly typed networks, ``execute_async_v3``,
    name-based tensor addresses); 8.x/9.x lack it.
    """
    version = tensorrt_version(trt)
    if version < MIN_TENSORRT:
        raise BackendUnavailableError(
            f"TensorRT {version} is too old: genmask-sdk needs TensorRT >= {MIN_TENSORRT} "
            "(strongly typed networks, execute_async_v3). Upgrade with pip install -U tensorrt, or "
            "on Jetson flash JetPack 6.1+ (TensorRT 10.3)."
        )
    return version


_LOGGERS: dict[int, tuple[Any, Any]] = {}  # id(module) -> (module, logger); module kept alive


def shared_logger(trt: Any) -> Any:
    """One ``trt.Logger(WARNING)`` per module object.

    TensorRT keeps the first logger it sees per process and warns when later builders/runtimes
    bring a different one, so all genmask-sdk code shares this one.
    """
    entry = _LOGGERS.get(id(trt))
    if entry is None or entry[0] is not trt:
        entry = _LOGGERS[id(trt)] = (trt, trt.Logger(trt.Logger.WARNING))
    return entry[1]


def numpy_dtype_of(trt_dtype: Any) -> str:
    """Map a ``trt.DataType`` member to the numpy dtype name of its buffers (``"float32"``, ...)."""
    name = getattr(trt_dtype, "name", str(trt_dtype).split(".")[-1])
    if name not in _NUMPY_DTYPES:
        raise BackendUnavailableError(
            f"Engine I/O tensor has TensorRT dtype {name}, which genmask-sdk cannot bind to a numpy-typed "
            f"buffer (supported: {sorted(_NUMPY_DTYPES)}). Re-export the ONNX with I/O in one of these types "
            "(keep_io_types=True when converting to FP16/INT8)."
        )
    return _NUMPY_DTYPES[name]


def dtype_name(dtype: Any) -> str:
    """``torch.float16`` / ``np.float16`` / ``"float16"`` -> ``"float16"`` (the numpy name used by TensorSpec)."""
    return str(dtype).removeprefix("torch.")
