"""What a benchmark ran on: hardware, tool versions, the GEMM peak, and peak memory."""

from __future__ import annotations

import os
import platform
import re
import resource
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

#: CPU feature flags worth recording (they decide which int8 / bf16 kernels exist).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
#: Distributions whose versions every result records (None = not installed).
VERSIONED = ("torch", "diffusers", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript",
             "tensorrt", "numpy", "pycocotools", "matplotlib")
from genmask_sdk.runtime.hardware import cpu_model


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_info() -> dict[str, Any]:
    """CPU model, logical CPUs, usable CPUs (affinity), physical cores and ISA flags."""
    text = _read("/proc/cpuinfo")
    model = cpu_model()
    cores = {(p, c) for p, c in re.findall(r"^physical id\s*:\s*(\d+)\s*\ncore id\s*:\s*(\d+)", text, re.M)}
    if not cores:  # layouts where other keys sit between physical id and core id
        blocks = [dict(re.findall(r"^([^:\n]+?)\s*:\s*(.*)$", b, re.M)) for b in text.split("\n\n") if b.strip()]
        cores = {(b.get("physical id"), b.get("core id")) for b in blocks if "core id" in b}
    flags_line = next(iter(re.findall(r"^flags\s*:\s*(.+)$", text, re.M)), "")
    flags = set(flags_line.split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {"model": model, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "physical_cores": len(cores) or None, "flags": [f for f in CPU_FLAGS if f in flags],
            "machine": platform.machine()}


def memory_total_gib() -> float | None:
    match = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    return round(int(match.group(1)) / 2**20, 2) if match else None


def gpu_info() -> dict[str, Any] | None:
    """Name, compute capability, memory and CUDA version of the current GPU; None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {"name": props.name, "index": index, "compute_capability": [props.major, props.minor],
            "memory_gib": round(props.total_memory / 2**30, 2), "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda, "count": torch.cuda.device_count()}


def hardware() -> dict[str, Any]:
    """Everything about the machine a result depends on (CPU, memory, threads, GPU)."""
    import torch

    return {"cpu": cpu_info(), "memory_gib": memory_total_gib(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
                    if os.environ.get(k) is not None},
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "gpu": gpu_info()}


def versions() -> dict[str, Any]:
    """Versions of genmask-sdk and the tools (None = not installed), and ONNX Runtime's providers."""
    from genmask_sdk import __version__

    found: dict[str, Any] = {"genmask_sdk": __version__}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    try:
        import onnxruntime

        found["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        found["onnxruntime_providers"] = []
    return found


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_info()["flags"]))


def gemm_peak(dtype: str = "float32", n: int = 2048, device: str = "cpu", repeats: int = 5) -> dict[str, Any]:
    """Measured dense GEMM rate: the median over ``repeats`` of ``torch.matmul`` on n×n×n
    (2·n³ FLOPs), after two warm-up calls, in ``dtype`` on ``device``. The reference "peak" a
    benchmark compares against when no ``--peak-tflops`` is given."""
    import torch

    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=generator, device=device).to(torch_dtype)
    b = torch.randn(n, n, generator=generator, device=device).to(torch_dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    return {"dtype": dtype, "n": n, "device": device, "repeats": repeats, "seconds": median,
            "tflops": 2.0 * n**3 / median / 1e12, "method": f"torch.matmul {n}x{n}x{n} {dtype}, median of {repeats}"}


# ------------------------------------------------------------------------------ memory
def _status_kib(key: str) -> int | None:
    match = re.search(rf"^{key}:\s+(\d+) kB", _read("/proc/self/status"), re.M)
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: str = "cpu") -> Iterator[dict[str, Any]]:
    """Measure peak memory inside the block; the yielded dict is filled on exit with
    ``host_rss_start_mib``, ``host_peak_rss_mib`` and ``host_peak_method``, plus
    ``device_peak_allocated_mib`` (torch's allocator) and ``device_used_end_mib`` (whole GPU,
    all allocators: ONNX Runtime and TensorRT included) on CUDA.

    Host peak: the kernel's VmHWM after resetting it at block entry (exact for the block). When
    the reset is refused, ``ru_maxrss`` (peak over the whole process so far) is reported and the
    method says so.
    """
    import torch

    info: dict[str, Any] = {}
    start = _status_kib("VmRSS")
    resettable = _reset_peak_rss() and _status_kib("VmHWM") is not None
    cuda = device.startswith("cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    try:
        yield info
    finally:
        if resettable:
            peak, method = _status_kib("VmHWM"), "VmHWM (reset at start of this section)"
        else:
            peak, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss (whole process so far)"
        info["host_rss_start_mib"] = round(start / 1024, 1) if start is not None else None
        info["host_peak_rss_mib"] = round(peak / 1024, 1) if peak is not None else None
        info["host_peak_method"] = method
        if cuda:
            torch.cuda.synchronize()
            free, total = torch.cuda.mem_get_info()
            info["device_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            info["device_used_end_mib"] = round((total - free) / 2**20, 1)
