"""Write Model Optimizer's calibration into an fp32 graph as explicit Q/DQ (TensorRT's strongly
typed explicit quantization; notes/trt_practice.md §0, §2).

For every calibrated layer (``modelopt_calib.LayerQuant``) the exporter wrote one node whose weight
is an initialiser and whose name scopes name the module: a Linear is ``MatMul(A, Wᵀ)`` (``Wᵀ``
(in, out); on 2-D inputs possibly ``Gemm(A, W, transB=1)``), a Conv2d is ``Conv(A, W)`` (W (out,
in, kh, kw)). Each becomes (bias inputs untouched, float32)::

    A -> QuantizeLinear(s_a, 0) -> DequantizeLinear(s_a, 0) ─┐
    Wq -> DequantizeLinear(s_w, 0, axis=<output-channel axis>) ┴─> MatMul / Gemm / Conv

with the output-channel axis 1 for ``Wᵀ`` (in, out) and 0 for W (out, ...).

* INT8: ``s_a = amax_a / 127`` per tensor, ``s_w = amax_w / 127`` per output channel, ``Wq`` int8
  = round-half-even(W / s_w), zero points 0 (symmetric: TensorRT rejects others);
* FP8 E4M3: ``s = amax / 448`` per tensor for both, ``Wq`` float8e4m3fn, zero points float8 0.
  ``QuantizeLinear`` to float8 needs opset 19: an FP8 graph declares opset ``max(19, opset)``.

These are the numerics of Model Optimizer's fake quantization, so the graph under ONNX Runtime
matches ``modelopt_calib.fake_quant_forward`` (tested). Memory: the fp32 graph is read without its
weights; only the float32 initialisers that stay (norms, embeddings, kept blocks, folded
constants) are loaded, the quantized weights come from the calibrated layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from genmask_sdk.errors import ExportError
from genmask_sdk.export.modelopt_calib import LayerQuant, module_of
from genmask_sdk.export.onnx_io import check_onnx, save_onnx
from genmask_sdk.export.fp16 import name_scopes

FP8_MIN_OPSET = 19
#: Op types whose second input (an initialiser) is a calibrated layer's weight.
_WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
_MAX = {"int8": 127.0, "fp8": 448.0}


def quantize_weight(weight: np.ndarray, scale: np.ndarray, mode: str, axis: int = 1) -> np.ndarray:
    """float32 ``weight`` / ``scale`` ((out,) along ``axis``, or (1,)) -> int8 or float8e4m3fn, same shape.
    The default ``axis=1`` is a MatMul's ``Wᵀ`` (in, out)."""
    shape = [1] * weight.ndim
    shape[axis] = -1
    scaled = weight / scale.reshape(shape)
    if mode == "int8":
        return np.clip(np.rint(scaled), -128, 127).astype(np.int8)
    import ml_dtypes

    return np.clip(scaled, -448.0, 448.0).astype(ml_dtypes.float8_e4m3fn)


def scales(amax: np.ndarray | float, mode: str) -> np.ndarray:
    """float32 scales ``amax / max`` (zero amax -> 1: an all-zero channel quantizes to 0 either way)."""
    amax = np.asarray(amax, dtype=np.float32).reshape(-1)
    out = amax / np.float32(_MAX[mode])
    return np.where(out > 0, out, np.float32(1.0)).astype(np.float32)


