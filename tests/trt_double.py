"""A test double of the ``tensorrt`` Python module (10.x / 11.x attribute names).

It records what the code under test calls so tests can check the build recipe and the runner's
bindings; with a ``cuda_double`` module and a ``compute`` function its engines also execute on
the double's memory. ``make_fake_tensorrt(...)`` returns a module object; ``fake.record`` holds
the calls. Only used by tests, never by genmask_sdk.
"""

from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Record:
    network_flags: list[int] = field(default_factory=list)
    parsed_paths: list[str] = field(default_factory=list)
    flags_set: list[Any] = field(default_factory=list)
    pool_limits: dict[Any, int] = field(default_factory=dict)
    optimization_level: int | None = None
    profiles: list[dict[str, tuple]] = field(default_factory=list)
    timing_cache_inputs: list[bytes] = field(default_factory=list)
    progress_monitor: Any = None
    progress_events: list[tuple] = field(default_factory=list)
    builds: int = 0
    host_code_allowed: bool = False
    context_calls: list[tuple] = field(default_factory=list)


NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "BOOL": np.bool_,
         "UINT8": np.uint8, "INT64": np.int64}


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1


class NetworkDefinitionCreationFlag10(enum.IntEnum):
    EXPLICIT_BATCH = 0  # deprecated in 10.x, removed in 11.x
    STRONGLY_TYPED = 1


class NetworkDefinitionCreationFlag11(enum.IntEnum):
    STRONGLY_TYPED = 1


BuilderFlag10 = enum.Enum(
    "BuilderFlag", "FP16 INT8 BF16 FP8 REFIT VERSION_COMPATIBLE EXCLUDE_LEAN_RUNTIME DIRECT_IO"
)
BuilderFlag11 = enum.Enum("BuilderFlag", "REFIT VERSION_COMPATIBLE EXCLUDE_LEAN_RUNTIME DIRECT_IO")


