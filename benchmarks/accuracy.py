#!/usr/bin/env python
"""Accuracy of GenMask per backend and precision (mIoU/gIoU, oIoU/cIoU), with fidelity to PyTorch.

    # demo checkpoint on 200 held-out procedural scenes, every backend that runs here
    python benchmarks/accuracy.py --model demo
    # plus RefCOCO / RefCOCO+ / RefCOCOg from a local copy in the `refer` layout
    python benchmarks/accuracy.py --model CHECKPOINT --refer-root /data/refer
    # smoke test
    python benchmarks/accuracy.py --model tiny --quick

Every backend sees the same images and prompts; fidelity is the IoU between each backend's mask
and the PyTorch fp32 mask, and the max |logit difference|. Writes benchmarks/results/<name>.json,
.md and .png (schema: benchmarks/README.md). The logic lives in genmask_sdk.bench.accuracy and
genmask_sdk.families.genmask.eval.refer (the refer-layout loader).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_BACKENDS = ("torch-eager,ort-cpu-fp32,ort-cpu-fp16,ort-cpu-int8,ort-cpu-fp8,ort-cuda-fp32,ort-cuda-fp16,trt-fp16,"
                    "trt-int8,trt-fp8")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add = parser.add_argument
    add("--model", default="demo", help="'demo', a checkpoint directory, or a random preset (tiny, random:<preset>)")
    add("--embedder", default=None, help="embedder of a random preset")
    add("--resolution", type=int, default=None, help="engine resolution (default: the model's)")
    add("--backends", default=DEFAULT_BACKENDS, help="comma-separated backends or 'all' (torch-eager always included)")
    add("--scenes", type=int, default=200, help="held-out procedural scenes (0: none)")
    add("--seed", type=int, default=None, help="held-out scene seed (default genmask_sdk.families.genmask.eval.HELD_OUT_SEED)")
    add("--refer-root", default=None, help="data_root of a refer-layout copy of RefCOCO/+/g")
    add("--refer-datasets", default="refcoco,refcoco+,refcocog",
        help="comma-separated refer datasets, optionally name:splitBy (default unc for refcoco/+, umd for refcocog; "
             "e.g. refcocog:google)")
    add("--refer-splits", default=None, help="comma-separated splits (default: val,testA,testB; refcocog val,test)")
    add("--refer-limit", type=int, default=None, help="at most this many expressions per split")
    add("--device", default="cpu", help="'cpu' or 'cuda'")
    add("--threads", type=int, default=None, help="torch threads and ONNX Runtime intra-op threads")
    add("--engines", default=None, help="engines directory (default engines/<checkpoint>; built/extended when needed)")
    add("--no-build", dest="build", action="store_false", help="never export: missing sets are skipped")
    add("--max-batch", type=int, default=8, help="prompts per DiT call")
    add("--work-dir", default=None, help="scratch dir for int8-dynamic graphs / random-model engines (default temp)")
    add("--quick", action="store_true", help="smoke setting: 4 scenes, 5 expressions per refer split")
    add("--name", default=None, help="output base name (default accuracy_<model>_<device>)")
    add("--out-dir", default=str(RESULTS), help="where the .json/.md/.png go")
    add("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from genmask_sdk.bench.accuracy import AccuracySettings, run_accuracy
    from genmask_sdk.bench.report import (
        accuracy_markdown,
        accuracy_plot,
        write_outputs,
        print_written,
        script_command,
    )

    settings = AccuracySettings(
        model=args.model, embedder=args.embedder, resolution=args.resolution, backends=args.backends,
        scenes=args.scenes, seed=args.seed, refer_root=args.refer_root,
        refer_datasets=[d.strip() for d in args.refer_datasets.split(",") if d.strip()],
        refer_splits=[s.strip() for s in args.refer_splits.split(",")] if args.refer_splits else None,
        refer_limit=args.refer_limit, device=args.device, threads=args.threads, engines=args.engines,
        engines_root=str(ROOT / "engines"), work_dir=args.work_dir, build=args.build, batch_sizes=[args.max_batch],
        progress=args.progress, quick=args.quick)
    command = script_command("accuracy", argv)
    result = run_accuracy(settings, argv=command)
    markdown = accuracy_markdown(result)
    model = Path(args.model).name if Path(args.model).is_dir() else args.model.replace("random:", "")
    name = args.name or f"accuracy_{model}_{args.device.split(':')[0]}" + ("_quick" if args.quick else "")
    paths = write_outputs(result, args.out_dir, name, markdown, accuracy_plot)
    print_written(paths, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
