#!/usr/bin/env python
"""Which DiT layers can be quantized: Model Optimizer's simulated INT8/FP8 per module group.

    python benchmarks/quant_sensitivity.py --model demo                  # demo checkpoint, int8 + fp8
    python benchmarks/quant_sensitivity.py --model tiny --quick          # smoke test (random weights)

Calibrates every quantizable Linear once (the build's max calibration, on the build's calibration
source), then enables one group at a time (each block, the text embedder, proj_out, the build's
default recipe, every block) and measures the DiT's relative max error and the decoded masks' IoU
against the float32 model on held-out inputs. Writes benchmarks/results/<name>.json and .md. The
logic lives in genmask_sdk.bench.quant_sensitivity.
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
    add("--model", default="demo", help="'demo', a checkpoint directory, or 'tiny' (random weights, random inputs)")
    add("--modes", default="int8,fp8", help="comma-separated int8,fp8")
    add("--calib-size", type=int, default=64, help="calibration inputs (default 64, as the build)")
    add("--check-samples", type=int, default=32, help="held-out inputs (default 32)")
    add("--keep-blocks", type=int, default=1, help="the build default's kept first/last blocks (default 1)")
    add("--threads", type=int, default=2)
    add("--quick", action="store_true", help="4 calibration and 2 check inputs")
    add("--out-dir", default=str(RESULTS))
    add("--name", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "sdk"))
    import torch

    from genmask_sdk.bench.quant_sensitivity import markdown, measure
    from genmask_sdk.bench.report import print_written, script_command, write_outputs
    from genmask_sdk.bench.system import hardware, versions
    from genmask_sdk.families.genmask.config import GenMaskConfig
    from genmask_sdk.families.genmask.export import calibration
    from genmask_sdk.families.genmask.modeling import GenMaskModel

    torch.set_num_threads(args.threads)
    calib_size, check_size = (4, 2) if args.quick else (args.calib_size, args.check_samples)
    if args.model == "tiny":
        torch.manual_seed(0)
        model, source = GenMaskModel.from_config(GenMaskConfig.preset("tiny", embedder="minilm")), "random"
    else:
        model, source = GenMaskModel.from_pretrained(args.model), "demo"
    resolution = model.config.resolution

    def feeds(n: int, check: bool) -> list:
        return [r.dit_feeds() for r in calibration.encode(
            model, calibration.samples(source, n, resolution, check=check)).rows()]

    calib, check = feeds(calib_size, False), feeds(check_size, True)
    modes = [measure(model, calib, check, mode=m, keep_blocks=args.keep_blocks) for m in args.modes.split(",")]
    describe = {"demo": "procedural scenes", "random": "random inputs"}[source]
    result = {"model": args.model, "resolution": resolution, "modes": modes, "hardware": hardware(),
              "versions": versions(), "command": script_command("quant_sensitivity", argv),
              "calibration": f"{len(calib)} {describe} (seed {calibration.CALIB_SEED})" if source == "demo"
              else f"{len(calib)} {describe}",
              "check": f"{len(check)} {describe}" + (f" (seed {calibration.CHECK_SEED})" if source == "demo" else ""),
              "numerics": modes[0]["numerics"]}
    text = markdown(result)
    print_written(write_outputs(result, args.out_dir, args.name or f"quant_sensitivity_{Path(args.model).name}", text),
                  text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
