"""INT8 DiT: explicit Q/DQ (symmetric, zero point 0) from ONNX Runtime static quantization.

Recipe (notes/trt_practice.md §2, ModelOpt's Wan filter):

* base graph: the **fp32** DiT graph. Quantized MatMuls run INT8 under TensorRT; everything else
  stays FP32. (ORT's static quantizer calibrates and inserts Q/DQ on float32 graphs; an fp16
  high-precision remainder as ModelOpt's ``high_precision_dtype="fp16"`` would need ModelOpt.)
* ``quant_pre_process(skip_optimization=True)`` first: shape inference only. Graph optimisation is
  skipped so node names and the exporter's module-path metadata survive for node selection.
* ``quantize_static(QuantFormat.QDQ, QInt8 activations and weights, per_channel=True,
  ActivationSymmetric, WeightSymmetric)``, MinMax calibration on real (z_img, context) feeds, one
  sample per batch and no prompt padding.
* quantized: only ``MatMul``/``Gemm`` nodes that multiply by a weight (the transformer blocks'
  Linear layers: q/k/v/out projections and the FFN). Left in FP32: attention score and value
  MatMuls (activation x activation), the first and last ``keep_blocks`` transformer blocks, the
  patch embedding, the text and time embedders (``condition_embedder``), ``norm_out`` and
  ``proj_out``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx

from ..errors import ConfigError
from .fp16 import name_scopes
from .graphs import ExportError
from .onnx_io import data_file_name

QUANTIZED_OP_TYPES = ("MatMul", "Gemm")
KEPT_MODULES = ("patch_embedding", "condition_embedder", "norm_out", "proj_out")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)(?:\.|$)")


def select_nodes(model: onnx.ModelProto, num_layers: int, keep_blocks: int) -> tuple[list[str], list[str]]:
    """(nodes to quantize, weighted MatMul/Gemm nodes kept in higher precision) by module path."""
    if keep_blocks < 0:
        raise ConfigError(f"keep_blocks must be >= 0, got {keep_blocks}.")
    weights = {t.name for t in model.graph.initializer}
    kept_blocks = set(range(keep_blocks)) | set(range(num_layers - keep_blocks, num_layers))
    quantize, keep = [], []
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OP_TYPES or not any(i in weights for i in node.input[1:]):
            continue
        scopes = name_scopes(node)
        blocks = {int(m.group(1)) for s in scopes for m in [_BLOCK.search(s)] if m}
        if blocks & kept_blocks or any(k in s for s in scopes for k in KEPT_MODULES) or not blocks:
            keep.append(node.name)
        else:
            quantize.append(node.name)
    return quantize, keep


class _Reader:
    """``CalibrationDataReader`` over prepared feeds, with a tqdm bar."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]], progress: bool) -> None:
        from tqdm.auto import tqdm

        self._iter: Iterator = iter(feeds)
        self._bar = tqdm(total=len(feeds), desc="int8 calibration", unit="sample", disable=not progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._iter, None)
        if item is None:
            self._bar.close()
        else:
            self._bar.update(1)
        return item

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibration methods
        raise NotImplementedError


def quantize_dit(fp32_path: Path, out_path: Path, feeds: Sequence[dict[str, np.ndarray]], *, num_layers: int,
                 keep_blocks: int = 1, external_data: bool = False, progress: bool = True) -> dict:
    """Write the Q/DQ INT8 DiT ``out_path`` from the fp32 graph ``fp32_path``; return details.

    ``feeds``: calibration inputs ``{"z_img": (1, 16, h, w) f32, "context": (1, L, D) f32,
    "context_mask": (1, L) bool}``. Raises ConfigError if ``keep_blocks`` leaves nothing to quantize.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not feeds:
        raise ConfigError("INT8 calibration needs at least one sample.")
    quantize, keep = select_nodes(onnx.load(str(fp32_path), load_external_data=False), num_layers, keep_blocks)
    if not quantize:
        raise ConfigError(
            f"no MatMul is left to quantize: the DiT has {num_layers} blocks and the first and last {keep_blocks} "
            "stay in higher precision. Lower --int8-keep-blocks (0 quantizes every block) or skip int8."
        )
    with tempfile.TemporaryDirectory(prefix="int8-", dir=out_path.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_optimization=True,
                          save_as_external_data=external_data, all_tensors_to_one_file=True,
                          external_data_location=data_file_name(prepared))
        quantize_static(
            str(prepared), str(out_path), _Reader(feeds, progress), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES), nodes_to_quantize=quantize, nodes_to_exclude=keep,
            use_external_data_format=external_data, calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    nonzero = nonzero_zero_points(out_path)
    if nonzero:
        raise ExportError(f"INT8 graph has non-zero zero points ({nonzero[:5]}...), which TensorRT rejects.")
    return {"method": "onnxruntime quantize_static QDQ, symmetric int8 (zero point 0), per-channel weights, MinMax",
            "base": "fp32", "calibration_samples": len(feeds), "quantized_nodes": len(quantize),
            "kept_weighted_nodes": len(keep), "keep_blocks": keep_blocks,
            "kept_modules": list(KEPT_MODULES) + ["attention score/value MatMuls"]}


def nonzero_zero_points(path: Path) -> list[str]:
    """Names of Q/DQ zero-point initialisers with any non-zero value (should be none)."""
    model = onnx.load(str(path))
    points = {n.input[2] for n in model.graph.node
              if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2}
    return [t.name for t in model.graph.initializer
            if t.name in points and np.any(onnx.numpy_helper.to_array(t) != 0)]
