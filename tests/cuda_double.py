"""A test double of ``cuda.bindings.runtime`` (cuda-python) that keeps "device memory" in host RAM.

Allocations are ctypes buffers whose addresses serve as device pointers, so copies really move bytes
and a fake TensorRT engine (``trt_double``) can compute on them. Every call returns
``(cudaError_t, *values)`` like cuda-python; ``fail={"cudaMalloc": "cudaErrorMemoryAllocation"}``
makes a call fail. Work queued on a stream runs at once, except while the stream is being captured
into a CUDA graph, when it is recorded and replayed by ``cudaGraphLaunch``. ``record`` tells what
happened: calls, live allocations, streams, captures.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's names
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInsufficientDriver = 35
    cudaErrorStreamCaptureUnsupported = 900
    cudaErrorStreamCaptureInvalidated = 901


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class cudaMemoryType(enum.IntEnum):  # noqa: N801
    cudaMemoryTypeUnregistered = 0
    cudaMemoryTypeHost = 1
    cudaMemoryTypeDevice = 2
    cudaMemoryTypeManaged = 3


class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


class cudaStream_t:  # noqa: N801
    def __init__(self, init: int = 0) -> None:
        self._ptr = int(init)

    def __int__(self) -> int:
        return self._ptr

    def __repr__(self) -> str:
        return f"<cudaStream_t {self._ptr:#x}>"


@dataclass
class CudaRecord:
    calls: list[tuple] = field(default_factory=list)
    live: dict[int, tuple[Any, int, int]] = field(default_factory=dict)  # address -> (buffer, nbytes, device)
    freed: list[int] = field(default_factory=list)
    streams: set[int] = field(default_factory=set)
    capturing: dict[int, list[Callable[[], None]]] = field(default_factory=dict)
    graphs_live: int = 0
    current_device: int = 0

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    def copies(self) -> list[str]:
        """Kinds of the memcpy calls, e.g. ['HostToDevice', 'DeviceToHost']."""
        return [c[4].name.removeprefix("cudaMemcpy") for c in self.calls if c[0] == "cudaMemcpyAsync"]


def make_fake_cudart(device_count: int = 1, fail: dict[str, str] | None = None) -> types.ModuleType:
    record = CudaRecord()
    failures = dict(fail or {})
    handles = itertools.count(0x1000, 0x10)
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.record = record
    rt.cudaError_t, rt.cudaMemcpyKind, rt.cudaMemoryType = cudaError_t, cudaMemcpyKind, cudaMemoryType
    rt.cudaStreamCaptureMode, rt.cudaStream_t, rt.cudaStreamNonBlocking = cudaStreamCaptureMode, cudaStream_t, 1

    def api(fn: Callable[..., tuple]) -> Callable[..., tuple]:
        """Record the call; fail it when asked; otherwise run it."""
        def wrapper(*args: Any) -> tuple:
            record.calls.append((fn.__name__, *args))
            if fn.__name__ in failures:
                err = cudaError_t[failures[fn.__name__]]
                arity = {"cudaMalloc": 1, "cudaStreamCreateWithFlags": 1, "cudaStreamEndCapture": 1,
                         "cudaGraphInstantiate": 1, "cudaPointerGetAttributes": 1}.get(fn.__name__, 0)
                return (err, *([None] * arity))
            return fn(*args)
        wrapper.__name__ = fn.__name__
        wrapper.__wrapped__ = fn  # inspect.signature shows fn's parameters
        setattr(rt, fn.__name__, wrapper)
        return wrapper

    def owner(address: int) -> tuple[int, int] | None:
        """(allocation base, device) of a device address, None for host memory."""
        for base, (_, nbytes, device) in record.live.items():
            if base <= address < base + max(nbytes, 1):
                return base, device
        return None

    def enqueue(stream: Any, work: Callable[[], None]) -> None:
        key = int(stream)
        if key in record.capturing:
            record.capturing[key].append(work)
        else:
            work()

    rt.enqueue, rt.owner = enqueue, owner

    def read(address: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        raw = ctypes.string_at(address, count * dtype.itemsize)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def write(address: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        ctypes.memmove(address, array.ctypes.data, array.nbytes)

    rt.read, rt.write = read, write

    @api
    def cudaGetDeviceCount():  # noqa: N802
        if device_count == 0:
            return (cudaError_t.cudaErrorNoDevice, None)
        return (cudaError_t.cudaSuccess, device_count)

    @api
    def cudaSetDevice(device):  # noqa: N802
        if not 0 <= int(device) < device_count:
            return (cudaError_t.cudaErrorInvalidDevice,)
        record.current_device = int(device)
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaMalloc(size):  # noqa: N802
        buffer = ctypes.create_string_buffer(int(size))
        address = ctypes.addressof(buffer)
        record.live[address] = (buffer, int(size), record.current_device)
        return (cudaError_t.cudaSuccess, address)

    @api
    def cudaFree(devPtr):  # noqa: N802, N803
        if int(devPtr) not in record.live:
            return (cudaError_t.cudaErrorInvalidValue,)
        del record.live[int(devPtr)]
        record.freed.append(int(devPtr))
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaMemcpyAsync(dst, src, count, kind, stream):  # noqa: N802
        dst, src = int(dst), int(src)
        device_side = {cudaMemcpyKind.cudaMemcpyHostToDevice: (dst,), cudaMemcpyKind.cudaMemcpyDeviceToHost: (src,),
                       cudaMemcpyKind.cudaMemcpyDeviceToDevice: (dst, src)}[kind]
        host_side = {cudaMemcpyKind.cudaMemcpyHostToDevice: (src,), cudaMemcpyKind.cudaMemcpyDeviceToHost: (dst,),
                     cudaMemcpyKind.cudaMemcpyDeviceToDevice: ()}[kind]
        if any(owner(a) is None or owner(a + count - 1) is None for a in device_side) or any(
                owner(a) is not None for a in host_side):
            return (cudaError_t.cudaErrorInvalidValue,)
        if int(stream) not in record.streams:
            return (cudaError_t.cudaErrorInvalidValue,)
        enqueue(stream, lambda: ctypes.memmove(dst, src, count))
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaPointerGetAttributes(ptr):  # noqa: N802
        attributes = types.SimpleNamespace(type=cudaMemoryType.cudaMemoryTypeUnregistered, device=-2)
        found = owner(int(ptr))
        if found is not None:
            attributes = types.SimpleNamespace(type=cudaMemoryType.cudaMemoryTypeDevice, device=found[1])
        return (cudaError_t.cudaSuccess, attributes)

    @api
    def cudaStreamCreateWithFlags(flags):  # noqa: N802
        stream = cudaStream_t(next(handles))
        record.streams.add(int(stream))
        return (cudaError_t.cudaSuccess, stream)

    @api
    def cudaStreamSynchronize(stream):  # noqa: N802
        if int(stream) in record.capturing:
            return (cudaError_t.cudaErrorStreamCaptureUnsupported,)
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaStreamDestroy(stream):  # noqa: N802
        record.streams.discard(int(stream))
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaDeviceSynchronize():  # noqa: N802
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaStreamBeginCapture(stream, mode):  # noqa: N802
        record.capturing[int(stream)] = []
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaStreamEndCapture(stream):  # noqa: N802
        work = record.capturing.pop(int(stream))
        return (cudaError_t.cudaSuccess, ("graph", tuple(work)))

    @api
    def cudaGraphInstantiate(graph, flags):  # noqa: N802
        record.graphs_live += 1
        return (cudaError_t.cudaSuccess, ("exec", graph[1]))

    @api
    def cudaGraphLaunch(graphExec, stream):  # noqa: N802, N803
        for work in graphExec[1]:
            enqueue(stream, work)
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaGraphExecDestroy(graphExec):  # noqa: N802, N803
        record.graphs_live -= 1
        return (cudaError_t.cudaSuccess,)

    @api
    def cudaGraphDestroy(graph):  # noqa: N802
        return (cudaError_t.cudaSuccess,)

    def cudaGetErrorName(error):  # noqa: N802
        return (cudaError_t.cudaSuccess, cudaError_t(error).name.encode())

    def cudaGetErrorString(error):  # noqa: N802
        return (cudaError_t.cudaSuccess, f"fake CUDA error {int(error)}".encode())

    rt.cudaGetErrorName, rt.cudaGetErrorString = cudaGetErrorName, cudaGetErrorString
    return rt