def make_fake_tensorrt(
    version: str = "10.13.3.9",
    *,
    network_inputs: dict[str, tuple[int, ...]] | None = None,
    parser_errors: tuple[str, ...] = (),
    build_result: bytes | None = b"FAKE-PLAN",
    build_exception: Exception | None = None,
    engine_tensors: list[tuple[str, str, str, tuple[int, ...], tuple | None]] | None = None,
    with_progress_monitor: bool = True,
    timing_cache_rejects: bytes = b"OTHER-GPU",
    cudart: Any = None,
    compute: Any = None,
    execute_ok: bool = True,
) -> types.ModuleType:
    """Build a fake ``tensorrt`` module.

    ``network_inputs``: name -> shape the parser "finds" (-1 = dynamic). ``engine_tensors``:
    ``(name, "INPUT"|"OUTPUT", DataType name, shape, (min, opt, max) or None)`` of the engine that
    ``Runtime.deserialize_cuda_engine`` returns for ``build_result`` bytes (None for other bytes).
    A timing cache blob starting with ``timing_cache_rejects`` is refused by ``set_timing_cache``.

    With ``cudart`` (a ``cuda_double`` module) and ``compute`` (``{input: array} -> {output: array}``),
    ``execute_async_v3`` really runs: it reads the inputs at their bound addresses, computes, and writes
    the outputs at theirs, queued on the stream (so a CUDA graph capture records it). Dynamic output
    axes take the size of the first input's axis at the same position.
    """
    record = Record()
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.record = record
    trt.DataType, trt.TensorIOMode, trt.MemoryPoolType = DataType, TensorIOMode, MemoryPoolType
    trt.NetworkDefinitionCreationFlag = (
        NetworkDefinitionCreationFlag11 if major >= 11 else NetworkDefinitionCreationFlag10
    )
    trt.BuilderFlag = BuilderFlag11 if major >= 11 else BuilderFlag10
    inputs = dict(network_inputs if network_inputs is not None else {"x": (-1, 3)})

    class Logger:
        VERBOSE, INFO, WARNING, ERROR = "VERBOSE", "INFO", "WARNING", "ERROR"

        def __init__(self, min_severity: str = "WARNING") -> None:
            self.min_severity = min_severity

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self._inputs: list[ITensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

    class ParserError:
        def __init__(self, text: str) -> None:
            self.text = text

        def desc(self) -> str:
            return self.text

        def __str__(self) -> str:
            return f"In node 0 (parseGraph): INVALID_NODE: {self.text}"

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            assert isinstance(path, str), "parse_from_file takes a str path"
            record.parsed_paths.append(path)
            self.network._inputs = [ITensor(n, s) for n, s in inputs.items()]
            return not parser_errors

        @property
        def num_errors(self) -> int:
            return len(parser_errors)

        def get_error(self, index: int) -> ParserError:
            return ParserError(parser_errors[index])

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple] = {}

        def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class ITimingCache:
        def __init__(self, blob: bytes) -> None:
            self.blob = blob

        def serialize(self) -> bytes:
            return self.blob

    class IBuilderConfig:
        def __init__(self) -> None:
            self._cache: ITimingCache | None = None
            self._monitor: Any = None

        def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
            record.pool_limits[pool] = size

        @property
        def builder_optimization_level(self) -> int | None:
            return record.optimization_level

        @builder_optimization_level.setter
        def builder_optimization_level(self, level: int) -> None:
            record.optimization_level = level

        def set_flag(self, flag: Any) -> None:
            record.flags_set.append(flag)

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            record.profiles.append(dict(profile.shapes))
            return len(record.profiles) - 1

        def create_timing_cache(self, blob: bytes) -> ITimingCache:
            record.timing_cache_inputs.append(bytes(blob))
            return ITimingCache(bytes(blob))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            if timing_cache_rejects and cache.blob.startswith(timing_cache_rejects):
                return False
            self._cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self._cache

        @property
        def progress_monitor(self) -> Any:
            return self._monitor

        @progress_monitor.setter
        def progress_monitor(self, monitor: Any) -> None:
            record.progress_monitor = self._monitor = monitor

    class Builder:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            record.network_flags.append(flags)
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: Any, config: IBuilderConfig) -> bytes | None:
            record.builds += 1
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.phase_start("Tactic search", "Building engine", 3)
                for step in range(3):
                    record.progress_events.append(monitor.step_complete("Tactic search", step))
                monitor.phase_finish("Tactic search")
                record.progress_events.append(monitor.step_complete("Building engine", 0))
                monitor.phase_finish("Building engine")
            if build_exception is not None:
                raise build_exception
            if config._cache is not None:  # the build adds timings to the cache
                config._cache.blob += f"|timings{record.builds}".encode()
            return build_result

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            record.context_calls.append(("set_input_shape", name, tuple(shape)))
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            shape = self.engine._tensors[name][2]
            if name in self.shapes:
                return self.shapes[name]
            first = self.shapes.get(self.engine._order[0])
            if first is None:
                return shape
            return tuple(first[i] if d < 0 and i < len(first) else d for i, d in enumerate(shape))

        def set_tensor_address(self, name: str, address: int) -> bool:
            assert isinstance(address, int), "set_tensor_address takes an int address"
            record.context_calls.append(("set_tensor_address", name, address))
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert isinstance(stream_handle, int), "execute_async_v3 takes an int stream handle"
            record.context_calls.append(("execute_async_v3", stream_handle))
            if compute is not None and cudart is not None:
                tensors = self.engine._tensors
                bound = {n: (self.addresses[n], self.get_tensor_shape(n), NUMPY[tensors[n][1]]) for n in self.engine._order}

                def run() -> None:
                    feeds = {n: cudart.read(*bound[n]) for n in self.engine._order if tensors[n][0] == "INPUT"}
                    for name, value in compute(feeds).items():
                        cudart.write(bound[name][0], np.asarray(value, dtype=bound[name][2]).reshape(bound[name][1]))

                cudart.enqueue(stream_handle, run)
            return execute_ok

    class ICudaEngine:
        def __init__(self) -> None:
            specs = engine_tensors or [("x", "INPUT", "FLOAT", (-1, 3), ((1, 3), (2, 3), (4, 3)))]
            self._order = [s[0] for s in specs]
            self._tensors = {s[0]: (s[1], s[2], s[3], s[4]) for s in specs}

        @property
        def num_io_tensors(self) -> int:
            return len(self._order)

        def get_tensor_name(self, index: int) -> str:
            return self._order[index]

        def get_tensor_mode(self, name: str) -> TensorIOMode:
            return TensorIOMode[self._tensors[name][0]]

        def get_tensor_dtype(self, name: str) -> DataType:
            return DataType[self._tensors[name][1]]

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._tensors[name][2]

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
            assert profile_index == 0
            return list(self._tensors[name][3])

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
            record.host_code_allowed = self.engine_host_code_allowed
            return ICudaEngine() if build_result is not None and data == build_result else None

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    if with_progress_monitor:
        trt.IProgressMonitor = IProgressMonitor
    return trt
