"""The ``int8-dynamic`` DiT: a CPU-targeted graph with int8 weights and activations quantized at run time.

First the fp32 graph gets ONNX Runtime's fused norm and GELU kernels (``ort_fusions.py``), then
ONNX Runtime's ``quantize_dynamic`` rewrites every MatMul whose second input is a constant weight
(``MatMulConstBOnly``) into ``DynamicQuantizeLinear`` + ``MatMulInteger`` (uint8 activations with
a per-call scale, int8 per-tensor weights): the int8 GEMM path of ONNX Runtime's CPU provider
(AVX-512-VNNI / AMX / AVX2 kernels). Nothing is calibrated: activation ranges are measured on every
call, so there is no calibration set to mismatch. The graph runs on ONNX Runtime (CPU) and on
OpenVINO; TensorRT has no MatMulInteger, so this set never gets plans (``CPU_SETS``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from genmask_sdk.export.onnx_io import external_data_files

INT8_DYNAMIC_METHOD = ("onnxscript ort_fusions (SimplifiedLayerNormalization, SkipLayerNormalization, FastGelu) on "
                       "the fp32 DiT graph, then onnxruntime.quantization.quantize_dynamic: MatMul with constant "
                       "weights only (MatMulConstBOnly), QInt8 per-tensor weights, uint8 activations quantized at "
                       "run time (DynamicQuantizeLinear + MatMulInteger); for CPUs (ONNX Runtime, OpenVINO)")


def quantize_dynamic_dit(source: Path, out: Path) -> dict[str, Any]:
    """Write the ``int8-dynamic`` DiT ``out`` from the fp32 DiT graph ``source``; returns the
    manifest's ``details`` (method, base precision, whether weights are external data, fusion counts)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from genmask_sdk.export.ort_fusions import fuse_for_onnxruntime

    external = bool(external_data_files(source))
    out.unlink(missing_ok=True)
    out.with_name(out.name + ".data").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fused-") as scratch:  # same disk as out
        fused = Path(scratch) / "dit.fused.onnx"
        fusions = fuse_for_onnxruntime(source, fused, external)
        quantize_dynamic(str(fused), str(out), op_types_to_quantize=["MatMul"], per_channel=False,
                         weight_type=QuantType.QInt8, use_external_data_format=external,
                         extra_options={"MatMulConstBOnly": True})
    return {"method": INT8_DYNAMIC_METHOD, "base": "fp32", "external_data": external, "fusions": fusions}
