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

import copy
from pathlib import Path

import onnx

from genmask_sdk.export.fp16 import convert_to_fp16, in_scopes, name_scopes, softmax_to_fp32
from genmask_sdk.families.genmask.export.graphs import DitGraph, export_graph
from genmask_sdk.families.genmask.modeling import GenMaskModel, OneStepDiT
from genmask_sdk.families.genmask.modeling.model import fixed_noise


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


def convert_vae_to_fp16(src: Path, dst: Path, *, external_data: bool) -> dict:
    """fp32 VAE-encoder graph ``src`` -> mixed fp16 graph ``dst`` (float32 I/O); return details."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    model = onnx.load(str(src))
    blocked_nodes = [n.name for n in model.graph.node if in_scopes(n, VAE_FP32_SCOPES)]
    blocked_nodes += _latent_normalisation_nodes(model)
    converted = convert_to_fp16(model, dst, external_data=external_data, keep_fp32_ops=VAE_FP32_OPS,
                                keep_fp32_nodes=blocked_nodes)
    op_block = set(DEFAULT_OP_BLOCK_LIST) | set(VAE_FP32_OPS)
    kept = sum(1 for n in converted.graph.node if n.name in set(blocked_nodes) or n.op_type in op_block)
    return {"method": "onnxruntime convert_float_to_float16(keep_io_types=True) with norms, residual Adds "
                      "and latent normalisation blocked to fp32",
            "fp32_op_types": sorted(VAE_FP32_OPS) + ["(converter defaults)"], "fp32_nodes": kept, "nodes": len(converted.graph.node)}


def _latent_normalisation_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes outside the VAE module (``VaeEncoder``'s own ``(z - mean) * inv_std`` and the slice
    selecting the mean): their scope list has no ``vae.`` entry."""
    return [n.name for n in model.graph.node
            if name_scopes(n) and not any(s.startswith("vae") for s in name_scopes(n))]
