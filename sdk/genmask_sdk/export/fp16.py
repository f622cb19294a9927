"""FP16 graphs: mixed precision with FP32 norms, softmax statistics and residual accumulation.

Two methods, one per stage, chosen for what each model's PyTorch code already guarantees:

**DiT — mixed precision by construction, then a softmax pass.** ``OneStepDiT`` is built on a
float16 copy of the transformer and exported directly (dynamo tracing of float16 modules works
on CPU). ``genmask_sdk.families.genmask.modeling.wan_forward`` keeps the residual stream, every norm, the AdaLN
modulation and the time embedding's output in float32, so the graph carries exactly those casts
— the same arithmetic a float16 PyTorch model performs, which is what a strongly typed TensorRT
network then follows. The graph's I/O stays float32 (casts in ``graphs.DitGraph``). The exporter
leaves attention Softmax in float16; ``softmax_to_fp32`` rewrites every float16 Softmax as
Cast(fp32) -> Softmax -> Cast(fp16) so softmax statistics (max, sum of exponentials) are FP32
(DESIGN.md §3). A converter pass over the fp32 graph was not used for the DiT because it would
have to rediscover the residual Adds by name, whereas the model code states them.

**VAE encoder — fp32 export, then ONNX Runtime's float16 converter** (``convert_float_to_float16``,
``keep_io_types=True``). diffusers' ``AutoencoderKLWan`` in float16 would round the residual
stream to float16 after every block (``x + h`` in model dtype); the converter lets us block, per
node: all of ``WanRMS_norm`` (ReduceL2, Clip, Expand, Div and its scale Muls, found by the module
path the exporter records in each node's metadata), every residual ``Add``, the latent
normalisation ``(z - mu) / sigma`` and the converter's default list (Range, Resize, ...), as
Qualcomm's fp16 Wan VAE recipe does (notes/wan_export.md §3). Convolutions and attention MatMuls
run in float16.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import onnx
from onnx import helper

from genmask_sdk.families.genmask.modeling import GenMaskModel, OneStepDiT
from genmask_sdk.families.genmask.modeling.model import fixed_noise
from genmask_sdk.families.genmask.export.graphs import DitGraph, ExportError, export_graph
from genmask_sdk.export.onnx_io import save_onnx

# Op types kept in float32 in the VAE encoder besides the converter's defaults.
VAE_FP32_OPS = ("ReduceL2", "ReduceMean", "ReduceSum", "Div", "Pow", "Sqrt", "Reciprocal", "Clip",
                "Add", "Sub", "LayerNormalization", "SimplifiedLayerNormalization",
                "GroupNormalization", "InstanceNormalization", "Softmax", "Sin", "Cos")
# Module-path fragments whose nodes all stay float32 (WanRMS_norm modules are named norm*, norm_out).
VAE_FP32_SCOPES = (".norm", "norm_out")


def fp16_dit_graph(model: GenMaskModel) -> DitGraph:
    """``DitGraph`` over a ``OneStepDiT`` built on a float16 deep copy of the transformer
    (the model itself is left in float32)."""
    transformer = copy.deepcopy(model.transformer).half().eval()
    return DitGraph(OneStepDiT(transformer, fixed_noise(model.config), model.config.t_star).eval())


def export_fp16_dit(model: GenMaskModel, path: Path, *, opset: int, external_data: bool) -> dict:
    """Export the fp16 DiT to ``path`` and move its softmaxes to fp32; return details for the manifest."""
    graph = fp16_dit_graph(model)
    seconds = export_graph(graph, "dit", model.config, path, opset=opset, external_data=external_data)
    del graph
    rewritten = softmax_to_fp32(path)
    return {"method": "float16 transformer (mixed precision by construction) + fp32 softmax pass",
            "softmax_fp32_nodes": rewritten, "trace_seconds": round(seconds, 2)}


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


def convert_vae_to_fp16(src: Path, dst: Path, *, external_data: bool) -> dict:
    """fp32 VAE-encoder graph ``src`` -> mixed fp16 graph ``dst`` (float32 I/O); return details."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    blocked_nodes = [n.name for n in model.graph.node if _in_scopes(n, VAE_FP32_SCOPES)]
    blocked_nodes += _latent_normalisation_nodes(model)
    op_block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(VAE_FP32_OPS))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=op_block,
                                         node_block_list=blocked_nodes)
    _drop_duplicate_nodes(converted)
    _topological_sort(converted)
    save_onnx(converted, dst, external_data)
    kept = sum(1 for n in converted.graph.node if n.name in set(blocked_nodes) or n.op_type in op_block)
    return {"method": "onnxruntime convert_float_to_float16(keep_io_types=True) with norms, residual Adds "
                      "and latent normalisation blocked to fp32",
            "fp32_op_types": sorted(VAE_FP32_OPS) + ["(converter defaults)"], "fp32_nodes": kept, "nodes": len(converted.graph.node)}


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


def _in_scopes(node: onnx.NodeProto, fragments: tuple[str, ...]) -> bool:
    return any(f in scope for scope in name_scopes(node) for f in fragments)


def _latent_normalisation_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes outside the VAE module (``VaeEncoder``'s own ``(z - mean) * inv_std`` and the slice
    selecting the mean): their scope list has no ``vae.`` entry."""
    return [n.name for n in model.graph.node
            if name_scopes(n) and not any(s.startswith("vae") for s in name_scopes(n))]
