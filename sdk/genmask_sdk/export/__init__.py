"""Export GenMask to ONNX (fp32 / fp16 / int8) and TensorRT plans, with a checked manifest.

Entry points: ``build_engines`` (library), ``genmask_sdk.cli.build.main`` (the command line of
``python export/build_engines.py`` and ``genmask build``), ``load_manifest`` / ``check_manifest``
(read an engines directory back). Submodules: ``options`` (build options and inputs),
``signatures`` (graph inputs/outputs, shape profiles), ``graphs`` (dynamo export), ``fp16``,
``int8``, ``calibration``, ``fidelity``, ``manifest``, ``staging``, ``pipeline``, ``uptodate``
(a rebuild with nothing to do), ``tensorrt_build`` / ``tensorrt_steps``.

Heavy imports (torch, onnx) happen on first use of ``build_engines``, and not at all when
``uptodate`` finds that the rebuild has nothing to do.
"""

from __future__ import annotations

from typing import Any

from genmask_sdk.export.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    check_manifest,
    checkpoint_sha256,
    load_manifest,
)

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Manifest", "build_engines", "check_manifest", "checkpoint_sha256",
           "load_manifest"]


def build_engines(*args: Any, **kwargs: Any):
    """See ``genmask_sdk.families.genmask.export.build.build_engines``."""
    from genmask_sdk.families.genmask.export.build import build_engines as build

    return build(*args, **kwargs)
