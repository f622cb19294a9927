"""Command line of the engine builder: ``python export/build_engines.py`` and ``genmask build``.

Only parses arguments, asks ``genmask_sdk.families.genmask.export.uptodate.up_to_date`` whether the rebuild has
nothing to do (answered without importing torch, diffusers or onnx, whose imports alone take
seconds), and otherwise calls ``genmask_sdk.families.genmask.export.build.build_engines``. Exit codes: 0 built (or
reused), 2 a user error: bad usage (argparse) or a GenMask error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Sequence

from genmask_sdk.cli.arguments import parse_precisions
from genmask_sdk.errors import GenMaskError, one_line

if TYPE_CHECKING:
    from genmask_sdk.families.genmask.export.options import BuildResult

DESCRIPTION = """\
Export a GenMask checkpoint to ONNX graphs (vae_encoder, dit, mask_head) in fp32, fp16, int8 (and fp8),
check each against PyTorch with ONNX Runtime on CPU, build TensorRT plans where TensorRT and a GPU
are available, and write OUT/manifest.json. With no arguments: the demo checkpoint into
engines/demo, sets fp32, fp16, int8 and int8-dynamic. Re-running with unchanged inputs reuses the files; when
nothing at all changed it only verifies them, without importing torch."""

EPILOG = """\
calibration folder (--calib DIR): images plus one prompt file, image paths relative to DIR:
  DIR/prompts.json   {"kitchen.jpg": "the red mug", "desk.png": ["the stapler", "the left monitor"]}
                     or [{"image": "kitchen.jpg", "prompt": "the red mug"}, ...]
  DIR/prompts.txt    one "<image path> | <prompt>" per line; '#' starts a comment line
Samples are used in the order listed (the first --calib-size); images are letterboxed to the
engine resolution as at inference; the first few also serve as fidelity-check inputs.

precision sets: fp32 = fp32 graphs; fp16 = fp16 VAE encoder + fp16 DiT (norms, softmax,
residuals fp32) + fp32 mask head; int8 = fp32 VAE encoder + Q/DQ int8 DiT + fp32 mask head;
fp8 = the same with an FP8 (E4M3) Q/DQ DiT, for GPUs with FP8 (compute capability >= 8.9: Ada,
Hopper, Blackwell; not Jetson Orin) — on a CPU ONNX Runtime only emulates it. The int8 and fp8 DiTs
are calibrated in PyTorch by NVIDIA Model Optimizer on the --calib samples. int8-dynamic = the
CPU set: fp32 VAE encoder + a DiT with int8 weights whose activations are quantized at run time
(ONNX Runtime MatMulInteger; no TensorRT plans). The CPU sets (fp32, int8-dynamic) are timed on
the build machine so that backend 'auto' on a CPU can open the fastest faithful one.

