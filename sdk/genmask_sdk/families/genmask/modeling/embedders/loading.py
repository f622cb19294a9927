"""Loading helpers shared by the PyTorch embedders."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_transformers_progress() -> Iterator[None]:
    """Hide transformers' per-load "Loading weights" bar while our loaders run; the user's setting is
    restored afterwards (``transformers.utils.logging`` progress-bar API, nothing patched)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
