#!/usr/bin/env python
"""Latency benchmark of GenMask per stage and backend: p50/p90/p99, throughput, memory, TFLOP/s.

    # demo checkpoint, full pipeline, every backend (unavailable ones are recorded as skipped)
    python benchmarks/latency.py --model demo
    # real-size Wan2.1-1.3B DiT (random weights), DiT-only, 256²: torch eager vs ONNX Runtime
    python benchmarks/latency.py --model wan2.1-1.3b --resolution 256 \\
        --backends torch-eager,ort-cpu-fp32,ort-cpu-int8-dynamic --batch-sizes 1 --warmup 1 --repeats 10
    # smoke test (what tests/test_benchmarks.py runs)
    python benchmarks/latency.py --model tiny --quick

Writes benchmarks/results/<name>.json, .md and .png (schema: benchmarks/README.md). Backends:
torch-eager (the reference every ratio is taken against, always run), torch-compile,
ort-{cpu,cuda}-{fp32,fp16,int8}, ort-cpu-int8-dynamic, trt-{fp16,int8}. The logic lives in
genmask_sdk.bench (latency.py, targets.py, flops.py, system.py, report.py).
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
    add("--model", default="demo",
        help="'demo' or a checkpoint directory; or a preset with random weights: wan2.1-1.3b, tiny, random:<preset>")
    add("--embedder", default=None, help="embedder of a random preset (default qwen2.5-vl-7b for wan2.1-1.3b, else minilm)")
    add("--resolution", type=int, nargs="+", default=None, help="engine resolution(s) (default: the model's)")
    add("--mode", choices=("auto", "pipeline", "dit-only"), default="auto",
        help="pipeline: all stages + end to end from an engines dir; dit-only: export and time the DiT only "
             "(auto: dit-only for wan2.1-1.3b, else pipeline)")
    add("--backends", default="all", help="comma-separated backends or 'all' (torch-eager is always included)")
    add("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8], help="prompts per DiT call")
    add("--e2e-batch-sizes", type=int, nargs="+", default=None, help="prompts per Segmenter.predict (default: --batch-sizes)")
    add("--warmup", type=int, default=3, help="untimed calls before timing (the first is reported as first_call_ms)")
    add("--repeats", type=int, default=20, help="timed calls per figure")
    add("--prompt-tokens", type=int, default=32, help="context length in dit-only mode (random contexts)")
    add("--threads", type=int, default=None, help="torch threads and ONNX Runtime intra-op threads (default: library defaults)")
    add("--device", default="cpu", help="'cpu' or 'cuda' (GPU backends need cuda)")
    add("--engines", default=None, help="engines directory to use (pipeline mode; built/extended when needed unless "
                                        "--no-build); default engines/<checkpoint> or a temporary dir for random models")
    add("--no-build", dest="build", action="store_false", help="never export: missing sets are skipped")
    add("--work-dir", default=None, help="where dit-only graphs and int8-dynamic graphs go (kept, and reused on the "
                                         "next run when the model is the same); default: a temporary dir, removed")
    add("--peak-tflops", type=float, default=None,
        help="device peak for the %% of peak column (default: measured torch matmul 2048³ fp32 on CPU, 8192³ fp16 on CUDA)")
    add("--int8-calib-samples", type=int, default=8, help="random calibration inputs of the dit-only static int8 graph")
    add("--seed", type=int, default=0, help="seed of random weights and inputs")
    add("--quick", action="store_true", help="smoke setting: 1 warm-up, 3 repeats, batch <= 2")
    add("--name", default=None, help="output base name (default latency_<model>_<resolutions>_<device>)")
    add("--out-dir", default=str(RESULTS), help="where the .json/.md/.png go")
    add("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    return parser.parse_args(argv)


def default_name(args: argparse.Namespace) -> str:
    model = Path(args.model).name if Path(args.model).is_dir() else args.model.replace("random:", "")
    res = "-".join(str(r) for r in args.resolution) if args.resolution else "native"
    return f"latency_{model}_{res}_{args.device.split(':')[0]}" + ("_quick" if args.quick else "")


def main(argv=None) -> int:
    args = parse_args(argv)
    from genmask_sdk.bench.latency import LatencySettings, run_latency
    from genmask_sdk.bench.report import (
        latency_markdown,
        latency_plot,
        write_outputs,
        print_written,
        script_command,
    )

    settings = LatencySettings(
        model=args.model, embedder=args.embedder, resolutions=args.resolution, mode=args.mode, backends=args.backends,
        batch_sizes=sorted(set(args.batch_sizes)), e2e_batch_sizes=sorted(set(args.e2e_batch_sizes)) if args.e2e_batch_sizes else None,
        warmup=args.warmup, repeats=args.repeats, prompt_tokens=args.prompt_tokens, threads=args.threads,
        device=args.device, engines=args.engines, engines_root=str(ROOT / "engines"), work_dir=args.work_dir,
        build=args.build, peak_tflops=args.peak_tflops, int8_calib_samples=args.int8_calib_samples, seed=args.seed,
        quick=args.quick, progress=args.progress)
    command = script_command("latency", argv)
    result = run_latency(settings, argv=command)
    markdown = latency_markdown(result)
    paths = write_outputs(result, args.out_dir, args.name or default_name(args), markdown, latency_plot)
    print_written(paths, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
