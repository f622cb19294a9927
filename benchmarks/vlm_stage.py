#!/usr/bin/env python
"""Latency of the Qwen2.5-VL conditioning stage: a new image's first prompt, each extra prompt on
the cached image prefix, a batch of prompts, and reasoning mode's extra cost (p50/p90/p99).

    # real-size Qwen2.5-VL-3B architecture, random weights, the presets' 448² budget (256 image tokens)
    python benchmarks/vlm_stage.py --size 3b --dtype float32
    # on a GPU machine: the same for 7B in bfloat16
    python benchmarks/vlm_stage.py --size 7b --dtype bfloat16 --device cuda
    # smoke test (what tests/test_benchmarks.py runs)
    python benchmarks/vlm_stage.py --size tiny --quick

Writes benchmarks/results/vlm_<size>_<dtype>_<device>.json and .md. The logic is in
genmask_sdk.bench.vlm; the model goes through the public QwenVLEmbedder API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add = parser.add_argument
    add("--size", choices=("3b", "7b", "tiny"), default="3b", help="Qwen2.5-VL architecture (random weights)")
    add("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    add("--device", default="cpu", help="cpu or cuda")
    add("--image-size", type=int, default=448, help="VLM image budget (side, multiple of 28)")
    add("--runs", type=int, default=3, help="new images (each: first prompt, extras, a batch)")
    add("--extra-prompts", type=int, default=3, help="single extra prompts per image")
    add("--reason-runs", type=int, default=2)
    add("--full-runs", type=int, default=2, help="full prefills without the cache (comparison)")
    add("--quick", action="store_true", help="1 run, 1 extra prompt, 1 reason, 1 full prefill")
    add("--out", default=str(RESULTS), help="results directory")
    add("--name", default=None, help="result file name (default vlm_<size>_<dtype>_<device>)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "sdk"))
    from genmask_sdk.bench.report import print_written, script_command, write_outputs
    from genmask_sdk.bench.vlm import benchmark_qwen, vlm_markdown

    runs = dict(runs=1, extra_prompts=1, reason_runs=1, full_runs=1) if args.quick else dict(
        runs=args.runs, extra_prompts=args.extra_prompts, reason_runs=args.reason_runs, full_runs=args.full_runs)
    result = benchmark_qwen(args.size, args.dtype, args.image_size, device=args.device, **runs)
    result["command"] = script_command("vlm_stage", argv)
    name = args.name or f"vlm_{args.size}_{args.dtype}_{args.device}"
    markdown = vlm_markdown(result)
    print_written(write_outputs(result, args.out, name, markdown), markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
