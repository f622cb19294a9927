"""What machine this is, as every part of the SDK reports it (build manifests, segmenters, training
summaries, benchmarks). numpy-free and torch-free."""

from __future__ import annotations

import platform
import re
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere), or ``"unknown"``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    found = re.findall(r"^model name\s*:\s*(.+)$", text, re.M)
    return (found[0].strip() if found else platform.processor()) or "unknown"
