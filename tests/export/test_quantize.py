"""INT8 / FP8 through NVIDIA Model Optimizer: calibration in PyTorch, Q/DQ written into the fp32
dynamo graph, numerics equal to Model Optimizer's simulated quantization, the caller's model
untouched, loud errors. The builds' int8/fp8 sets are tested in test_export.py (tiny) and
test_export_demo.py (demo accuracy)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ConfigError
from genmask_sdk.families.genmask.export.graphs import DitGraph, ExportError, export_graph
from genmask_sdk.export.modelopt_calib import (
    LayerQuant,
    calibrate_dit,
    fake_quant_forward,
    quant_config,
    quantized_block_ids,
    sharing_copy,
)
from genmask_sdk.export.qdq import quantize_weight, scales, write_qdq_graph
from genmask_sdk.export.quantize import quantize_dit
from genmask_sdk.families.genmask.modeling import GenMaskModel
from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner

pytest.importorskip("modelopt.torch.quantization", reason="nvidia-modelopt is not installed (export extra)")


def feeds(n: int, seed: int, length: int = 6) -> list[dict[str, np.ndarray]]:
    generator = torch.Generator().manual_seed(seed)
    return [{"z_img": torch.randn(1, 16, 4, 4, generator=generator).numpy(),
             "context": torch.randn(1, length, 384, generator=generator).numpy(),
             "context_mask": np.ones((1, length), bool)} for _ in range(n)]


@pytest.fixture(scope="module")
def tiny3(tmp_path_factory):
    """(DitGraph of a 3-block tiny model, its fp32 graph path)."""
    torch.manual_seed(1)
    config = GenMaskConfig.preset("tiny", embedder="minilm")
    config = config.replace(transformer={**config.transformer, "num_layers": 3})
    model = GenMaskModel.from_config(config)
    graph = DitGraph(model.one_step_dit()).eval()
    path = tmp_path_factory.mktemp("quant") / "dit.fp32.onnx"
    export_graph(graph, "dit", config, path)
    return graph, path


def run(path, feed) -> np.ndarray:
    with OnnxRuntimeRunner(path) as runner:
        (out,) = runner.infer(feed).values()
    return np.asarray(out)


def test_weight_and_scale_numerics():
    w_t = np.array([[0.5, -2.0], [1.0, 0.0]], np.float32)  # (in=2, out=2)
    s = scales(np.array([1.0, 2.0]), "int8")
    assert np.allclose(s, [1 / 127, 2 / 127])
    assert quantize_weight(w_t, s, "int8").tolist() == [[64, -127], [127, 0]]  # round half to even: 63.5 -> 64
    assert scales(np.array([0.0]), "int8").tolist() == [1.0]  # an all-zero channel stays 0, no zero scale
    f8 = quantize_weight(w_t, scales(np.array([2.0]), "fp8"), "fp8")
    assert str(f8.dtype) == "float8_e4m3fn" and float(f8[0, 1]) == -448.0


def test_block_selection_and_config():
    assert quantized_block_ids(5, 1) == [1, 2, 3]
    assert quantized_block_ids(2, 0) == [0, 1]
    with pytest.raises(ConfigError, match="--int8-keep-blocks"):
        quantized_block_ids(2, 1)
    with pytest.raises(ConfigError, match="keep_blocks must be >= 0"):
        quantized_block_ids(2, -1)
    with pytest.raises(ConfigError, match="mode must be one of"):
        quant_config("int4", [0])
    names = [e["quantizer_name"] for e in quant_config("fp8", [1])["quant_cfg"]]
    assert names[0] == "*" and "*.blocks.1.*weight_quantizer" in names and "*proj_out*" in names


def test_sharing_copy_shares_weights_but_not_modules(tiny3):
    graph, _ = tiny3
    copy = sharing_copy(graph)
    assert copy is not graph and copy.dit is not graph.dit
    for (_, a), (_, b) in zip(graph.named_parameters(), copy.named_parameters()):
        assert a is b


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_qdq_graph_matches_model_optimizer_and_leaves_the_model_untouched(tiny3, tmp_path, mode):
    graph, fp32_path = tiny3
    probe = feeds(1, seed=99)[0]
    with torch.no_grad():
        before = graph(*(torch.from_numpy(probe[k]) for k in ("z_img", "context", "context_mask"))).numpy()
    layers, fake = calibrate_dit(graph, feeds(6, seed=0), mode=mode, num_layers=3, keep_blocks=1, progress=False)
    assert {layer.module.split(".blocks.")[1].split(".")[0] for layer in layers} == {"1"}  # block 1 only
    assert len(layers) == 10  # (q, k, v, out) x 2 attentions + 2 FFN linears
    out = tmp_path / f"dit.{mode}.onnx"
    info = write_qdq_graph(fp32_path, out, layers, mode=mode, external_data=False)
    assert info == {"quantized_matmuls": 10, "quantized_ops": {"MatMul": 10}, "opset": 18 if mode == "int8" else 19}
    onnx_out, simulated = run(out, probe), fake_quant_forward(fake, probe)
    fp32_out = run(fp32_path, probe)
    # the Q/DQ graph is Model Optimizer's quantization (to rounding-boundary flips), not just "close to fp32"
    assert np.abs(onnx_out - simulated).max() <= 0.02 * np.abs(simulated).max()
    assert np.abs(onnx_out - fp32_out).max() > np.abs(onnx_out - simulated).max()
    with torch.no_grad():
        after = graph(*(torch.from_numpy(probe[k]) for k in ("z_img", "context", "context_mask"))).numpy()
    assert np.array_equal(before, after)  # the build's float32 model is not modified


def test_qdq_graph_layout(tiny3, tmp_path):
    graph, fp32_path = tiny3
    layers, _ = calibrate_dit(graph, feeds(2, seed=0), mode="int8", num_layers=3, keep_blocks=0, progress=False)
    out = tmp_path / "dit.int8.onnx"
    write_qdq_graph(fp32_path, out, layers, mode="int8", external_data=True)
    assert (tmp_path / "dit.int8.onnx.data").is_file()
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in producers
               and producers[n.input[1]].op_type == "DequantizeLinear"]
    assert len(matmuls) == 30
    inits = {t.name: t for t in model.graph.initializer}
    for node in matmuls:
        dq_w, dq_a = producers[node.input[1]], producers[node.input[0]]
        assert dq_a.op_type == "DequantizeLinear" and producers[dq_a.input[0]].op_type == "QuantizeLinear"
        assert inits[dq_w.input[0]].data_type == onnx.TensorProto.INT8
        assert [a.i for a in dq_w.attribute if a.name == "axis"] == [1]  # per output channel of W^T (in, out)
        for zp in (dq_w.input[2], dq_a.input[2]):
            assert not onnx.numpy_helper.to_array(inits[zp]).any()  # symmetric: TensorRT needs zero points 0
    float_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2
                     and "blocks" in t.name]
    assert not float_weights  # replaced weights are gone, not kept beside their int8 copy


def test_a_layer_missing_from_the_graph_is_an_export_error(tiny3, tmp_path):
    _, fp32_path = tiny3
    ghost = LayerQuant("dit.transformer.blocks.7.attn1.to_q", 1.0, np.ones(32, np.float32), np.ones((32, 32), np.float32))
    with pytest.raises(ExportError, match="no MatMul/Gemm/Conv in the graph"):
        write_qdq_graph(fp32_path, tmp_path / "x.onnx", [ghost], mode="int8", external_data=False)
    assert not (tmp_path / "x.onnx").exists()


def test_quantize_dit_details_and_errors(tiny3, tmp_path):
    graph, fp32_path = tiny3
    details = quantize_dit(graph, fp32_path, tmp_path / "dit.fp8.onnx", feeds(2, seed=0), mode="fp8", num_layers=3,
                           keep_blocks=1, progress=False)
    assert details["method"].startswith("NVIDIA Model Optimizer") and "FP8 E4M3" in details["method"]
    assert details["quantized_blocks"] == [1] and details["calibration_samples"] == 2
    assert "transformer blocks [0, 2]" in details["kept_in_float32"] and "proj_out" in details["kept_in_float32"]
    with pytest.raises(ConfigError, match="at least one sample"):
        quantize_dit(graph, fp32_path, tmp_path / "y.onnx", [], mode="int8", num_layers=3)
