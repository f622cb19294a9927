"""CUDA device memory, streams and graphs through NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``).

The GPU runners use this instead of torch (extra ``gpu``: ``pip install 'genmask-sdk[gpu]'``). Every
CUDA call goes through :func:`call`, which checks its ``cudaError_t`` and raises :class:`CudaError`
naming the call and CUDA's own message. Functions take the bindings module as an argument (``rt``)
so tests can pass a double; production code gets the real one from :func:`import_cudart`.

Arrays are C-contiguous; shapes are tuples of ints; dtypes are numpy dtypes. Device addresses are
plain ints. Work is queued on :class:`Stream` objects and is asynchronous until synchronized.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

import numpy as np

from genmask_sdk.errors import BackendUnavailableError, InvalidInputError

INSTALL_HINT = (
    "Install it with pip install 'genmask-sdk[gpu]' (cuda-python), choosing the major version of your "
    "driver's CUDA: e.g. pip install 'cuda-python>=12,<13' on JetPack 6 (CUDA 12.6)."
)


class CudaError(BackendUnavailableError):
    """A CUDA runtime call returned an error code."""


def import_cudart() -> Any:
    """The ``cuda.bindings.runtime`` module (``cuda.cudart`` on cuda-python < 12.6)."""
    try:
        from cuda.bindings import runtime  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cudart as runtime  # type: ignore[import-not-found]
        except ImportError as exc:
            raise BackendUnavailableError(f"cuda-python is not installed ({exc}). {INSTALL_HINT}") from None
    return runtime


def call(rt: Any, name: str, *args: Any) -> Any:
    """``rt.<name>(*args)`` with its error code checked.

    cuda-python returns ``(cudaError_t, *values)``; this returns None, the one value, or a tuple.
    """
    result = getattr(rt, name)(*args)
    err, values = (result[0], tuple(result[1:])) if isinstance(result, tuple) else (result, ())
    if int(err) != 0:
        raise CudaError(
            f"CUDA {name} failed: {error_text(rt, err)}. Check the GPU and driver (nvidia-smi), free GPU memory, "
            "and run with CUDA_LAUNCH_BLOCKING=1 to locate asynchronous errors."
        )
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def error_text(rt: Any, err: Any) -> str:
    """``"cudaErrorMemoryAllocation (out of memory)"`` for an error code."""
    try:
        name = rt.cudaGetErrorName(err)[1]
        text = rt.cudaGetErrorString(err)[1]
        return f"{_text(name)} ({_text(text)})"
    except Exception:  # noqa: BLE001 - the message must not fail while reporting a failure
        return f"CUDA error {int(err)}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CudaDevice:
    """One GPU (``index``) seen through cuda-python: memory, copies, streams.

    ``activate()`` makes it current for the calling thread (CUDA's current device is per thread);
    every method that allocates or queues work calls it first.
    """

    def __init__(self, index: int = 0, rt: Any = None) -> None:
        self.rt = rt if rt is not None else import_cudart()
        self.index = int(index)
        count = device_count(self.rt)
        if count == 0:
            raise BackendUnavailableError(
                "no CUDA GPU is visible to cuda-python (cudaGetDeviceCount found none: no NVIDIA driver, a driver "
                "older than this cuda-python's CUDA, or CUDA_VISIBLE_DEVICES hides them). Use the CPU "
                "(device='cpu'), or match cuda-python to the driver (nvidia-smi shows its CUDA version)."
            )
        if not 0 <= self.index < count:
            raise BackendUnavailableError(
                f"cuda:{self.index} was requested but cuda-python sees {count} GPU(s); check CUDA_VISIBLE_DEVICES."
            )

    def __str__(self) -> str:
        return f"cuda:{self.index}"

    def activate(self) -> None:
        call(self.rt, "cudaSetDevice", self.index)

    def malloc(self, nbytes: int) -> int:
        self.activate()
        return int(call(self.rt, "cudaMalloc", max(int(nbytes), 1)))

    def copy(self, dst: int, src: int, nbytes: int, kind: str, stream: "Stream") -> None:
        """Queue a copy of ``nbytes`` on ``stream``; ``kind`` is ``"htod"``, ``"dtoh"`` or ``"dtod"``."""
        if nbytes == 0:
            return
        kinds = self.rt.cudaMemcpyKind
        member = {"htod": kinds.cudaMemcpyHostToDevice, "dtoh": kinds.cudaMemcpyDeviceToHost,
                  "dtod": kinds.cudaMemcpyDeviceToDevice}[kind]
        self.activate()
        call(self.rt, "cudaMemcpyAsync", dst, src, int(nbytes), member, stream.handle)

    def synchronize(self) -> None:
        self.activate()
        call(self.rt, "cudaDeviceSynchronize")

    def pointer_device(self, address: int) -> int | None:
        """The GPU ordinal that owns device memory at ``address``, or None if it is not device memory."""
        attributes = call(self.rt, "cudaPointerGetAttributes", address)
        device_type = getattr(self.rt.cudaMemoryType, "cudaMemoryTypeDevice", None)
        managed = getattr(self.rt.cudaMemoryType, "cudaMemoryTypeManaged", None)
        if attributes.type not in (device_type, managed):
            return None
        return int(attributes.device)


def device_count(rt: Any) -> int:
    """Visible GPUs; 0 when the driver is missing or too old (cudaGetDeviceCount fails)."""
    result = rt.cudaGetDeviceCount()
    return int(result[1]) if int(result[0]) == 0 else 0


class Stream:
    """A non-blocking CUDA stream on ``device``; ``handle`` is the ``cudaStream_t``, ``int(stream)``
    its address (what TensorRT's ``execute_async_v3`` takes)."""

    def __init__(self, device: CudaDevice) -> None:
        self.device = device
        device.activate()
        self.handle = call(device.rt, "cudaStreamCreateWithFlags", device.rt.cudaStreamNonBlocking)
        self._destroy = weakref.finalize(self, _destroy_stream, device.rt, self.handle)

    def __int__(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        call(self.device.rt, "cudaStreamSynchronize", self.handle)

    def destroy(self) -> None:
        self._destroy()


def _destroy_stream(rt: Any, handle: Any) -> None:
    try:
        rt.cudaStreamDestroy(handle)
    except Exception:  # noqa: BLE001 - at interpreter exit the bindings may be gone
        pass


class DeviceArray:
    """A C-contiguous array in device memory: ``shape``, ``dtype`` (numpy), ``ptr`` (device address).

    ``stream`` is where the work that writes it was queued: readers on another stream must wait for
    it (``stream.synchronize()``). Owned arrays free their memory when garbage-collected (or on
    ``free()``); views of another library's memory (``from_cuda_array_interface``) never free it.

    ``__cuda_array_interface__`` lets CuPy, Numba or torch use the memory in place, e.g.
    ``torch.as_tensor(array, device="cuda")``; synchronize ``stream`` first.
    """

    def __init__(self, device: CudaDevice, ptr: int, shape: tuple[int, ...], dtype: Any, stream: Stream,
                 owner: Any = None) -> None:
        self.device, self.ptr, self.stream = device, int(ptr), stream
        self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        self._owner = owner  # keeps the memory of a view alive (the object it came from)
        self._free = weakref.finalize(self, _free_memory, device, self.ptr) if owner is None else None

    @classmethod
    def empty(cls, device: CudaDevice, shape: tuple[int, ...], dtype: Any, stream: Stream) -> "DeviceArray":
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return cls(device, device.malloc(nbytes), shape, dtype, stream)

    @classmethod
    def from_numpy(cls, device: CudaDevice, array: np.ndarray, stream: Stream) -> "DeviceArray":
        """A new device copy of ``array`` (queued on ``stream``; ``array`` may be reused at once)."""
        array = np.ascontiguousarray(array)
        out = cls.empty(device, array.shape, array.dtype, stream)
        out.upload(array)
        return out

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def upload(self, array: np.ndarray) -> None:
        """Queue a host-to-device copy of ``array`` (same shape and dtype) into this memory."""
        array = np.ascontiguousarray(array)
        if array.shape != self.shape or array.dtype != self.dtype:
            raise InvalidInputError(f"cannot upload a {array.dtype}{array.shape} array into a "
                                    f"{self.dtype}{self.shape} device array.")
        self.device.copy(self.ptr, array.ctypes.data, self.nbytes, "htod", self.stream)

    def copy_from(self, source: "DeviceArray") -> None:
        """Queue a device-to-device copy of ``source`` (same nbytes) on this array's stream."""
        if source.nbytes != self.nbytes:
            raise InvalidInputError(f"cannot copy {source.nbytes} bytes into a {self.nbytes}-byte device array.")
        wait_for(source, self.stream)
        self.device.copy(self.ptr, source.ptr, self.nbytes, "dtod", self.stream)

    def to_numpy(self) -> np.ndarray:
        """A host copy (waits for this array's stream, then for the copy)."""
        out = np.empty(self.shape, self.dtype)
        self.device.copy(out.ctypes.data, self.ptr, self.nbytes, "dtoh", self.stream)
        self.stream.synchronize()
        return out

    def clone(self) -> "DeviceArray":
        """A new owned device copy (queued on the same stream)."""
        out = DeviceArray.empty(self.device, self.shape, self.dtype, self.stream)
        self.device.copy(out.ptr, self.ptr, self.nbytes, "dtod", self.stream)
        return out

    def repeat_batch(self, batch: int) -> "DeviceArray":
        """(1, ...) -> (batch, ...): ``batch`` device-to-device copies of the one row."""
        if not self.shape or self.shape[0] != 1:
            raise InvalidInputError(f"repeat_batch needs a leading axis of 1, got shape {self.shape}.")
        out = DeviceArray.empty(self.device, (batch, *self.shape[1:]), self.dtype, self.stream)
        for row in range(batch):
            self.device.copy(out.ptr + row * self.nbytes, self.ptr, self.nbytes, "dtod", self.stream)
        return out

    def free(self) -> None:
        if self._free is not None:
            self._free()

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "strides": None,
                "version": 3, "stream": int(self.stream) or None}

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, device={self.device})"


def _free_memory(device: CudaDevice, ptr: int) -> None:
    try:
        device.rt.cudaFree(ptr)
    except Exception:  # noqa: BLE001 - at interpreter exit the bindings may be gone
        pass


def wait_for(array: DeviceArray, stream: Stream) -> None:
    """Make work queued next on ``stream`` see ``array`` complete (a no-op on its own stream)."""
    if array.stream is not stream:
        array.stream.synchronize()


def from_cuda_array_interface(value: Any, device: CudaDevice, stream: Stream) -> DeviceArray:
    """A view of any object with ``__cuda_array_interface__`` (CuPy, Numba, torch CUDA tensors).

    The producer's pending work is waited for: the interface's ``stream`` (v3) when given, and for a
    torch tensor torch's current stream (torch is there, since the caller passed its tensor).
    Raises InvalidInputError for strided (non-contiguous) arrays and memory on another GPU.
    """
    interface = value.__cuda_array_interface__
    shape = tuple(int(d) for d in interface["shape"])
    dtype = np.dtype(interface["typestr"])
    ptr = int(interface["data"][0])
    strides = interface.get("strides")
    contiguous = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) * dtype.itemsize for i in range(len(shape)))
    if strides is not None and tuple(strides) != contiguous and int(np.prod(shape, dtype=np.int64)) > 1:
        raise InvalidInputError(f"a {type(value).__name__} with strides {tuple(strides)} is not C-contiguous; pass "
                                "a contiguous copy (tensor.contiguous(), cupy.ascontiguousarray).")
    if ptr:
        owner = device.pointer_device(ptr)
        if owner != device.index:
            where = "host memory" if owner is None else f"cuda:{owner}"
            raise InvalidInputError(f"a {type(value).__name__} in {where} was passed to a runner on {device}; move "
                                    f"it to {device} first (the runner never copies between devices).")
    producer = interface.get("stream")
    if producer is not None:
        call(device.rt, "cudaStreamSynchronize", device.rt.cudaStream_t(int(producer)))
    wait_for_torch_producer(value)
    return DeviceArray(device, ptr, shape, dtype, stream, owner=value)


