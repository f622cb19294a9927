#!/usr/bin/env python
"""Startup and warm latency of the deployed (torch-free) runtime, in fresh processes: the import,
``Segmenter.from_engines``, ``genmask segment`` end to end, and warm ``predict`` calls (p50/p90/p99).

    python benchmarks/startup.py --engines engines/demo            # after bash scripts/demo.sh
    python benchmarks/startup.py --engines engines/demo --runs 2 --warm-calls 5   # quick

Writes benchmarks/results/startup_<engines name>_<precision>.json and .md. The logic is in
genmask_sdk.bench.startup; every measured step goes through the public API or the CLI.
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
    add("--engines", required=True, help="engines directory")
    add("--image", default=None, help="image file (default: the example image)")
    add("--prompt", default="the red circle")
    add("--backend", default="onnxruntime")
    add("--precision", default="fp32", choices=("fp32", "fp16", "int8", "fp8"))
    add("--runs", type=int, default=5, help="fresh processes of each kind")
    add("--warm-calls", type=int, default=20, help="timed predict calls in one warm process")
    add("--out", default=str(RESULTS))
    add("--name", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "sdk"))
    from genmask_sdk.bench.report import print_written, script_command, write_outputs
    from genmask_sdk.bench.startup import run_startup, startup_markdown
    from genmask_sdk.data.examples import example_image_path

    image = args.image or str(example_image_path())
    result = run_startup(args.engines, image, args.prompt, backend=args.backend, precision=args.precision,
                         runs=args.runs, warm_calls=args.warm_calls)
    result["command"] = script_command("startup", argv)
    name = args.name or f"startup_{Path(args.engines).name}_{args.precision}"
    markdown = startup_markdown(result)
    print_written(write_outputs(result, args.out, name, markdown), markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
