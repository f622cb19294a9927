"""``genmask segment``: run a GenMask model (text prompts) or a gen2seg model (points, everything) on
one image and print timings, areas and scores (``--json``: machine-readable, with COCO RLE).
Calls only the public segmenters; ``main.py`` parses the arguments."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path



OVERLAY_COLORS = [(0, 160, 255), (255, 200, 0), (0, 220, 120), (255, 80, 200), (160, 90, 255)]


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


def segment(args: argparse.Namespace) -> int:
    from genmask_sdk.families.registry import GEN2SEG, family_of

    target = overlay_target(args.out) if args.out else None
    image = _image(args.image)
    source = args.engines or args.checkpoint
    family = family_of(source) if source else None
    if args.point or args.negative or args.everything or family == GEN2SEG:
        return _segment_instances(args, image, target, source, family)
    from genmask_sdk.families.genmask.segmenter import Segmenter

    if not args.verbose and "transformers" in sys.modules:  # a PyTorch embedder was loaded: no bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    segmenter = _open_segmenter(Segmenter, args, "demo")
    if segmenter is None:
        return 2
    with segmenter:
        results = segmenter.predict(image, list(args.prompts), reason=args.reason)
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


def _segment_instances(args: argparse.Namespace, image, target: tuple[Path, str] | None, source: str | None,
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
            results = segmenter.segment_everything(image, **options)
        else:
            results = [segmenter.predict(image, points=points, labels=labels)]
        described = segmenter.describe()
    if results:
        size = results[0].size
    else:  # nothing found: the size (and the overlay's background) from the image itself
        from genmask_sdk.runtime.imaging import load_image

        size = load_image(image).shape[:2]
    if target is not None:
        from genmask_sdk.io import atomic_path

        overlay = instance_overlay(results, image=None if results else image)
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


def _open_segmenter(cls, args, default_checkpoint: str):
    """``cls.from_engines`` with ``--engines``, else ``cls.from_pretrained`` (PyTorch fp32); None after
    printing why a checkpoint cannot take ``--backend``/``--precision``."""
    if args.engines:
        return cls.from_engines(args.engines, backend=args.backend, precision=args.precision, device=args.device,
                                threads=args.threads)
    if args.backend not in ("auto", "torch") or args.precision not in (None, "fp32"):
        print("genmask segment: error: --backend/--precision need --engines; a checkpoint runs in PyTorch fp32.",
              file=sys.stderr)
        return None
    return cls.from_pretrained(args.checkpoint or default_checkpoint, device=args.device or "cpu")


def _image(name: str):
    """What to segment: the IMAGE path, or for ``-`` the image piped in on standard input (decoded
    once; the name stays ``-`` in the output)."""
    if name != "-":
        return name
    from genmask_sdk.runtime.imaging import read_image_stream

    return read_image_stream(sys.stdin.buffer, "standard input")
