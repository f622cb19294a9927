"""The ``genmask`` command line: ``segment``, ``build`` and ``info``.

This module only parses arguments and calls library functions (``Segmenter``,
``InstanceSegmenter``, ``engine_dir.read_manifest``, ``genmask_sdk.cli.build.main``). Exit codes:
0 success, 2 a user error -- bad usage or a GenMask error -- with one line on stderr and no
traceback.

``genmask segment IMAGE PROMPT...`` runs a GenMask model (text prompts); ``genmask segment IMAGE
--point X,Y [--negative X,Y] ...`` or ``--everything`` runs a gen2seg model (``InstanceSegmenter``).
Which one is chosen by those options and by the family of ``--checkpoint`` / ``--engines``
(``families.family_of``); a mismatch is a one-line error that says what to pass instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from genmask_sdk import __version__
from genmask_sdk.errors import GenMaskError, one_line

OVERLAY_COLORS = [(0, 160, 255), (255, 200, 0), (0, 220, 120), (255, 80, 200), (160, 90, 255)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genmask", description="GenMask text-prompted segmentation.")
    parser.add_argument("--version", action="version", version=f"genmask-sdk {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log backend choices and loading steps")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = commands.add_parser(
        "segment", help="segment the object(s) named by PROMPT (GenMask) or picked by --point (gen2seg) in IMAGE",
        description="Segment IMAGE for each PROMPT with a GenMask model, or, with a gen2seg model, the object at "
                    "--point X,Y (several --point/--negative allowed) or every object (--everything); prints "
                    "timings, mask area and score.")
    seg.add_argument("image", metavar="IMAGE", help="image file (PNG/JPEG; EXIF orientation honoured)")
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
    seg.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
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
        return _segment(args) if args.command == "segment" else _info(args)
    except GenMaskError as exc:
        print(f"genmask {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `genmask info ... | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


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


def overlay_target(out: str) -> tuple[Path, str]:
    """(path, PIL format) for ``--out``, checked before any work: a writable file whose extension names
    an image format (``.png``, ``.jpg``, ...). Raises InvalidInputError otherwise."""
    from PIL import Image

    from genmask_sdk.errors import InvalidInputError

    path = Path(out)
    if path.is_dir():
        raise InvalidInputError(f"--out {out} is a directory; pass a file name such as {path / 'overlay.png'}.")
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise InvalidInputError(f"--out {out}: the extension {path.suffix or '(none)'!r} names no image format "
                                "Pillow can write; use .png or .jpg.")
    folder = path.parent
    if not folder.is_dir():
        raise InvalidInputError(f"--out {out}: the folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise InvalidInputError(f"--out {out}: the folder {folder} is not writable; choose another place.")
    return path, image_format


def _segment(args: argparse.Namespace) -> int:
    from genmask_sdk.families.registry import GEN2SEG, family_of

    target = overlay_target(args.out) if args.out else None
    source = args.engines or args.checkpoint
    family = family_of(source) if source else None
    if args.point or args.negative or args.everything or family == GEN2SEG:
        return _segment_instances(args, target, source, family)
    from genmask_sdk.families.genmask.segmenter import Segmenter

    if not args.verbose and "transformers" in sys.modules:  # a PyTorch embedder was loaded: no bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    segmenter = _open_segmenter(Segmenter, args, "demo")
    if segmenter is None:
        return 2
    with segmenter:
        results = segmenter.predict(args.image, list(args.prompts), reason=args.reason)
        described = segmenter.describe()
    overlay = None
    if target is not None:
        from genmask_sdk.io import atomic_path

        for i, result in enumerate(results):
            overlay = result.overlay(overlay, color=OVERLAY_COLORS[i % len(OVERLAY_COLORS)])
        path, image_format = target
        with atomic_path(path) as tmp:
            overlay.convert("RGB").save(tmp, format=image_format)
    if args.json:
        payload = {"image": args.image, "size": list(results[0].size),
                   "backend": {k: described[k] for k in ("backend", "precision", "provider", "device", "source")},
                   "results": [r.to_dict() for r in results], "overlay": args.out}
        print(json.dumps(payload, indent=2))
        return 0
    print(f"{described['backend']} {described['precision']} on {described['device']} "
          f"({described['source']['path'] or 'in-memory model'})")
    height, width = results[0].size
    for result in results:
        share = 100.0 * result.area / (height * width)
        named = f" -> {result.phrase!r}" if result.phrase != result.prompt else ""
        if not result.found:
            print(f"{result.prompt!r}{named}: nothing found (empty mask)")
            continue
        print(f"{result.prompt!r}{named}: area {result.area} px ({share:.1f}% of {width}x{height}), score {result.score:.3f}")
    print(f"timings ({len(results)} prompt(s), one call): {results[0].timings}")
    if args.out:
        print(f"overlay written to {args.out}")
    return 0


def _segment_instances(args: argparse.Namespace, target: tuple[Path, str] | None, source: str | None,
                       family: str | None) -> int:
    """``genmask segment IMAGE --point X,Y ... | --everything`` with a gen2seg model."""
    from genmask_sdk.errors import InvalidInputError
    from genmask_sdk.families.registry import GEN2SEG, GEN2SEG_DEMO, GENMASK

    if args.prompts:
        if family == GEN2SEG:
            raise InvalidInputError(f"{source} is a gen2seg model: it selects objects by points, not phrases "
                                    f"({args.prompts[0]!r}); use --point X,Y (--negative X,Y to exclude) or --everything.")
        raise InvalidInputError("PROMPT phrases and --point/--negative/--everything cannot be combined: phrases need a "
                                "GenMask model, points a gen2seg one.")
    if family == GENMASK:
        raise InvalidInputError(f"{source} is a GenMask model: it segments PROMPT phrases, not --point/--everything; "
                                "give phrases (genmask segment IMAGE 'the red circle' ...) or a gen2seg checkpoint.")
    if args.everything and (args.point or args.negative):
        raise InvalidInputError("--everything finds every object; it cannot be combined with --point/--negative.")
    if args.negative and not args.point:
        raise InvalidInputError("--negative X,Y excludes an object from a selection: give at least one --point X,Y.")
    if args.grid is not None and not args.everything:
        raise InvalidInputError("--grid sets the point grid of --everything; add --everything or drop --grid.")
    if args.reason:
        raise InvalidInputError("--reason needs a GenMask model with a Qwen2.5-VL embedder; gen2seg takes points.")
    points = [_xy(text, "--point") for text in args.point] + [_xy(text, "--negative") for text in args.negative]
    labels = [1] * len(args.point) + [0] * len(args.negative)
    options = {"grid": args.grid} if args.grid is not None else {}
    from genmask_sdk.families.gen2seg.segmenter import InstanceSegmenter, instance_overlay

    segmenter = _open_segmenter(InstanceSegmenter, args, GEN2SEG_DEMO)
    if segmenter is None:
        return 2
    with segmenter:
        if args.everything:
            results = segmenter.segment_everything(args.image, **options)
        else:
            results = [segmenter.predict(args.image, points=points, labels=labels)]
        described = segmenter.describe()
    if results:
        size = results[0].size
    else:  # nothing found: the size (and the overlay's background) from the image itself
        from genmask_sdk.runtime.imaging import load_image

        size = load_image(args.image).shape[:2]
    if target is not None:
        from genmask_sdk.io import atomic_path

        overlay = instance_overlay(results, image=None if results else args.image)
        path, image_format = target
        with atomic_path(path) as tmp:
            overlay.convert("RGB").save(tmp, format=image_format)
    mode = "everything" if args.everything else "points"
    if args.json:
        payload = {"image": args.image, "size": list(size), "family": "gen2seg", "variant": described["variant"],
                   "mode": mode,
                   "backend": {k: described[k] for k in ("backend", "precision", "provider", "device", "source")},
                   "results": [r.to_dict() for r in results], "overlay": args.out}
        print(json.dumps(payload, indent=2))
        return 0
    variant = f"gen2seg-{described['variant']}" if described.get("variant") else "gen2seg"
    print(f"{variant}: {described['backend']} {described['precision']} on {described['device']} "
          f"({described['source']['path'] or 'in-memory model'})")
    height, width = size
    for index, result in enumerate(results):
        share = 100.0 * result.area / (height * width)
        if args.everything:
            (x, y), = result.points
            what = f"#{index + 1} at ({x:g}, {y:g})"
            extra = f", stability {result.stability:.3f}"
        else:
            what = "points " + " ".join(f"({x:g}, {y:g}){'+' if label else '-'}"
                                         for (x, y), label in zip(result.points, result.labels))
            extra = ""
        if not result.found:
            print(f"{what}: nothing found (empty mask)")
            continue
        print(f"{what}: area {result.area} px ({share:.1f}% of {width}x{height}), score {result.score:.3f}{extra}")
    if args.everything:
        print(f"{len(results)} object(s) found")
    if results:
        print(f"timings ({mode}, one call): {results[0].timings}")
    if args.out:
        print(f"overlay written to {args.out}")
    return 0


def _xy(text: str, option: str) -> tuple[float, float]:
    """``"120,80"`` -> (120.0, 80.0); InvalidInputError otherwise."""
    from genmask_sdk.errors import InvalidInputError

    parts = text.replace(" ", "").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidInputError(f"{option} {text!r} is not X,Y: two numbers separated by a comma, in pixels of IMAGE "
                                f"(x to the right, y down), e.g. {option} 120,80.") from None
    return x, y


def _info(args: argparse.Namespace) -> int:
    from genmask_sdk.families.genmask.engine_sets import open_manifest, describe_manifest

    verify = not args.no_verify
    failure = None
    try:
        manifest = open_manifest(args.directory, verify=verify)
    except GenMaskError as exc:
        if not verify:
            raise
        failure = exc
        manifest = open_manifest(args.directory, verify=False)  # still summarise; raises if unreadable
    summary = describe_manifest(manifest.data)
    summary["verification"] = f"FAILED: {one_line(failure)}" if failure else ("sha256 OK" if verify else "skipped")
    if failure:
        print(f"genmask info: error: {one_line(failure)}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 2 if failure else 0
    embedder = summary["embedder"]
    print(f"engines: {args.directory}")
    print(f"  model {summary['model']}, resolution {summary['resolution']}, max_batch {summary['max_batch']}, "
          f"max_prompt_tokens {summary['max_prompt_tokens']}")
    print(f"  embedder {embedder.get('kind')} ({embedder.get('name_or_path')}, D={embedder.get('hidden_size')})")
    print(f"  format {summary['format_version']}, built by genmask-sdk {summary['sdk_version']}, "
          f"checkpoint {summary['checkpoint'].get('source')}")
    for artifact in summary["artifacts"]:
        print(f"  {artifact['stage']:<12} {artifact['precision']:<12} {artifact['runtime']:<9} {artifact['file']}  "
              f"sha256 {str(artifact['sha256'])[:12]}")
    sets = ", ".join(f"{p} ({'+'.join(r) or 'nothing built'})" for p, r in sorted(summary["sets"].items()))
    print(f"  sets: {sets}")
    timing = summary.get("cpu_timing")
    if timing:
        times = ", ".join(f"{p} {t['p50_ms']:.1f} ms" for p, t in timing["sets"].items())
        print(f"  CPU timing at build (p50 per image, batch 1): {times} on {timing.get('cpu')}")
    print(f"verification: {summary['verification']} ({len(summary['artifacts'])} files)")
    return 2 if failure else 0


def _open_segmenter(cls, args, default_checkpoint: str):
    """``cls.from_engines`` with ``--engines``, else ``cls.from_pretrained`` (PyTorch fp32); None after
    printing why a checkpoint cannot take ``--backend``/``--precision``."""
    if args.engines:
        chosen = {} if args.precision is None else {"precision": args.precision}
        return cls.from_engines(args.engines, backend=args.backend, device=args.device, **chosen)
    if args.backend not in ("auto", "torch") or args.precision not in (None, "fp32"):
        print("genmask segment: error: --backend/--precision need --engines; a checkpoint runs in PyTorch fp32.",
              file=sys.stderr)
        return None
    return cls.from_pretrained(args.checkpoint or default_checkpoint, device=args.device or "cpu")


if __name__ == "__main__":
    sys.exit(main())
