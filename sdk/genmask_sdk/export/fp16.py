"""FP16 graphs, the family-agnostic passes: ONNX Runtime's float16 converter with the blocks a
family asks for (``convert_to_fp16``), the softmax-statistics pass (``softmax_to_fp32``) and the
graph repairs the converter needs (duplicate Casts, node order). Each family's recipe (which ops
and nodes stay float32, and why) is in its ``export/`` folder: GenMask's DiT and VAE in
``families/genmask/export/fp16.py``, gen2seg's graphs in ``families/gen2seg/export/build.py``.
"""

from __future__ import annotations

import ast
from typing import Sequence
from pathlib import Path

import onnx
from onnx import helper

from genmask_sdk.errors import ExportError
from genmask_sdk.export.onnx_io import save_onnx


def softmax_to_fp32(path: str | Path) -> int:
    """Rewrite each float16 ``Softmax`` in the file as Cast(fp32) -> Softmax -> Cast(fp16), in place.

    Only the graph structure is rewritten; external weight files are left untouched. Returns the
    number of Softmax nodes changed. Raises ExportError if a Softmax input type is unknown.
    """
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    types = _elem_types(model)
    nodes, changed = [], 0
    for node in model.graph.node:
        if node.op_type != "Softmax":
            nodes.append(node)
            continue
        elem = types.get(node.input[0])
        if elem is None:
            raise ExportError(f"softmax_to_fp32: type of {node.input[0]!r} (input of {node.name}) is unknown.")
        if elem != onnx.TensorProto.FLOAT16:
            nodes.append(node)
            continue
        src, dst = node.input[0], node.output[0]
        up, out32 = f"{src}__fp32", f"{dst}__fp32"
        nodes.append(helper.make_node("Cast", [src], [up], name=f"{node.name}__cast_in", to=onnx.TensorProto.FLOAT))
        node.input[0], node.output[0] = up, out32
        nodes.append(node)
        nodes.append(helper.make_node("Cast", [out32], [dst], name=f"{node.name}__cast_out", to=onnx.TensorProto.FLOAT16))
        changed += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))
    return changed


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX element type, from the graph's value_info or, if missing, shape inference
    (run on the weight-less proto, so it works for models with > 2 GB external data)."""
    def collect(m: onnx.ModelProto) -> dict[str, int]:
        values = list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)
        found = {v.name: v.type.tensor_type.elem_type for v in values if v.type.HasField("tensor_type")}
        found.update({t.name: t.data_type for t in m.graph.initializer})
        return found

    found = collect(model)
    softmax_inputs = [n.input[0] for n in model.graph.node if n.op_type == "Softmax"]
    if all(name in found for name in softmax_inputs):
        return found
    return collect(onnx.shape_inference.infer_shapes(model))


def _drop_duplicate_nodes(model: onnx.ModelProto) -> None:
    """Remove repeated identical nodes (same name, op, inputs, outputs). The converter emits the
    same input Cast twice when a graph input feeds two blocked nodes, which ORT rejects."""
    seen, kept = set(), []
    for node in model.graph.node:
        key = (node.name, node.op_type, tuple(node.input), tuple(node.output))
        if key not in seen:
            seen.add(key)
            kept.append(node)
    if len(kept) != len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(kept)


def _topological_sort(model: onnx.ModelProto) -> None:
    """Order nodes so each comes after the producers of its inputs (the converter appends the
    Casts it inserts after their consumers; ORT sorts on load, onnx.checker and TensorRT do not)."""
    graph = model.graph
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        remaining = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise ExportError(f"graph has a cycle or dangling inputs at {remaining[0].name!r} ({list(remaining[0].input)}).")
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)


def name_scopes(node: onnx.NodeProto) -> list[str]:
    """The module paths the dynamo exporter recorded for a node (``[]`` if none)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def convert_to_fp16(model: onnx.ModelProto, dst: Path, *, external_data: bool, keep_fp32_ops: Sequence[str] = (),
                    keep_fp32_nodes: Sequence[str] = (), shape_inference: bool = True) -> onnx.ModelProto:
    """An fp32 graph -> mixed fp16 graph saved at ``dst`` with float32 I/O (ONNX Runtime's
    ``convert_float_to_float16(keep_io_types=True)``), keeping float32 the op types ``keep_fp32_ops``
    on top of the converter's own ``DEFAULT_OP_BLOCK_LIST`` and the nodes named ``keep_fp32_nodes``;
    duplicate Casts dropped and nodes sorted (what onnx.checker and TensorRT need). Returns the
    converted graph. ``shape_inference=False`` for sources past protobuf's 2 GB (they keep the
    exporter's value_info)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    op_block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=op_block,
                                         node_block_list=list(keep_fp32_nodes) or None,
                                         disable_shape_infer=not shape_inference)
    _drop_duplicate_nodes(converted)
    _topological_sort(converted)
    save_onnx(converted, dst, external_data)
    return converted


def in_scopes(node: onnx.NodeProto, fragments: tuple[str, ...]) -> bool:
    """Whether any module path the exporter recorded for ``node`` contains one of ``fragments``."""
    return any(f in scope for scope in name_scopes(node) for f in fragments)
