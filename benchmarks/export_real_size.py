#!/usr/bin/env python
"""Export the real-size GenMask graphs (Wan2.1-T2V-1.3B DiT, full Wan VAE encoder; random weights)
with external data, and check each against PyTorch with ONNX Runtime on one input.

    python benchmarks/export_real_size.py --resolution 512 --precisions fp32,fp16,int8 --out /tmp/genmask-real

The fp32 DiT holds ~5.7 GB of weights, so its graph is ``dit.fp32.onnx`` + ``dit.fp32.onnx.data``
(protobuf cannot hold more than 2 GiB). Context states are random (``calib="random"``), so no VLM
is downloaded; the int8/fp8 DiTs are calibrated by Model Optimizer on ``--calib-size`` random inputs
and checked on ``--check-samples`` others (disjoint draws). Writes
``benchmarks/results/export_real_size.json``: per file its size, export seconds, max error and DiT
mask IoU against the float32 PyTorch model, the whole build's wall time and the process's peak
RSS (``ru_maxrss``), with the machine.
``tests/test_export.py::test_real_size_export_script`` runs the same code on the tiny preset with a
zero external-data threshold (every graph external), and on the real size when run with ``-m slow``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

RESULTS = Path(__file__).resolve().parent / "results" / "export_real_size.json"


def export_random_model(out: str | Path, preset: str = "wan2.1-1.3b", resolution: int = 512,
                        precisions: Sequence[str] = ("fp32",), embedder: str = "qwen2.5-vl-7b",
                        external_data_threshold: int | None = None, int8_keep_blocks: int = 1,
                        calib_size: int = 4, check_samples: int = 1, progress: bool = True) -> dict:
    """Build ``precisions`` for a random-weight ``preset`` model into ``out``; return a summary
    ``{"preset", "resolution", "seconds", "artifacts": [{file, bytes, external_data, export_seconds,
    max_abs_error, reference_max_abs, mask_iou_mean}]}``."""
    import torch

    from genmask_sdk.families.genmask.config import GenMaskConfig
    from genmask_sdk.export.onnx_io import EXTERNAL_DATA_THRESHOLD
    from genmask_sdk.families.genmask.export.build import build_engines
    from genmask_sdk.families.genmask.modeling import GenMaskModel

    torch.manual_seed(0)
    start = time.perf_counter()
    model = GenMaskModel.from_config(GenMaskConfig.preset(preset, embedder=embedder, resolution=resolution))
    created = time.perf_counter() - start
    threshold = EXTERNAL_DATA_THRESHOLD if external_data_threshold is None else external_data_threshold
    result = build_engines(model=model, out=out, precisions=precisions, calib="random", calib_size=calib_size,
                           check_samples=check_samples, max_batch=check_samples, tensorrt="off", external_data_threshold=threshold,
                           int8_keep_blocks=int8_keep_blocks, text_embedder=False, progress=progress)
    artifacts = []
    for record in result.manifest.artifacts:
        fidelity = record["fidelity"]
        artifacts.append({
            "file": record["file"], "bytes": record["bytes"],
            "external_data": {e["file"]: e["bytes"] for e in record["external_data"]},
            "export_seconds": record["export_seconds"], "max_abs_error": fidelity["max_abs_error"],
            "reference_max_abs": fidelity["reference_max_abs"], "mask_iou_mean": fidelity.get("mask_iou_mean"),
            "mask_iou_pooled": fidelity.get("mask_iou_pooled"), "check_samples": fidelity["samples"],
            "calibration_samples": record["details"].get("calibration_samples"),
        })
    from genmask_sdk.bench.system import hardware, versions

    return {"preset": preset, "resolution": resolution, "precisions": list(precisions),
            "model_seconds": round(created, 1), "build_seconds": round(result.seconds, 1),
            "peak_rss_gib": round(peak_rss_gib(), 2), "hardware": hardware(), "versions": versions(), "artifacts": artifacts}


def peak_rss_gib() -> float:
    """This process's peak resident set size so far (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="wan2.1-1.3b", help="GenMaskConfig preset (default wan2.1-1.3b)")
    parser.add_argument("--resolution", type=int, default=512, help="engine resolution (default 512)")
    parser.add_argument("--precisions", default="fp32", help="comma-separated fp32,fp16,int8 (default fp32)")
    parser.add_argument("--out", required=True, help="engines directory to write")
    parser.add_argument("--calib-size", type=int, default=8, help="int8/fp8 calibration inputs (default 8)")
    parser.add_argument("--check-samples", type=int, default=2, help="fidelity-check inputs (default 2)")
    parser.add_argument("--results", default=str(RESULTS), help="JSON summary path")
    args = parser.parse_args(argv)
    summary = export_random_model(args.out, args.preset, args.resolution, args.precisions.split(","),
                                  calib_size=args.calib_size, check_samples=args.check_samples)
    from genmask_sdk.io import atomic_write_text

    atomic_write_text(args.results, json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
