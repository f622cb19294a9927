"""Which DiT layers can be quantized: Model Optimizer's simulated INT8/FP8, one module group at a time.

Every Linear of the one-step DiT that the Q/DQ writer can quantize (the transformer blocks, the
text embedder, ``proj_out``) is calibrated once by Model Optimizer (max calibration, as the build
does); then, for each group alone — and for the build's default recipe and for every block — only
that group's quantizers are enabled and the DiT runs on held-out inputs in PyTorch (Model
Optimizer's fake quantization: the numerics of the exported Q/DQ graph, labelled *simulated*).
Recorded per group: max |x0 − x0_fp32| / max |x0_fp32| and the pooled IoU of the decoded masks
against the float32 model's. The time modulation is folded into constants (no Linear runs at
inference), and the attention products have no weights: neither is a group.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from genmask_sdk.families.genmask.export.graphs import DitGraph
from genmask_sdk.export.modelopt_calib import NUM_BITS, block_of, import_mtq, quantized_block_ids, sharing_copy

_INPUT_KEYS = ("z_img", "context", "context_mask")


def groups(num_layers: int, keep_blocks: int) -> dict[str, str | Callable[[str], bool]]:
    """Group label -> Model Optimizer wildcard (or filter) of its quantizers."""
    out: dict[str, Any] = {f"block {i}": f"*.blocks.{i}.*" for i in range(num_layers)}
    out["text embedder"] = "*condition_embedder.text_embedder*"
    out["proj_out"] = "*proj_out*"
    default = set(quantized_block_ids(num_layers, keep_blocks)) if num_layers > 2 * keep_blocks else set()
    out[f"build default (blocks {sorted(default)})"] = lambda name: block_of(name) in default
    out["every block"] = lambda name: block_of(name) is not None
    return out


def all_linear_config(mode: str) -> dict:
    bits = NUM_BITS[mode]
    return {"quant_cfg": [{"quantizer_name": "*", "enable": False},
                          {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": bits, "axis": 0 if mode == "int8" else None}},
                          {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": bits, "axis": None}},
                          {"quantizer_name": "*patch_embedding*", "enable": False}],
            "algorithm": "max"}


def _run(module, feeds: Sequence[dict[str, np.ndarray]]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [module(*(torch.from_numpy(f[k]) for k in _INPUT_KEYS)).float() for f in feeds]


def measure(model, calib: Sequence[dict[str, np.ndarray]], check: Sequence[dict[str, np.ndarray]], *, mode: str,
            keep_blocks: int = 1, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Sensitivity rows ``[{group, relative_max_error, mask_iou_pooled}]`` of ``model``'s DiT."""
    mtq = import_mtq()
    graph = DitGraph(model.one_step_dit()).eval()
    reference = _run(graph, check)
    ref_masks = [model.decode_mask(x).detach().numpy() > 0 for x in reference]
    quantized = sharing_copy(graph)
    start = time.perf_counter()
    quantized = mtq.quantize(quantized, all_linear_config(mode), lambda m: _run(m, calib))
    calibrated = time.perf_counter() - start
    rows = []
    for label, selector in groups(int(model.config.transformer["num_layers"]), keep_blocks).items():
        mtq.disable_quantizer(quantized, "*")
        mtq.enable_quantizer(quantized, selector)
        outputs = _run(quantized, check)
        error = max(float((o - r).abs().max()) for o, r in zip(outputs, reference))
        scale = max(float(r.abs().max()) for r in reference)
        masks = [model.decode_mask(o).detach().numpy() > 0 for o in outputs]
        inter = sum(int(np.count_nonzero(a & b)) for a, b in zip(masks, ref_masks))
        union = sum(int(np.count_nonzero(a | b)) for a, b in zip(masks, ref_masks))
        rows.append({"group": label, "relative_max_error": error / max(scale, 1e-12),
                     "mask_iou_pooled": inter / union if union else 1.0})
        log(f"{mode} {label}: relative max error {rows[-1]['relative_max_error']:.4f}, "
            f"mask IoU {rows[-1]['mask_iou_pooled']:.4f}")
    return {"mode": mode, "calibration_samples": len(calib), "check_samples": len(check),
            "calibration_seconds": round(calibrated, 1), "rows": rows,
            "numerics": "Model Optimizer simulated quantization in PyTorch (fake quant), float32 elsewhere"}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# DiT quantization sensitivity ({result['model']}, {result['resolution']}²)", "",
             f"Machine: {_machine(result)}; {result['numerics']}. "
             f"Calibration: {result['calibration']}; checked on {result['check']} (disjoint).", ""]
    for mode in result["modes"]:
        lines += [f"## {mode['mode'].upper()}", "", "| quantized alone | rel. max error of x0 | mask IoU vs fp32 |",
                  "|---|---:|---:|"]
        lines += [f"| {r['group']} | {r['relative_max_error']:.4f} | {r['mask_iou_pooled']:.4f} |" for r in mode["rows"]]
        lines.append("")
    return "\n".join(lines)


def _machine(result: dict[str, Any]) -> str:
    cpu = result["hardware"].get("cpu") or {}
    return f"{cpu.get('model', '?')} ({', '.join(cpu.get('flags') or []) or 'no listed ISA flags'})"