def _zero_point(name: str, mode: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    if mode == "int8":
        return numpy_helper.from_array(np.zeros(shape, dtype=np.int8), name)
    import ml_dtypes

    return numpy_helper.from_array(np.zeros(shape, dtype=ml_dtypes.float8_e4m3fn), name)


class _Writer:
    """Collects the new nodes and initialisers of one graph."""

    def __init__(self, model: onnx.ModelProto, layers: Sequence[LayerQuant], mode: str) -> None:
        self.model, self.mode = model, mode
        self.layers = {layer.module: layer for layer in layers}
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.new_initializers: list[onnx.TensorProto] = []
        self.replaced_weights: set[str] = set()
        self.done: dict[str, str] = {}  # module -> node name

    def rewrite(self) -> list[onnx.NodeProto]:
        nodes: list[onnx.NodeProto] = []
        for node in self.model.graph.node:
            module = self._quantizable(node)
            if module is not None:
                nodes += self._quantize_node(node, self.layers[module])
                self.done[module] = node.name
            nodes.append(node)
        missing = sorted(set(self.layers) - set(self.done))
        if missing:
            raise ExportError(f"Q/DQ: {len(missing)} calibrated layers have no MatMul/Gemm/Conv in the graph "
                              f"({missing[:3]}...); "
                              "the export's name scopes no longer match the model.")
        return nodes

    def _quantizable(self, node: onnx.NodeProto) -> str | None:
        if node.op_type not in _WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in self.initializers:
            return None
        module = module_of(name_scopes(node), set(self.layers))
        if module is not None and module in self.done:
            raise ExportError(f"Q/DQ: {module} maps to two nodes ({self.done[module]}, {node.name}).")
        return module

    def _graph_weight(self, node: onnx.NodeProto, layer: LayerQuant) -> tuple[np.ndarray, int]:
        """The layer's weight as the node stores it, and that tensor's output-channel axis."""
        if layer.kind == "conv":
            if node.op_type != "Conv":
                raise ExportError(f"Q/DQ: {layer.module} is a Conv2d but its node {node.name} is a {node.op_type}.")
            weight, axis = layer.weight, 0
        elif node.op_type == "MatMul":
            weight, axis = layer.weight.T, 1
        elif node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            weight, axis = (layer.weight, 0) if attrs.get("transB", 0) else (layer.weight.T, 1)
        else:
            raise ExportError(f"Q/DQ: {layer.module} is a Linear but its node {node.name} is a {node.op_type}.")
        stored = tuple(self.initializers[node.input[1]].dims)
        if stored != weight.shape:
            raise ExportError(f"Q/DQ: {layer.module}'s weight is {stored} in the graph ({node.op_type}), "
                              f"{weight.shape} in the model.")
        return weight, axis

    def _quantize_node(self, node: onnx.NodeProto, layer: LayerQuant) -> list[onnx.NodeProto]:
        weight_name = node.input[1]
        weight, axis = self._graph_weight(node, layer)
        prefix = f"{layer.module}.{self.mode}"
        s_a = scales(layer.input_amax, self.mode).reshape(())
        s_w = scales(layer.weight_amax, self.mode)
        per_channel = s_w.size > 1
        self.new_initializers += [
            numpy_helper.from_array(s_a, f"{prefix}.input_scale"),
            _zero_point(f"{prefix}.input_zero_point", self.mode, ()),
            numpy_helper.from_array(quantize_weight(weight, s_w, self.mode, axis), f"{prefix}.weight_quantized"),
            numpy_helper.from_array(s_w if per_channel else s_w.reshape(()), f"{prefix}.weight_scale"),
            _zero_point(f"{prefix}.weight_zero_point", self.mode, s_w.shape if per_channel else ()),
        ]
        self.replaced_weights.add(weight_name)
        q_in = [node.input[0], f"{prefix}.input_scale", f"{prefix}.input_zero_point"]
        dq_w = [f"{prefix}.weight_quantized", f"{prefix}.weight_scale", f"{prefix}.weight_zero_point"]
        new = [
            helper.make_node("QuantizeLinear", q_in, [f"{prefix}.input_q"], name=f"{prefix}.input_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{prefix}.input_q", *q_in[1:]], [f"{prefix}.input_dq"],
                             name=f"{prefix}.input_DequantizeLinear"),
            helper.make_node("DequantizeLinear", dq_w, [f"{prefix}.weight_dq"], name=f"{prefix}.weight_DequantizeLinear",
                             **({"axis": axis} if per_channel else {})),
        ]
        node.input[0], node.input[1] = f"{prefix}.input_dq", f"{prefix}.weight_dq"
        return new


def write_qdq_graph(fp32_path: str | Path, out_path: str | Path, layers: Sequence[LayerQuant], *, mode: str,
                    external_data: bool) -> dict:
    """Write the Q/DQ graph of ``fp32_path`` to ``out_path``; return ``{"quantized_matmuls"`` (all
    quantized nodes), ``"quantized_ops"`` ({op type: count}), ``"opset"}``.

    Raises ExportError when a calibrated layer has no (or two) nodes in the graph or the weight
    shapes disagree: the graph and the model must come from the same checkpoint.
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    model = onnx.load(str(fp32_path), load_external_data=False)
    writer = _Writer(model, layers, mode)
    nodes = writer.rewrite()
    still_used = {i for n in nodes for i in n.input}
    kept = [t for t in model.graph.initializer if t.name not in writer.replaced_weights or t.name in still_used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.external_data_helper.load_external_data_for_model(model, str(fp32_path.parent))  # only what stays
    model.graph.initializer.extend(writer.new_initializers)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    opset = _default_opset(model)
    if mode == "fp8" and opset < FP8_MIN_OPSET:
        _set_default_opset(model, FP8_MIN_OPSET)
        opset = FP8_MIN_OPSET
    save_onnx(model, out_path, external_data)
    del model
    check_onnx(out_path)
    ops: dict[str, int] = {}
    for node in nodes:
        if node.name in set(writer.done.values()):
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"quantized_matmuls": len(writer.done), "quantized_ops": dict(sorted(ops.items())), "opset": opset}


def _default_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _set_default_opset(model: onnx.ModelProto, version: int) -> None:
    """Raise the default-domain opset (18 -> 19 changes no semantics of the ops the DiT uses; the
    checker and ONNX Runtime verify the result)."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = version
