"""Build a TensorRT plan (serialized engine) from an ONNX file, TensorRT 10.x and 11.x.

Follows NVIDIA's documented Python recipe: a STRONGLY_TYPED network (precision comes from the
ONNX graph: FP16 casts or Q/DQ nodes; no builder precision flags, which TensorRT 11 removed),
``parse_from_file`` (so external weights are found), one optimization profile for the dynamic
inputs, a timing cache that persists across builds, and ``build_serialized_network``.

Pass ``trt=`` a module object to use something other than the installed ``tensorrt`` (tests).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from genmask_sdk.errors import ArtifactNotFoundError, BackendUnavailableError, ConfigError
from genmask_sdk.runtime.shape_profiles import ShapeRange, format_profile_shapes, normalize_profiles
from genmask_sdk.runtime.trt_api import import_tensorrt, require_supported_tensorrt, shared_logger

DEFAULT_WORKSPACE_BYTES = 4 << 30


class PlanBuildError(BackendUnavailableError):
    """TensorRT could not turn the ONNX file into a plan (parser or builder failure)."""


@dataclass(frozen=True)
class TensorRTBuildConfig:
    """How to build one plan.

    Attributes:
        workspace_bytes: limit of TensorRT's scratch memory pool (``MemoryPoolType.WORKSPACE``).
        builder_optimization_level: 0..5; higher searches more tactics (slower build).
        profiles: input name -> (min, opt, max) shape, one entry per input with a dynamic axis.
        timing_cache: file read before and written after each build (shared by all builds on the
            same GPU + TensorRT version); ``None`` keeps the cache in memory only.
        version_compatible: set ``BuilderFlag.VERSION_COMPATIBLE`` so newer TensorRT runtimes can
            load the plan (load it with ``TensorRTRunner(..., version_compatible=True)``); such
            engines can be slower.
    """

    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    builder_optimization_level: int = 3
    profiles: Mapping[str, ShapeRange] = field(default_factory=dict, hash=False)
    timing_cache: Path | None = None
    version_compatible: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.workspace_bytes, int) or self.workspace_bytes <= 0:
            raise ConfigError(
                f"workspace_bytes must be a positive int, got {self.workspace_bytes!r}; "
                "e.g. 4 << 30 for 4 GiB (use less on 8 GB Jetsons)."
            )
        if self.builder_optimization_level not in range(6):
            raise ConfigError(
                f"builder_optimization_level must be 0..5, got {self.builder_optimization_level!r} "
                "(3 is TensorRT's default; 4-5 build slower and may run faster)."
            )
        object.__setattr__(self, "profiles", normalize_profiles(self.profiles))
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))


@dataclass(frozen=True)
class PlanInfo:
    """What a plan was built with; plans only load on the same TensorRT version and GPU arch.

    ``compute_capability`` is ``(major, minor)`` of the build GPU, e.g. ``(8, 7)`` for Orin.
    """

    plan_path: str
    tensorrt_version: str
    compute_capability: tuple[int, int] | None
    profiles: dict[str, ShapeRange]
    build_seconds: float
    version_compatible: bool

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capability"] = (
            list(self.compute_capability) if self.compute_capability else None
        )
        data["profiles"] = {k: [list(s) for s in v] for k, v in self.profiles.items()}
        return data


def tensorrt_available(trt: Any = None) -> tuple[bool, str]:
    """``(True, "TensorRT x on <gpu>")`` when plans can be built here, else ``(False, why)``."""
    try:
        trt = trt if trt is not None else import_tensorrt()
        version = require_supported_tensorrt(trt)
    except BackendUnavailableError as exc:
        return False, str(exc)
    import torch  # only once TensorRT is there: without it the answer needs no torch

    if not torch.cuda.is_available():
        return False, (
            f"TensorRT {version} is installed but torch sees no CUDA GPU (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}); install a CUDA build of torch "
            "and check nvidia-smi."
        )
    return True, f"TensorRT {version} on {torch.cuda.get_device_name()}"


def build_plan(
    onnx_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str],
    config: TensorRTBuildConfig,
    trt: Any = None,
    progress: bool = True,
    compute_capability: tuple[int, int] | None = None,
) -> PlanInfo:
    """Build ``onnx_path`` into a plan at ``plan_path`` (written atomically) and describe it.

    ``compute_capability`` is recorded only when torch sees no CUDA GPU (otherwise the current
    device's capability is used). Raises ArtifactNotFoundError (no ONNX), ConfigError (profiles),
    BackendUnavailableError (no/old TensorRT), PlanBuildError (parser or builder failure).
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise ArtifactNotFoundError(
            f"ONNX file {onnx_path} does not exist; export it first "
            "(python export/build_engines.py ...)."
        )
    trt = trt if trt is not None else import_tensorrt()
    version = require_supported_tensorrt(trt)
    logger = shared_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    _parse_onnx(parser, onnx_path, config, plan_path)

    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_bytes)
    builder_config.builder_optimization_level = config.builder_optimization_level
    if config.version_compatible:
        builder_config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    _add_optimization_profile(builder, builder_config, network, config.profiles)
    _load_timing_cache(builder_config, config.timing_cache)
    monitor = _attach_progress_monitor(trt, builder_config) if progress else None

    start = time.perf_counter()
    try:
        plan = builder.build_serialized_network(network, builder_config)
    finally:
        if monitor is not None:  # kept alive until here: TensorRT calls it during the build
            monitor.close_all()
    build_seconds = time.perf_counter() - start
    if plan is None:
        raise PlanBuildError(
            f"TensorRT {version} failed to build {onnx_path} (build_serialized_network returned "
            "None; the reason is in the TensorRT log above). Common causes: workspace too small "
            f"(now {config.workspace_bytes >> 20} MiB; raise workspace_bytes), an op or dtype this "
            "TensorRT does not support, or profile shapes the graph cannot take. Reproduce with "
            f"more detail: {trtexec_command(onnx_path, plan_path, config)} --verbose"
        )
    if config.timing_cache is not None:
        _write_atomically(config.timing_cache, builder_config.get_timing_cache().serialize())
    _write_atomically(plan_path, plan)
    return PlanInfo(
        plan_path=str(plan_path),
        tensorrt_version=str(version),
        compute_capability=_build_gpu_capability(compute_capability),
        profiles=dict(config.profiles),
        build_seconds=build_seconds,
        version_compatible=config.version_compatible,
    )


