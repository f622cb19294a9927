"""The ``genmask`` command line (argument parsing only; the work is the library's): ``main.py`` (the
parser and dispatch; the ``genmask`` entry point is ``genmask_sdk.cli.main:main``), ``segment.py``,
``info.py``, ``build.py`` (+ ``build_gen2seg.py``)."""
