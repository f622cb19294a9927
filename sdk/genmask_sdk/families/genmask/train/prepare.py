r"""Prepare training data once, as 🤗 datasets Arrow shards: ``python -m genmask_sdk.families.genmask.train.prepare``.

    python -m genmask_sdk.families.genmask.train.prepare --source refer --root refer/data --dataset refcoco \
        --split-by unc --split train --out prep/refcoco
    python -m genmask_sdk.families.genmask.train.prepare --source coco-stuff --root coco --split train2017 --out prep/cocostuff
    python -m genmask_sdk.families.genmask.train.prepare --source ade20k --root ADEChallengeData2016 --split training --out prep/ade20k
    python -m genmask_sdk.families.genmask.train.prepare --source captions --root coco --split train2014 --out prep/captions
    python -m genmask_sdk.families.genmask.train.prepare --source scenes --count 1000 --captions 500 --out prep/scenes

Each source's on-disk layout is in its converter's docstring (``genmask_sdk.data.converters``).
Semantic sources take ``--min-pixels`` / ``--max-classes-per-image``; every source ``--limit N``
(first N samples: smoke runs). ``OUT`` appears only when complete; a bad sample stops the run
with an error naming it. Read it with ``genmask_sdk.data.prepared.open_prepared(OUT)``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path

from genmask_sdk.data.converters import (
    CONVERTER_SOURCES,
    REFER_DATASETS,
    SPLIT_BYS,
    ade20k_samples,
    coco_caption_samples,
    coco_stuff_samples,
    refer_samples,
    scene_samples,
)
from genmask_sdk.data.prepared import PreparedSample, write_prepared
from genmask_sdk.errors import ConfigError, GenMaskError, one_line

DEFAULT_SPLITS = {"refer": "train", "coco-stuff": "train2017", "ade20k": "training", "captions": "train2014"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genmask_sdk.families.genmask.train.prepare",
                                     description="Convert a dataset into prepared Arrow shards.")
    parser.add_argument("--source", required=True, choices=CONVERTER_SOURCES)
    parser.add_argument("--out", required=True, type=Path, help="output directory (appears only when complete)")
    parser.add_argument("--root", type=Path, help="dataset root (refer, coco-stuff, ade20k, captions)")
    parser.add_argument("--split", help=f"split; defaults: {DEFAULT_SPLITS}")
    parser.add_argument("--images", type=Path, help="image folder, if not where the layout puts it")
    parser.add_argument("--labels", type=Path, help="coco-stuff: label PNG folder")
    parser.add_argument("--annotations", type=Path, help="captions: the captions_<split>.json file")
    parser.add_argument("--dataset", choices=REFER_DATASETS, default="refcoco", help="refer: which dataset")
    parser.add_argument("--split-by", choices=SPLIT_BYS, default="unc", help="refer: refs(<split-by>).p")
    parser.add_argument("--min-pixels", type=int, default=64, help="semantic: smallest class area kept")
    parser.add_argument("--max-classes-per-image", type=int, help="semantic: at most this many classes per image")
    parser.add_argument("--keep-hyphenated", action="store_true",
                        help="coco-stuff: keep 'building-other'-style classes (LISA drops them)")
    parser.add_argument("--captions-per-image", type=int, default=1, help="captions: 0 = all")
    parser.add_argument("--count", type=int, help="scenes: number of segmentation samples")
    parser.add_argument("--captions", type=int, default=0, help="scenes: number of generation samples")
    parser.add_argument("--size", type=int, default=128, help="scenes: image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="scenes; semantic --max-classes-per-image choice")
    parser.add_argument("--limit", type=int, help="stop after this many samples")
    parser.add_argument("--max-shard-size", default="500MB")
    parser.add_argument("--description", help="stored in prepare_info.json (default: the command line)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def _require(args: argparse.Namespace, name: str) -> None:
    if getattr(args, name) is None:
        raise ConfigError(f"--source {args.source} needs --{name.replace('_', '-')}.")


def samples_from_args(args: argparse.Namespace) -> Iterator[PreparedSample]:
    """The converter call that ``args`` ask for (paths and options checked now)."""
    if args.source == "scenes":
        _require(args, "count")
        return scene_samples(args.count, seed=args.seed, size=args.size, captions=args.captions)
    _require(args, "root")
    split = args.split or DEFAULT_SPLITS[args.source]
    semantic = {"min_pixels": args.min_pixels, "max_classes_per_image": args.max_classes_per_image,
                "seed": args.seed}
    if args.source == "refer":
        return refer_samples(args.root, dataset=args.dataset, split_by=args.split_by, split=split, images=args.images)
    if args.source == "coco-stuff":
        return coco_stuff_samples(args.root, split=split, images=args.images, labels=args.labels,
                                  keep_hyphenated=args.keep_hyphenated, **semantic)
    if args.source == "ade20k":
        return ade20k_samples(args.root, split=split, **semantic)
    return coco_caption_samples(args.root, split=split, images=args.images, annotations=args.annotations,
                                captions_per_image=args.captions_per_image)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; 0 on success, 2 (message on stderr) on a genmask-sdk error."""
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "genmask_sdk.families.genmask.train.prepare", *map(str, given)])
    try:
        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {args.limit}.")
        samples = samples_from_args(args)
        if args.limit is not None:
            samples = islice(samples, args.limit)
        out = write_prepared(samples, args.out, description=args.description or command,
                             max_shard_size=args.max_shard_size, progress=not args.no_progress)
    except GenMaskError as exc:
        print(f"prepare: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"prepared {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