gen2seg checkpoints (reachomk/gen2seg-sd, reachomk/gen2seg-mae-h, demo-gen2seg, or a directory):
fp32, fp16 and int8 sets (SD: int8 UNet between fp32 VAE graphs; MAE: int8 ViT); --calib is
'demo', 'random' or a folder of images (no prompt file: every PNG/JPEG/BMP/WebP, sorted by name).
"""


def build_parser(prog: str = "build_engines.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="demo", metavar="NAME",
                        help="'demo' (shipped checkpoint, default), a checkpoint directory written by "
                             "GenMaskModel.save_pretrained, or a Hugging Face hub id owner/name")
    parser.add_argument("--out", metavar="DIR", help="engines directory (default: engines/<checkpoint name>)")
    parser.add_argument("--precisions", default=None, metavar="LIST",
                        help="comma-separated subset of fp32,fp16,int8,fp8,int8-dynamic (default: "
                             "fp32,fp16,int8,int8-dynamic; gen2seg: fp32,fp16,int8)")
    parser.add_argument("--resolution", type=int, metavar="R",
                        help="engine resolution, a multiple of 16 (default: the checkpoint config's)")
    parser.add_argument("--calib", metavar="DIR",
                        help="int8/fp8 calibration and check inputs: 'demo' (procedural scenes, default), a folder of "
                             "images with prompts.json/prompts.txt (format below), or 'random' (smoke tests only)")
    parser.add_argument("--calib-size", type=int, default=64, metavar="N",
                        help="number of int8/fp8 calibration samples (default: 64)")
    parser.add_argument("--max-prompt-tokens", type=int, metavar="L",
                        help="longest prompt the dynamic shapes / TensorRT profiles allow (default: the embedder's)")
    parser.add_argument("--max-batch", type=int, default=8, metavar="B",
                        help="largest batch the TensorRT profiles allow (default: 8)")
    parser.add_argument("--tensorrt", choices=["auto", "on", "off"], default="auto",
                        help="plans: auto = build if TensorRT and a GPU are available, else print why and the "
                             "trtexec commands; on = required (error if unavailable); off = skip (default: auto)")
    parser.add_argument("--workspace", type=float, default=4.0, metavar="GIB",
                        help="TensorRT builder workspace in GiB (default: 4; use less on 8 GB Jetsons)")
    parser.add_argument("--force", action="store_true", help="rebuild everything even if valid files exist")
    parser.add_argument("--opset", type=int, default=18, choices=range(17, 21), metavar="N",
                        help="ONNX opset, 17..20 (default 18; <= 20 loads on TensorRT 10.3 / JetPack 6)")
    parser.add_argument("--int8-keep-blocks", type=int, default=1, metavar="K",
                        help="first and last K transformer blocks stay unquantized in the int8/fp8 DiT (default: 1)")
    parser.add_argument("--no-text-embedder", action="store_true",
                        help="do not export the MiniLM text embedder as ONNX + tokenizer.json (the engines then "
                             "need torch and transformers at run time for that stage)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "build_engines.py") -> int:
    """``prog``: the command name in usage and error lines (``genmask build`` when called from there).
    Ctrl-C prints one line (exit 130): a build replaces the engines directory only when complete, so
    the previous one is still there and usable."""
    try:
        return _main(argv, prog)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted; nothing was replaced (the previous engines directory, if any, is intact).",
              file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None, prog: str) -> int:
    started = time.perf_counter()  # before the heavy imports below: the reported time is the real wait
    args = build_parser(prog).parse_args(list(sys.argv[1:] if argv is None else argv))
    from genmask_sdk.cli.build_gen2seg import gen2seg_main  # a gen2seg checkpoint (decided torch-free) takes its own build

    if (code := gen2seg_main(args, prog)) is not None:
        return code
    from genmask_sdk.families.genmask.export.options import DEFAULT_PRECISIONS

    precisions = parse_precisions(args.precisions, DEFAULT_PRECISIONS)
    options = dict(resolution=args.resolution, calib=args.calib, calib_size=args.calib_size,
                   max_prompt_tokens=args.max_prompt_tokens, max_batch=args.max_batch, tensorrt=args.tensorrt,
                   workspace_gib=args.workspace, force=args.force, opset=args.opset,
                   int8_keep_blocks=args.int8_keep_blocks, text_embedder=not args.no_text_embedder,
                   progress=not args.no_progress)
    try:
        result = _up_to_date(args.checkpoint, args.out, precisions, options, started)
        if result is None:
            from genmask_sdk.families.genmask.export.build import build_engines  # torch, diffusers, onnx: seconds of imports

            result = build_engines(args.checkpoint, args.out, precisions, started=started, check_up_to_date=False,
                                   **options)
    except GenMaskError as exc:
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    for precision, entry in result.manifest.data["sets"].items():
        files = ", ".join(entry["onnx"].values())
        plans = ", ".join(entry["tensorrt"].values()) if entry.get("tensorrt") else "no TensorRT plans"
        print(f"{precision}: {files}; {plans}")
    return 0


def _up_to_date(checkpoint: str, out: str | None, precisions: list[str], options: dict,
                started: float) -> BuildResult | None:
    """``uptodate.up_to_date`` for these arguments: a BuildResult when the rebuild has nothing to do."""
    from genmask_sdk.families.genmask.export.options import build_options
    from genmask_sdk.families.genmask.export.uptodate import up_to_date

    return up_to_date(checkpoint, out, build_options(precisions, **options), started=started)
