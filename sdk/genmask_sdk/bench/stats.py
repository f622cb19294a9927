"""Timing loops and latency summaries (p50 / p90 / p99 over warmed-up runs, never one timing)."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

#: Percentiles every latency summary reports.
PERCENTILES = (50, 90, 99)


def time_calls(fn: Callable[[], Any], *, warmup: int, repeats: int, sync: Callable[[], None] | None = None,
               before: Callable[[], None] | None = None) -> tuple[list[float], Any]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; return (seconds per timed
    call, the last result).

    ``sync`` runs after each call inside the timed region (e.g. ``torch.cuda.synchronize``) so
    asynchronous devices are measured to completion. ``before`` runs before each call outside the
    timed region (e.g. clearing a prompt cache so every call does the full work).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    result = None
    for _ in range(max(0, warmup)):
        if before is not None:
            before()
        result = fn()
        if sync is not None:
            sync()
    seconds = []
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        result = fn()
        if sync is not None:
            sync()
        seconds.append(time.perf_counter() - start)
    return seconds, result


def summarize(seconds: Sequence[float]) -> dict[str, float | int]:
    """``{"n", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms"}`` of timed
    calls. Percentiles use linear interpolation between order statistics (numpy's default), so
    min <= p50 <= p90 <= p99 <= max always holds; with few samples p99 is close to the maximum."""
    if not len(seconds):
        raise ValueError("no timings to summarize")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
    return {"n": int(ms.size), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "mean_ms": float(ms.mean()),
            "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0, "min_ms": float(ms.min()),
            "max_ms": float(ms.max())}
