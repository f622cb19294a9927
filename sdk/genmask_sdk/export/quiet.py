"""Keep a build's output to what the user needs: known-harmless exporter chatter is hidden while
our exports run, and the loggers' levels are restored afterwards (nothing is patched)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

#: Loggers whose WARNING-level messages are expected and harmless during our exports:
#: "torchvision is not installed. Skipping torchvision::nms" (x4 per graph; we export no torchvision op)
#: and "Skipping constant folding for op Split with multiple outputs" (the optimizer leaves them as is).
CHATTY_LOGGERS = ("torch.onnx._internal.exporter._registration", "onnxscript.optimizer._constant_folding")


@contextmanager
def quiet_exporter_logs() -> Iterator[None]:
    """Raise the chatty exporter loggers to ERROR for the duration (errors still show)."""
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
