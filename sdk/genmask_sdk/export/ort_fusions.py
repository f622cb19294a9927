"""ONNX Runtime's fused CPU kernels for the decomposed norms and GELU of an exported DiT graph.

``torch.onnx.export`` writes diffusers' RMSNorm (``norm_q``/``norm_k``) as Pow, ReduceMean, Add,
Sqrt, Reciprocal, Mul, Mul; its tanh-GELU as eight elementwise ops; and LayerNorm + residual Add
apart. onnxscript's maintained rewrite rules for dynamo exports (``onnxscript.rewriter.ort_fusions``)
replace them by ONNX Runtime's own ops ``SimplifiedLayerNormalization`` (registered in the default
domain, unknown to ``onnx.checker``), ``FastGelu`` and ``SkipLayerNormalization`` (``com.microsoft``);
OpenVINO reads them too. Attention is left as
MatMul + Softmax: on a CPU, ONNX Runtime's ``MultiHeadAttention`` kernel was slower than the two
MatMuls at 512 tokens (measured on the real-width DiT, ``benchmarks/README.md``).

The exporter writes the RMSNorm reduction axis as a positive index (``[2]``); the rule matches only
``[-1]``, so last-axis reductions are renamed first (same arithmetic). The fused graph is the base of
the CPU set only: the TensorRT-oriented graphs keep the standard op set (JetPack 6's TensorRT 10.3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

def fuse_for_onnxruntime(source: Path, out: Path, external_data: bool) -> dict[str, int]:
    """Write ``out`` (weights in ``<out>.data`` when ``external_data``): ``source`` with the RMSNorm,
    skip-LayerNorm and GELU fusions applied; returns how many of each were applied (and how many
    reductions were renamed). Raises ``InvalidStateError`` when the graph has no RMSNorm or GELU the
    rules recognise (an exporter change that would silently lose them)."""
    import onnx_ir as ir
    from onnxscript import optimizer
    from onnxscript.rewriter.ort_fusions import gelu, rms_normalization, skip_normalization

    from genmask_sdk.errors import InvalidStateError

    model = ir.load(str(source))
    renamed = _reduce_over_last_axis_as_minus_one(model, ir)
    ir.passes.common.ShapeInferencePass()(model)
    optimizer.optimize(model)
    counts = {
        "rms_normalization": rms_normalization.fuse_rms_normalization(model),
        "skip_layer_normalization": skip_normalization.fuse_skip_layer_normalization(model),
        "gelu": gelu.fuse_gelu(model),
    }
    optimizer.optimize(model)
    if not counts["rms_normalization"] or not counts["gelu"]:
        raise InvalidStateError(f"the ONNX Runtime fusions found no RMSNorm or GELU in {source.name} ({counts}); "
                                "the exported graph's patterns changed: update export/ort_fusions.py.")
    out.unlink(missing_ok=True)
    data = out.with_name(out.name + ".data")
    data.unlink(missing_ok=True)
    if external_data:
        ir.save(model, str(out), external_data=data.name)
    else:
        ir.save(model, str(out))
    return {**counts, "reductions_renamed": renamed}


def _reduce_over_last_axis_as_minus_one(model, ir) -> int:
    """Point every ReduceMean over its input's last axis (given as a positive constant) at a shared
    ``[-1]`` axes initializer; returns how many were changed."""
    last = None
    changed = 0
    for node in model.graph:
        if node.op_type != "ReduceMean" or len(node.inputs) < 2 or node.inputs[1] is None:
            continue
        axes, data = node.inputs[1].const_value, node.inputs[0]
        if axes is None or data.shape is None:
            continue
        if axes.numpy().tolist() != [len(data.shape) - 1]:
            continue
        if last is None:
            last = ir.Value(name="reduce_last_axis", const_value=ir.tensor(np.array([-1], dtype=np.int64)))
            model.graph.register_initializer(last)
        node.replace_input_with(1, last)
        changed += 1
    return changed