def trtexec_command(
    onnx_path: str | os.PathLike[str],
    plan_path: str | os.PathLike[str],
    config: TensorRTBuildConfig,
) -> str:
    """The trtexec command line that builds the same plan, for users debugging a build."""
    args = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={plan_path}",
        "--stronglyTyped",
        f"--memPoolSize=workspace:{-(-config.workspace_bytes // (1 << 20))}M",
        f"--builderOptimizationLevel={config.builder_optimization_level}",
    ]
    if config.profiles:
        for flag, which in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            args.append(f"{flag}={format_profile_shapes(config.profiles, which)}")
    if config.timing_cache is not None:
        args.append(f"--timingCacheFile={config.timing_cache}")
    if config.version_compatible:
        args.append("--versionCompatible")
    return shlex.join(args)


def _parse_onnx(parser: Any, onnx_path: Path, config: TensorRTBuildConfig, plan_path: Path) -> None:
    """``parser.parse_from_file``; every parser error goes into one PlanBuildError."""
    ok = parser.parse_from_file(str(onnx_path))
    errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if ok and not errors:
        return
    listed = (
        "\n".join(f"  [{i}] {e}" for i, e in enumerate(errors)) or "  (the parser gave no detail)"
    )
    raise PlanBuildError(
        f"The TensorRT ONNX parser rejected {onnx_path} with {len(errors)} error(s):\n{listed}\n"
        "Fixes: export at opset 17-20, run onnxslim/onnxsim, check the ops against the TensorRT "
        "ONNX support matrix, and keep external weight files next to the .onnx. Reproduce with: "
        f"{trtexec_command(onnx_path, plan_path, config)} --verbose"
    )


def _network_inputs(network: Any) -> dict[str, tuple[int, ...]]:
    """Input name -> shape as parsed (``-1`` marks a dynamic axis)."""
    inputs = (network.get_input(i) for i in range(network.num_inputs))
    return {t.name: tuple(int(d) for d in t.shape) for t in inputs}


