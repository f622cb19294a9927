"""The ``genmask`` command line (argument parsing only; the work is the library's):
``main.py`` (the parser and dispatch), ``segment.py``, ``info.py``, ``build.py`` (+ ``build_gen2seg.py``)."""

from genmask_sdk.cli.main import main

__all__ = ["main"]
