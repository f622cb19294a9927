"""INT8 and FP8 DiT graphs: calibrated in PyTorch by NVIDIA Model Optimizer, written as explicit Q/DQ.

``quantize_dit`` = ``modelopt_calib.calibrate_dit`` (Model Optimizer's max calibration of the
transformer blocks' Linear layers on real DiT inputs, streamed one sample at a time) +
``qdq.write_qdq_graph`` (those numbers as QuantizeLinear/DequantizeLinear in the fp32 dynamo graph).

What stays in float32 (recorded in the manifest): the first and last ``keep_blocks`` transformer
blocks, the patch embedding, the text/time embedders, ``norm_out``/``proj_out``, the norms, the
folded time modulation and the attention score/value products. ``benchmarks/quant_sensitivity.py``
measures, per module group, what quantizing it alone costs (DiT error and mask IoU); the defaults
follow those numbers and NVIDIA's Wan recipe (notes/trt_practice.md §2).

Memory: the calibration copy shares the model's weight tensors; the Q/DQ writer reads only the
float32 initialisers that stay. Nothing holds activations beyond one sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from genmask_sdk.export.modelopt_calib import KEPT_MODULES, block_of, calibrate_dit, modelopt_version
from genmask_sdk.export.qdq import write_qdq_graph

QUANT_FORMATS = {"int8": "INT8 symmetric (zero point 0): per-tensor activations, per-output-channel weights",
                 "fp8": "FP8 E4M3: per-tensor activations and weights"}


def quantize_dit(dit_graph, fp32_path: Path, out_path: Path, feeds: Sequence[dict[str, np.ndarray]], *, mode: str,
                 num_layers: int, keep_blocks: int = 1, external_data: bool = False, progress: bool = True) -> dict:
    """Write the ``mode`` ("int8" | "fp8") Q/DQ DiT ``out_path`` from the fp32 graph ``fp32_path``.

    ``dit_graph``: the float32 ``DitGraph`` the fp32 graph was exported from (left unmodified);
    ``feeds``: calibration inputs ``{"z_img": (1, 16, h, w) f32, "context": (1, L, D) f32,
    "context_mask": (1, L) bool}``. Returns the manifest's ``details`` for the graph.
    """
    layers, _ = calibrate_dit(dit_graph, feeds, mode=mode, num_layers=num_layers, keep_blocks=keep_blocks,
                              progress=progress)
    info = write_qdq_graph(fp32_path, out_path, layers, mode=mode, external_data=external_data)
    blocks = sorted({block_of(layer.module) for layer in layers})
    return {"method": f"NVIDIA Model Optimizer {modelopt_version()} max calibration in PyTorch, explicit Q/DQ; "
                      + QUANT_FORMATS[mode],
            "base": "fp32", "calibration_samples": len(feeds), "quantized_matmuls": info["quantized_matmuls"],
            "quantized_blocks": blocks, "keep_blocks": keep_blocks, "opset": info["opset"],
            "kept_in_float32": [f"transformer blocks {sorted(set(range(num_layers)) - set(blocks))}", *KEPT_MODULES,
                                "norms and folded time modulation", "attention score/value MatMuls"]}
