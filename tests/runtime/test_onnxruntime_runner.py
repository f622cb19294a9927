"""OnnxRuntimeRunner on tiny ONNX graphs: outputs, validation, load errors, provider choice."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    ConfigError,
    InputTypeError,
    InvalidInputError,
)
from genmask_sdk.runtime.base import RunnerClosedError, TensorSpec
from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner
from tiny_onnx import random_feeds, reference, save_affine_and_mask

CUDA_MISSING = "needs a CUDA GPU; torch.cuda.is_available() is False on this machine"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_affine_and_mask(tmp_path_factory.mktemp("ort") / "tiny.onnx")


@pytest.fixture(scope="module")
def runner(model_path):
    with OnnxRuntimeRunner(model_path, intra_op_num_threads=1) as r:
        yield r


@pytest.mark.parametrize("batch", [1, 5])
def test_cpu_outputs_match_numpy_for_dynamic_batch(runner, batch):
    feeds = random_feeds(batch, seed=batch)
    out = runner.infer(feeds)
    expected = reference(**feeds)
    assert set(out) == {"y", "m"}
    for name in expected:
        assert isinstance(out[name], np.ndarray)
        np.testing.assert_allclose(out[name], expected[name], rtol=1e-5, atol=1e-6)


def test_specs_describe_graph_io(runner):
    assert runner.input_specs == [
        TensorSpec("x", "float32", (None, 3)),
        TensorSpec("mask", "bool", (None,)),
    ]
    assert runner.output_specs == [
        TensorSpec("y", "float32", (None, 4)),
        TensorSpec("m", "float32", (None,)),
    ]


def test_session_options_applied(model_path):
    with OnnxRuntimeRunner(
        model_path, intra_op_num_threads=2, graph_optimization_level="disable"
    ) as r:
        options = r._session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        out = r.infer(random_feeds(2))
    np.testing.assert_allclose(out["y"], reference(**random_feeds(2))["y"], rtol=1e-5)


def test_spinning_can_be_turned_back_on(model_path):
    with OnnxRuntimeRunner(model_path, allow_spinning=True) as r:
        assert r._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_wrong_dtype_is_reported_polygraphy_style(runner):
    feeds = random_feeds(2)
    feeds["x"] = feeds["x"].astype(np.float64)
    with pytest.raises(InvalidInputError) as err:
        runner.infer(feeds)
    assert "Input tensor: x | Received unexpected dtype: float64" in str(err.value)
    assert "Expected type: float32" in str(err.value)


@pytest.mark.parametrize("shape", [(2,), (2, 4), (2, 3, 1)])
def test_wrong_shape_is_reported_polygraphy_style(runner, shape):
    feeds = random_feeds(2)
    feeds["x"] = np.zeros(shape, np.float32)
    with pytest.raises(InvalidInputError) as err:
        runner.infer(feeds)
    assert f"Input tensor: x | Received incompatible shape: {shape}" in str(err.value)
    assert "Expected a shape compatible with: ('?', 3)" in str(err.value)


def test_missing_and_extra_inputs_are_named(runner):
    feeds = random_feeds(2)
    feeds["extra"] = feeds.pop("mask")
    with pytest.raises(InvalidInputError) as err:
        runner.infer(feeds)
    message = str(err.value)
    assert "missing inputs: ['mask']" in message and "extra inputs: ['extra']" in message


def test_torch_tensors_on_cpu_provider_are_refused(runner):
    torch = pytest.importorskip("torch")
    feeds = {k: torch.from_numpy(v) for k, v in random_feeds(2).items()}
    with pytest.raises(InputTypeError, match="provider='cpu' takes numpy arrays on the host: pass tensor.cpu"):
        runner.infer(feeds)
    mixed = {"x": feeds["x"], "mask": random_feeds(2)["mask"]}
    with pytest.raises(InputTypeError, match=r"Input tensor: x \| Received a torch tensor on cpu"):
        runner.infer(mixed)
    with pytest.raises(InputTypeError, match="Received list; onnxruntime takes numpy arrays, onnxruntime OrtValues"):
        runner.infer({"x": [[0.0, 0.0, 0.0]], "mask": random_feeds(1)["mask"]})


# ---- IOBinding (the GPU path's code, run here on the CPU provider with CPU OrtValues) -------------


@pytest.fixture(scope="module")
def bound_runner(model_path):
    with OnnxRuntimeRunner(model_path, intra_op_num_threads=1, device_outputs=True) as r:
        yield r


def test_device_outputs_are_ortvalues_from_iobinding(bound_runner):
    feeds = random_feeds(3, seed=7)
    out = bound_runner.infer(feeds)
    expected = reference(**feeds)
    for name in expected:
        assert isinstance(out[name], ort.OrtValue) and out[name].device_name().lower() == "cpu"
        np.testing.assert_allclose(out[name].numpy(), expected[name], rtol=1e-5, atol=1e-6)


def test_ortvalue_outputs_chain_into_the_next_run_without_host_arrays(bound_runner):
    """OrtValues (what a stage returns) are bound as inputs of the next run as they are."""
    feeds = random_feeds(2, seed=3)
    values = {k: ort.OrtValue.ortvalue_from_numpy(v, "cpu", 0) for k, v in feeds.items()}
    out = bound_runner.infer(values)
    np.testing.assert_allclose(out["y"].numpy(), reference(**feeds)["y"], rtol=1e-5, atol=1e-6)
    mixed = bound_runner.infer({"x": values["x"], "mask": feeds["mask"]})  # OrtValue + numpy
    np.testing.assert_allclose(mixed["m"].numpy(), reference(**feeds)["m"], rtol=1e-5, atol=1e-6)


def test_bound_inputs_are_checked_like_host_ones(bound_runner):
    feeds = random_feeds(2)
    wrong = ort.OrtValue.ortvalue_from_numpy(feeds["x"].astype(np.float64), "cpu", 0)
    with pytest.raises(InvalidInputError, match=r"Input tensor: x \| Received unexpected dtype: float64"):
        bound_runner.infer({"x": wrong, "mask": feeds["mask"]})
    narrow = ort.OrtValue.ortvalue_from_numpy(np.zeros((2, 5), np.float32), "cpu", 0)
    with pytest.raises(InvalidInputError, match=r"Received incompatible shape: \(2, 5\)"):
        bound_runner.infer({"x": narrow, "mask": feeds["mask"]})


def test_cuda_arrays_are_refused_by_the_cpu_provider(bound_runner):
    class FakeCudaArray:  # what torch / CuPy / DeviceArray expose
        __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (1 << 20, False), "version": 3}

    with pytest.raises(InputTypeError, match="provider='cpu' takes numpy arrays"):
        bound_runner.infer({"x": FakeCudaArray(), "mask": random_feeds(2)["mask"]})


def test_missing_file_raises_not_found(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        OnnxRuntimeRunner(tmp_path / "nope.onnx").load()


def test_corrupt_file_raises_mismatch_with_rebuild_hint(tmp_path):
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(b"\x08\x07not really a protobuf" * 8)
    with pytest.raises(ArtifactMismatchError) as err:
        OnnxRuntimeRunner(path).load()
    assert "corrupt" in str(err.value) and "export/build_engines.py" in str(err.value)


def test_missing_external_data_raises_not_found(tmp_path):
    path = save_affine_and_mask(tmp_path / "ext.onnx", external_data=True)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ArtifactNotFoundError) as err:
        OnnxRuntimeRunner(path).load()
    assert "ext.onnx.data" in str(err.value) and "export/build_engines.py" in str(err.value)


def test_external_data_model_runs(tmp_path):
    path = save_affine_and_mask(tmp_path / "ext.onnx", external_data=True)
    with OnnxRuntimeRunner(path) as r:
        out = r.infer(random_feeds(3))
    np.testing.assert_allclose(out["m"], reference(**random_feeds(3))["m"])


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_unavailable_gpu_provider_raises_instead_of_falling_back(model_path, provider):
    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider]
    if wanted in ort.get_available_providers():
        pytest.skip(f"{wanted} is available here, so it cannot be missing")
    with pytest.raises(BackendUnavailableError, match=f"needs {wanted}"):
        OnnxRuntimeRunner(model_path, provider=provider).load()


def test_silent_provider_fallback_is_detected(model_path, monkeypatch):
    """onnxruntime drops a listed-but-unusable provider with only a warning; we must raise."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDAExecutionProvider works here, so no fallback can be provoked")
    available = ort.get_available_providers() + ["CUDAExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    with pytest.warns(UserWarning), pytest.raises(BackendUnavailableError, match="instead of"):
        OnnxRuntimeRunner(model_path, provider="cuda").load()


def test_tensorrt_provider_options(model_path, tmp_path):
    runner = OnnxRuntimeRunner(
        model_path,
        provider="tensorrt",
        trt_cache_dir=tmp_path / "cache",
        trt_profiles={"x": ((1, 3), (2, 3), (8, 3)), "mask": ((1,), (2,), (8,))},
    )
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    (name, options), cuda = runner._providers(available)
    assert name == "TensorrtExecutionProvider" and cuda[0] == "CUDAExecutionProvider"
    assert options["trt_engine_cache_enable"] and options["trt_timing_cache_enable"]
    assert options["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert options["trt_profile_min_shapes"] == "x:1x3,mask:1"
    assert options["trt_profile_opt_shapes"] == "x:2x3,mask:2"
    assert options["trt_profile_max_shapes"] == "x:8x3,mask:8"
    assert "trt_fp16_enable" not in options  # precision lives in the ONNX graph


def test_invalid_configuration_raises_config_error(model_path):
    with pytest.raises(ConfigError, match="provider must be one of"):
        OnnxRuntimeRunner(model_path, provider="gpu")
    with pytest.raises(ConfigError, match="graph_optimization_level"):
        OnnxRuntimeRunner(model_path, graph_optimization_level="max")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        OnnxRuntimeRunner(model_path, trt_profiles={"x": ((4, 3), (2, 3), (8, 3))})


def test_closed_runner_refuses_infer(model_path):
    runner = OnnxRuntimeRunner(model_path)
    with pytest.raises(RunnerClosedError, match="before load"):
        runner.infer(random_feeds(1))
    with runner:
        runner.infer(random_feeds(1))
    assert not runner.is_loaded
    with pytest.raises(RunnerClosedError):
        runner.infer(random_feeds(1))


@pytest.mark.gpu
def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_visible(), reason=CUDA_MISSING)
def test_cuda_provider_iobinding_matches_torch(model_path):
    import torch

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu (CUDAExecutionProvider) is not installed")
    feeds = random_feeds(4)
    cuda_feeds = {k: torch.from_numpy(v).cuda() for k, v in feeds.items()}
    with OnnxRuntimeRunner(model_path, provider="cuda") as r:
        out = r.infer(cuda_feeds)
        host_out = r.infer(feeds)
        chained = r.infer({"x": ort.OrtValue.ortvalue_from_numpy(feeds["x"], "cuda", 0), "mask": feeds["mask"]})
        with pytest.raises(InvalidInputError, match="non-contiguous"):
            r.infer({"x": torch.zeros(4, 3, device="cuda").t().contiguous().t(), "mask": cuda_feeds["mask"][:3]})
    expected = reference(**feeds)
    for name in expected:
        assert isinstance(out[name], ort.OrtValue) and out[name].device_name().lower() == "cuda"
        np.testing.assert_allclose(out[name].numpy(), expected[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(chained[name].numpy(), expected[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(host_out[name], expected[name], rtol=1e-5, atol=1e-5)