def wait_for_torch_producer(value: Any) -> None:
    """For a torch CUDA tensor, wait for torch's current stream on its device (work that writes it may
    still be queued there). torch is taken from ``sys.modules``, never imported: a caller holding a
    tensor has loaded it already."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        torch.cuda.current_stream(value.device).synchronize()


class CudaGraph:
    """``enqueue()`` captured once from ``stream`` and instantiated; ``launch()`` replays it there.

    Whatever ``enqueue`` queues must read and write the same addresses on every launch (static
    buffers). A failed capture raises CudaError and leaves the stream out of capture mode.
    """

    def __init__(self, device: CudaDevice, stream: Stream, enqueue: Any) -> None:
        rt = device.rt
        self.device, self.stream = device, stream
        device.activate()
        call(rt, "cudaStreamBeginCapture", stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        try:
            enqueue()
        finally:
            graph = call(rt, "cudaStreamEndCapture", stream.handle)
        self._graph = graph
        try:
            self._exec = call(rt, "cudaGraphInstantiate", graph, 0)
        except CudaError:
            rt.cudaGraphDestroy(graph)
            raise
        self._finalize = weakref.finalize(self, _destroy_graph, rt, graph, self._exec)

    def launch(self) -> None:
        call(self.device.rt, "cudaGraphLaunch", self._exec, self.stream.handle)

    def destroy(self) -> None:
        self._finalize()


def _destroy_graph(rt: Any, graph: Any, graph_exec: Any) -> None:
    try:
        rt.cudaGraphExecDestroy(graph_exec)
        rt.cudaGraphDestroy(graph)
    except Exception:  # noqa: BLE001 - at interpreter exit the bindings may be gone
        pass