def _add_optimization_profile(
    builder: Any, builder_config: Any, network: Any, profiles: Mapping[str, ShapeRange]
) -> None:
    """Check ``profiles`` against the network inputs and add them as one optimization profile."""
    inputs = _network_inputs(network)
    unknown = sorted(set(profiles) - set(inputs))
    if unknown:
        raise ConfigError(
            f"Profiles given for {unknown}, which are not inputs of the network (inputs: "
            f"{sorted(inputs)}); fix the names in TensorRTBuildConfig.profiles."
        )
    dynamic = [name for name, shape in inputs.items() if any(d < 0 for d in shape)]
    missing = [name for name in dynamic if name not in profiles]
    if missing:
        raise ConfigError(
            "These inputs have dynamic axes but no (min, opt, max) profile: "
            + ", ".join(f"{n} {inputs[n]}" for n in missing)
            + f". Add them to TensorRTBuildConfig.profiles, e.g. {{'{missing[0]}': (min, opt, "
            "max)}."
        )
    for name, shapes in profiles.items():
        _check_profile_fits_input(name, inputs[name], shapes)
    if not profiles:
        return
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    if builder_config.add_optimization_profile(profile) < 0:
        raise ConfigError(
            f"TensorRT rejected the optimization profile {dict(profiles)}; see the TensorRT log "
            "above for the offending input."
        )


def _check_profile_fits_input(name: str, shape: tuple[int, ...], shapes: ShapeRange) -> None:
    if len(shapes[0]) != len(shape):
        raise ConfigError(
            f"Profile for input '{name}' has rank {len(shapes[0])} but the input has shape {shape} "
            f"(rank {len(shape)}); give shapes of rank {len(shape)}."
        )
    for axis, dim in enumerate(shape):
        if dim >= 0 and any(s[axis] != dim for s in shapes):
            raise ConfigError(
                f"Profile for input '{name}' sets axis {axis} to min/opt/max "
                f"{tuple(s[axis] for s in shapes)}, but that axis is fixed at {dim} in the ONNX "
                f"input shape {shape}; use {dim} there (or export the axis as dynamic)."
            )


def _load_timing_cache(builder_config: Any, path: Path | None) -> None:
    """Start from the cache file when it exists; an unusable cache is replaced by a fresh one."""
    blob = path.read_bytes() if path is not None and path.is_file() else b""
    cache = builder_config.create_timing_cache(blob)
    if builder_config.set_timing_cache(cache, False):
        return
    warnings.warn(
        f"Timing cache {path} was made for another GPU or TensorRT version; starting a new one "
        "(it will overwrite that file after the build).",
        stacklevel=3,
    )
    builder_config.set_timing_cache(builder_config.create_timing_cache(b""), False)


def _attach_progress_monitor(trt: Any, builder_config: Any) -> Any:
    """Set a tqdm ``IProgressMonitor`` when this TensorRT has one; return it (keep it alive)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm.auto import tqdm

    class TqdmProgressMonitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        """One tqdm bar per build phase, nested by parent phase. Callbacks never raise."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, Any] = {}
            self._depth: dict[str, int] = {}
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                with contextlib.suppress(Exception):  # a broken bar must not abort the build
                    depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
                    self._depth[phase_name] = depth
                    self._bars[phase_name] = tqdm(
                        total=num_steps, desc=phase_name, position=depth, leave=depth == 0
                    )

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock, contextlib.suppress(Exception):
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock, contextlib.suppress(Exception):
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

        def close_all(self) -> None:
            """Close bars of phases left open (a failed build does not finish its phases)."""
            with self._lock:
                for bar in self._bars.values():
                    bar.close()
                self._bars.clear()

    monitor = TqdmProgressMonitor()
    builder_config.progress_monitor = monitor
    return monitor


def _build_gpu_capability(given: tuple[int, int] | None) -> tuple[int, int] | None:
    import torch

    if torch.cuda.is_available():
        return tuple(torch.cuda.get_device_capability())  # type: ignore[return-value]
    return tuple(given) if given is not None else None  # type: ignore[return-value]


def _write_atomically(path: Path, data: Any) -> None:
    """Write bytes-like ``data`` (bytes or ``trt.IHostMemory``) to a temp file, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
