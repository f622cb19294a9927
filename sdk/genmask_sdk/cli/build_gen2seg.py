"""``genmask build`` / ``python export/build_engines.py`` for gen2seg checkpoints.

``cli/build.py``'s ``main`` asks ``gen2seg_main(args, prog)`` first: it answers None (the GenMask
build goes on, untouched) unless ``--checkpoint`` is a gen2seg checkpoint, decided without importing
torch (``is_gen2seg_checkpoint``), and then runs ``families/gen2seg/export/build.py``'s ``build_gen2seg_engines``.

Options that apply: ``--out``, ``--precisions`` (fp32,fp16,int8; fp8 is refused), ``--resolution``
(the SD processing size S), ``--max-batch``, ``--opset``, ``--tensorrt``, ``--workspace``,
``--force`` (rebuild an up-to-date directory), ``--no-progress``, ``--calib`` (INT8 calibration
images: ``demo``, ``random`` or a folder of images; no prompt file) and ``--calib-size``. The
GenMask-only ones (``--max-prompt-tokens``, ``--int8-keep-blocks``, ``--no-text-embedder``) are
refused with a one-line error (exit 2).
"""

from __future__ import annotations

import argparse
import sys

from genmask_sdk.errors import ConfigError, GenMaskError, one_line
from genmask_sdk.families.registry import (
    GEN2SEG,
    GEN2SEG_CONFIG_NAME as CONFIG_NAME,
    GEN2SEG_HUB_IDS as KNOWN_HUB_IDS,
    family_of,
)

__all__ = ["CONFIG_NAME", "KNOWN_HUB_IDS", "gen2seg_main", "is_gen2seg_checkpoint"]


def is_gen2seg_checkpoint(checkpoint: str) -> bool:
    """A gen2seg checkpoint name or directory (``families.family_of``: our config, the published
    layouts, a known hub id); never imports torch."""
    return family_of(checkpoint) == GEN2SEG


def gen2seg_main(args: argparse.Namespace, prog: str) -> int | None:
    """Build gen2seg engines for parsed ``build_engines`` arguments; None if not a gen2seg checkpoint."""
    if not is_gen2seg_checkpoint(args.checkpoint):
        return None
    try:
        refused = [flag for flag, value in (("--max-prompt-tokens", args.max_prompt_tokens),
                                            ("--int8-keep-blocks", args.int8_keep_blocks != 1),
                                            ("--no-text-embedder", args.no_text_embedder)) if value]
        if refused:
            raise ConfigError(f"{', '.join(refused)} apply to GenMask checkpoints only; {args.checkpoint} is gen2seg.")
        from genmask_sdk.cli.arguments import parse_precisions
        from genmask_sdk.families.gen2seg.export.build import PRECISIONS, build_gen2seg_engines  # torch, diffusers, onnx: seconds of imports

        precisions = parse_precisions(args.precisions, PRECISIONS)

        result = build_gen2seg_engines(args.checkpoint, args.out, precisions, size=args.resolution,
                                       progress=not args.no_progress, force=args.force, max_batch=args.max_batch,
                                       opset=args.opset, workspace_gib=args.workspace, calib=args.calib,
                                       calib_size=args.calib_size, tensorrt=args.tensorrt)
    except GenMaskError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    for precision, entry in result.manifest.data["sets"].items():
        plans = ", ".join((entry.get("tensorrt") or {}).values()) or "no TensorRT plans"
        print(f"{precision}: {', '.join(entry['onnx'].values())}; {plans}")
    return 0
