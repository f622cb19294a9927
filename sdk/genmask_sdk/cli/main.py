"""The ``genmask`` command line: ``segment``, ``build`` and ``info``.

This module only parses arguments and calls library functions (``Segmenter``,
``InstanceSegmenter``, ``runtime.manifest.read_manifest``, ``genmask_sdk.cli.build.main``); the subcommands live in ``segment.py``, ``info.py``
and ``build.py``. Exit codes:
0 success, 2 a user error -- bad usage or a GenMask error -- with one line on stderr and no
traceback.

``genmask segment IMAGE PROMPT...`` runs a GenMask model (text prompts); ``genmask segment IMAGE
--point X,Y [--negative X,Y] ...`` or ``--everything`` runs a gen2seg model (``InstanceSegmenter``).
Which one is chosen by those options and by the family of ``--checkpoint`` / ``--engines``
(``families.family_of``); a mismatch is a one-line error that says what to pass instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from genmask_sdk import __version__
from genmask_sdk.errors import GenMaskError, one_line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genmask", description="One-step generative segmentation: GenMask (text "
                                     "prompts) and gen2seg (points, everything).")
    parser.add_argument("--version", action="version", version=f"genmask-sdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log backend choices and loading steps")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = commands.add_parser(
        "segment", help="segment the object(s) named by PROMPT (GenMask) or picked by --point (gen2seg) in IMAGE",
        description="Segment IMAGE for each PROMPT with a GenMask model, or, with a gen2seg model, the object at "
                    "--point X,Y (several --point/--negative allowed) or every object (--everything); prints "
                    "timings, mask area and score.")
    seg.add_argument("image", metavar="IMAGE",
                     help="image file (PNG/JPEG; EXIF orientation honoured), or - to read it from standard input")
    seg.add_argument("prompts", metavar="PROMPT", nargs="*",
                     help='phrase such as "the red circle"; several allowed (GenMask models)')
    source = seg.add_mutually_exclusive_group()
    source.add_argument("--engines", metavar="DIR", help="engines directory written by 'genmask build'")
    source.add_argument("--checkpoint", metavar="NAME",
                        help="'demo', a checkpoint directory or, for gen2seg, a hub id such as reachomk/gen2seg-sd "
                             "(PyTorch backend)")
    seg.add_argument("--point", metavar="X,Y", action="append", default=[],
                     help="gen2seg: select the object at pixel X,Y of IMAGE (x right, y down); repeat for more")
    seg.add_argument("--negative", metavar="X,Y", action="append", default=[],
                     help="gen2seg: exclude the object at pixel X,Y (with --point); repeat for more")
    seg.add_argument("--everything", action="store_true",
                     help="gen2seg: find every object (a grid of point prompts, de-duplicated)")
    seg.add_argument("--grid", type=int, default=None, metavar="N",
                     help="with --everything: N x N grid points (default 16)")
    seg.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "openvino", "torch"],
                     help="with --engines (default: auto, the fastest available)")
    seg.add_argument("--precision", default=None, choices=["fp32", "fp16", "int8", "fp8", "int8-dynamic"],
                     help="with --engines: the set to run (default: with --backend auto on a CPU, the fastest faithful "
                          "CPU set of the build's timing, else fp32)")
    seg.add_argument("--device", default=None,
                     help="cpu, cuda or cuda:N (default: with --engines the first GPU if one is visible, else the "
                          "cpu; with --checkpoint the cpu)")
    seg.add_argument("--threads", type=int, default=None, metavar="N",
                     help="with --engines: CPU threads per graph (ONNX Runtime / OpenVINO; default: the runtime's)")
    seg.add_argument("--reason", action="store_true",
                     help="treat each PROMPT as an instruction: the VLM names its target first, then that phrase is "
                          "segmented (Qwen2.5-VL embedders only)")
    seg.add_argument("--out", metavar="PNG",
                     help="write an overlay of all masks on the image (gen2seg: the selected mask and its points, "
                          "or every instance in its own colour)")
    seg.add_argument("--json", action="store_true", help="print machine-readable results (with COCO RLE)")

    commands.add_parser("build", help="export and build engines (delegates to genmask_sdk.cli.build)",
                        add_help=False)

    info = commands.add_parser("info", help="summarise and verify an engines directory")
    info.add_argument("directory", metavar="DIR")
    info.add_argument("--no-verify", action="store_true", help="skip the sha256 checks")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build":
        return _build(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "segment" and not (args.prompts or args.point or args.negative or args.everything):
        _subparser(parser, "segment").error(  # exits 2, as argparse does for a missing argument
            "the following arguments are required: PROMPT (GenMask), or --point X,Y / --everything (gen2seg)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="genmask: %(message)s")
    try:
        if args.command == "segment":
            from genmask_sdk.cli.segment import segment

            code = segment(args)
        else:
            from genmask_sdk.cli.info import info

            code = info(args)
        sys.stdout.flush()  # a full disk or an unwritable stdout fails here, not at exit
        return code
    except GenMaskError as exc:
        print(f"genmask {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `genmask info ... | head`: the reader left; say nothing more
        _silence_stdout()
        return 0
    except OSError as exc:  # writing the results failed: /dev/full, a full disk, /proc
        if exc.filename is not None:  # a file the command was reading or writing: not about stdout
            raise
        _silence_stdout()
        print(f"genmask {args.command}: error: could not write the output ({exc.strerror or exc}); send it "
              "somewhere with room (or use --out / --json with a file).", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ngenmask {args.command}: interrupted.", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's exit-time flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    try:
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _build(argv: list[str]) -> int:
    try:
        from genmask_sdk.cli.build import main as export_main
    except ImportError as exc:
        if exc.name not in ("genmask_sdk.cli.build", "genmask_sdk.export"):
            raise
        print("genmask build: error: this installation has no engine builder (genmask_sdk.cli.build).",
              file=sys.stderr)
        return 2
    return int(export_main(argv, prog="genmask build") or 0)


if __name__ == "__main__":
    sys.exit(main())
