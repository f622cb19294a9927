#!/usr/bin/env python
"""Peak RSS and time of gen2seg's point prompts and segment-everything on 1, 3 and 12 MP frames
(issue 34's bounds: everything on 12 MP within 2 GB, 100 points within 1 GB), in fresh torch-free
processes through InstanceSegmenter.from_engines.

    python benchmarks/gen2seg_prompts_memory.py                       # demo-gen2seg engines, 3 repeats
    python benchmarks/gen2seg_prompts_memory.py --sizes 1MP --repeats 1   # quick

Builds the demo-gen2seg fp32 engines into --work-dir first (an unchanged rebuild returns at once).
Writes benchmarks/results/gen2seg_prompts_memory.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add = parser.add_argument
    add("--sizes", default="1MP,3MP,12MP")
    add("--tasks", default="point1,points100,everything")
    add("--repeats", type=int, default=3)
    add("--grid", type=int, default=16)
    add("--work-dir", default=str(ROOT / "engines"))
    add("--out", default=str(RESULTS))
    add("--name", default="gen2seg_prompts_memory")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "sdk"))
    import cv2
    import numpy
    import onnxruntime

    from genmask_sdk import __version__, build_gen2seg_engines
    from genmask_sdk.bench.gen2seg_prompts import markdown, run
    from genmask_sdk.bench.report import print_written, script_command, write_outputs
    from genmask_sdk.runtime.hardware import cpu_model

    engines = Path(args.work_dir) / "demo-gen2seg"
    build_gen2seg_engines("demo-gen2seg", engines, ["fp32"], tensorrt="off", progress=True)
    rows = run(str(engines), args.sizes.split(","), args.tasks.split(","), args.repeats, args.grid)
    result = {"rows": rows, "repeats": args.repeats, "precision": "fp32", "engines_model": "demo-gen2seg",
              "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count()}, "genmask_sdk": __version__,
              "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__, "opencv": cv2.__version__,
              "command": script_command("gen2seg_prompts_memory", argv)}
    print_written(write_outputs(result, args.out, args.name, markdown(result)), markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
