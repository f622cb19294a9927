"""TensorRT plan building and loading.

Most tests run the real genmask_sdk code against ``trt_double`` (a recording stand-in for the
``tensorrt`` module), because TensorRT and a GPU are not available on every machine. Tests marked
``tensorrt`` use the real package and GPU and are skipped, with the reason, where those are missing.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    ConfigError,
    InvalidInputError,
)
from genmask_sdk.export import tensorrt_build
from genmask_sdk.export.tensorrt_build import (
    PlanBuildError,
    TensorRTBuildConfig,
    build_plan,
    tensorrt_available,
    trtexec_command,
)
from genmask_sdk.runtime.tensorrt_runner import TensorRTRunner
from tiny_onnx import random_feeds, save_affine_and_mask
from trt_double import make_fake_tensorrt

PROFILE_X = ((1, 3), (2, 3), (4, 3))


@pytest.fixture
def onnx_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx bytes are not read by the double")
    return path


def build(trt, onnx_file, config=None, **kwargs):
    config = config or TensorRTBuildConfig(profiles={"x": PROFILE_X})
    plan = onnx_file.with_suffix(".plan")
    return plan, build_plan(onnx_file, plan, config, trt=trt, **kwargs)


# ---- build recipe ------------------------------------------------------------------------------


def test_strongly_typed_network_and_no_precision_flags(onnx_file):
    trt = make_fake_tensorrt("10.13.3.9")
    config = TensorRTBuildConfig(workspace_bytes=1 << 30, profiles={"x": PROFILE_X})
    plan, info = build(trt, onnx_file, config, compute_capability=(8, 7), progress=False)
    assert trt.record.network_flags == [1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)]
    assert trt.record.flags_set == []  # no FP16/INT8/... flags: precision comes from the graph
    assert trt.record.parsed_paths == [str(onnx_file)]
    assert trt.record.pool_limits == {trt.MemoryPoolType.WORKSPACE: 1 << 30}
    assert trt.record.optimization_level == 3
    assert plan.read_bytes() == b"FAKE-PLAN"
    assert info.tensorrt_version == "10.13.3.9"
    assert info.profiles == {"x": PROFILE_X}
    assert info.build_seconds >= 0 and info.version_compatible is False
    expected_cc = tuple(torch.cuda.get_device_capability()) if torch.cuda.is_available() else (8, 7)
    assert info.compute_capability == expected_cc
    assert info.to_json()["profiles"] == {"x": [[1, 3], [2, 3], [4, 3]]}


def test_tensorrt_11_build_uses_no_removed_api(onnx_file):
    trt = make_fake_tensorrt("11.4.0.106")
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(
        trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"
    )
    config = TensorRTBuildConfig(profiles={"x": PROFILE_X}, version_compatible=True)
    _, info = build(trt, onnx_file, config, progress=False)
    assert trt.record.flags_set == [trt.BuilderFlag.VERSION_COMPATIBLE]
    assert info.tensorrt_version == "11.4.0.106" and info.version_compatible


def test_one_profile_covers_every_dynamic_input(onnx_file):
    inputs = {"x": (-1, 3), "text": (-1, -1, 8), "static": (1, 4)}
    trt = make_fake_tensorrt(network_inputs=inputs)
    profiles = {"x": PROFILE_X, "text": ((1, 1, 8), (2, 16, 8), (4, 64, 8))}
    build(trt, onnx_file, TensorRTBuildConfig(profiles=profiles), progress=False)
    assert trt.record.profiles == [profiles]


def test_static_network_needs_no_profile(onnx_file):
    trt = make_fake_tensorrt(network_inputs={"x": (2, 3)})
    build(trt, onnx_file, TensorRTBuildConfig(), progress=False)
    assert trt.record.profiles == []


@pytest.mark.parametrize(
    ("inputs", "profiles", "match"),
    [
        ({"x": (-1, 3), "t": (-1, 8)}, {"x": PROFILE_X}, r"dynamic axes but no .*t \(-1, 8\)"),
        ({"x": (-1, 3)}, {"x": PROFILE_X, "y": PROFILE_X}, r"not inputs of the network"),
        ({"x": (-1, 3)}, {"x": ((1,), (2,), (4,))}, r"rank 1 but the input has shape \(-1, 3\)"),
        ({"x": (-1, 3)}, {"x": ((1, 5), (2, 5), (4, 5))}, r"axis 1 .* fixed at 3"),
    ],
)
def test_profiles_that_do_not_fit_the_network_raise_config_error(
    onnx_file, inputs, profiles, match
):
    trt = make_fake_tensorrt(network_inputs=inputs)
    with pytest.raises(ConfigError, match=match):
        build(trt, onnx_file, TensorRTBuildConfig(profiles=profiles), progress=False)
    assert trt.record.builds == 0 and not onnx_file.with_suffix(".plan").exists()


@pytest.mark.parametrize(
    ("profiles", "match"),
    [
        ({"x": ((1, 3), (4, 3), (2, 3))}, r"min <= opt <= max .* axes \[0\]"),
        ({"x": ((1, 3), (2, 3))}, "three shapes"),
        ({"x": ((1, 3), (2, 3, 1), (4, 3))}, "same rank"),
        ({"x": ((-1, 3), (2, 3), (4, 3))}, "negative"),
        ({"x": (("a", 3), (2, 3), (4, 3))}, "integer shapes"),
    ],
)
def test_invalid_profiles_raise_config_error(profiles, match):
    with pytest.raises(ConfigError, match=match):
        TensorRTBuildConfig(profiles=profiles)


def test_invalid_config_values_raise_config_error():
    with pytest.raises(ConfigError, match="workspace_bytes"):
        TensorRTBuildConfig(workspace_bytes=0)
    with pytest.raises(ConfigError, match="builder_optimization_level"):
        TensorRTBuildConfig(builder_optimization_level=7)


def test_every_parser_error_is_reported(onnx_file):
    errors = ("Unsupported operator: FooOp", "Invalid weights for Conv_3")
    trt = make_fake_tensorrt(parser_errors=errors)
    with pytest.raises(PlanBuildError) as err:
        build(trt, onnx_file, progress=False)
    message = str(err.value)
    assert "2 error(s)" in message and all(e in message for e in errors)
    assert "trtexec" in message and "--verbose" in message
    assert trt.record.builds == 0 and not onnx_file.with_suffix(".plan").exists()


def test_timing_cache_is_loaded_saved_and_reused(onnx_file, tmp_path):
    cache = tmp_path / "caches" / "timing.cache"
    trt = make_fake_tensorrt()
    config = TensorRTBuildConfig(profiles={"x": PROFILE_X}, timing_cache=cache)
    build(trt, onnx_file, config, progress=False)
    first = cache.read_bytes()
    assert trt.record.timing_cache_inputs == [b""] and first == b"|timings1"
    build(trt, onnx_file, config, progress=False)  # second build starts from the saved cache
    assert trt.record.timing_cache_inputs[-1] == first
    assert cache.read_bytes() == first + b"|timings2"
    assert [p.name for p in cache.parent.iterdir()] == ["timing.cache"]  # no temp files left


def test_timing_cache_from_other_gpu_is_replaced_with_warning(onnx_file, tmp_path):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"OTHER-GPU cache")
    trt = make_fake_tensorrt()
    config = TensorRTBuildConfig(profiles={"x": PROFILE_X}, timing_cache=cache)
    with pytest.warns(UserWarning, match="another GPU"):
        build(trt, onnx_file, config, progress=False)
    assert trt.record.timing_cache_inputs == [b"OTHER-GPU cache", b""]
    assert cache.read_bytes() == b"|timings1"


def test_failed_build_explains_how_to_debug(onnx_file):
    trt = make_fake_tensorrt(build_result=None)
    with pytest.raises(PlanBuildError) as err:
        build(trt, onnx_file, progress=False)
    message = str(err.value)
    assert "build_serialized_network returned None" in message
    assert "workspace" in message and "trtexec" in message and "--verbose" in message
    assert not onnx_file.with_suffix(".plan").exists()


def test_plan_is_written_atomically(onnx_file):
    """A build that raises leaves the previous plan intact and no partial or temp file."""
    plan = onnx_file.with_suffix(".plan")
    plan.write_bytes(b"previous plan")
    trt = make_fake_tensorrt(build_exception=RuntimeError("CUDA out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        build(trt, onnx_file, progress=False)
    assert plan.read_bytes() == b"previous plan"
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["model.onnx", "model.plan"]


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0.1"])
def test_tensorrt_older_than_10_is_refused(onnx_file, version):
    trt = make_fake_tensorrt(version)
    with pytest.raises(BackendUnavailableError, match=f"TensorRT {version} is too old.*>= 10.0"):
        build(trt, onnx_file, progress=False)
    assert trt.record.network_flags == []


def test_missing_onnx_raises_not_found(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        build_plan(tmp_path / "no.onnx", tmp_path / "no.plan", TensorRTBuildConfig(),
                   trt=make_fake_tensorrt())  # fmt: skip


def test_progress_monitor_subclasses_trt_interface(onnx_file, capsys):
    trt = make_fake_tensorrt()
    build(trt, onnx_file, progress=True)
    assert isinstance(trt.record.progress_monitor, trt.IProgressMonitor)
    assert trt.record.progress_events == [True, True, True, True]  # never cancels the build
    assert "Tactic search" in capsys.readouterr().err


def test_progress_monitor_skipped_when_trt_lacks_it(onnx_file):
    trt = make_fake_tensorrt(with_progress_monitor=False)
    build(trt, onnx_file, progress=True)
    assert trt.record.progress_monitor is None


def test_trtexec_command_matches_config(tmp_path):
    config = TensorRTBuildConfig(
        workspace_bytes=(3 << 30) + 1,
        builder_optimization_level=4,
        profiles={"x": PROFILE_X, "text": ((1, 1, 8), (2, 16, 8), (4, 64, 8))},
        timing_cache=Path("/caches/timing.cache"),
    )
    command = trtexec_command(Path("/m/dit.onnx"), Path("/m/my dit.plan"), config)
    assert shlex.split(command) == [
        "trtexec",
        "--onnx=/m/dit.onnx",
        "--saveEngine=/m/my dit.plan",
        "--stronglyTyped",
        "--memPoolSize=workspace:3073M",
        "--builderOptimizationLevel=4",
        "--minShapes=x:1x3,text:1x1x8",
        "--optShapes=x:2x3,text:2x16x8",
        "--maxShapes=x:4x3,text:4x64x8",
        "--timingCacheFile=/caches/timing.cache",
    ]
    assert "--fp16" not in command and "--int8" not in command


def test_tensorrt_available_states_the_reason(monkeypatch):
    ok, reason = tensorrt_available(trt=make_fake_tensorrt("8.6.1"))
    assert not ok and "too old" in reason

    def no_tensorrt():
        raise BackendUnavailableError("The 'tensorrt' Python package is not installed")

    monkeypatch.setattr(tensorrt_build, "import_tensorrt", no_tensorrt)
    ok, reason = tensorrt_available()
    assert not ok and "not installed" in reason
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, reason = tensorrt_available(trt=make_fake_tensorrt())
    assert not ok and "no CUDA GPU" in reason


# ---- real TensorRT ----------------------------------------------------------------------------

TRT_OK, TRT_REASON = tensorrt_available()
needs_tensorrt = pytest.mark.skipif(not TRT_OK, reason=f"real TensorRT test skipped: {TRT_REASON}")


@pytest.fixture(scope="module")
def real_plan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trt")
    onnx_path = save_affine_and_mask(tmp / "tiny.onnx")
    config = TensorRTBuildConfig(
        workspace_bytes=256 << 20,
        profiles={"x": ((1, 3), (4, 3), (8, 3)), "mask": ((1,), (4,), (8,))},
        timing_cache=tmp / "timing.cache",
    )
    info = build_plan(onnx_path, tmp / "tiny.plan", config, progress=False)
    return onnx_path, Path(info.plan_path), config


def _compare_with_onnxruntime(onnx_path, runner, batches):
    from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(onnx_path) as ort_runner:
        for batch in batches:
            feeds = random_feeds(batch, seed=batch)
            expected = ort_runner.infer(feeds)
            got = runner.infer(feeds)  # numpy in: copied to the device by the runner
            from_torch = {k: v.clone() for k, v in runner.infer({k: torch.from_numpy(v).cuda() for k, v in feeds.items()}).items()}
            for name, value in expected.items():
                np.testing.assert_allclose(got[name].to_numpy(), value, rtol=1e-3, atol=1e-3)
                np.testing.assert_allclose(from_torch[name].to_numpy(), value, rtol=1e-3, atol=1e-3)
                as_torch = torch.as_tensor(from_torch[name], device="cuda")  # __cuda_array_interface__
                np.testing.assert_allclose(as_torch.cpu().numpy(), value, rtol=1e-3, atol=1e-3)


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("use_cuda_graph", [False, True])
def test_real_plan_matches_onnxruntime_cpu(real_plan, use_cuda_graph):
    onnx_path, plan_path, config = real_plan
    assert config.timing_cache.stat().st_size > 0
    with TensorRTRunner(plan_path, use_cuda_graph=use_cuda_graph) as runner:
        assert [s.name for s in runner.input_specs] == ["x", "mask"]
        _compare_with_onnxruntime(onnx_path, runner, batches=[4, 4, 1, 8, 4])
        with pytest.raises(InvalidInputError, match="optimization profile"):
            runner.infer({"x": np.zeros((9, 3), np.float32), "mask": np.zeros(9, bool)})


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
def test_real_truncated_plan_raises_mismatch(real_plan, tmp_path):
    truncated = tmp_path / "truncated.plan"
    truncated.write_bytes(real_plan[1].read_bytes()[:100])
    with pytest.raises(ArtifactMismatchError, match="Rebuild"):
        TensorRTRunner(truncated).load()


# ---- FP8 plans only where the GPU has FP8 ------------------------------------------------------


@pytest.mark.parametrize("capability, refused", [((8, 7), True), ((8, 6), True), ((8, 9), False), ((9, 0), False),
                                                 ((12, 0), False)])
def test_fp8_needs_compute_capability_8_9(capability, refused):
    from genmask_sdk.export.tensorrt_steps import fp8_refusal

    reason = fp8_refusal(capability)
    assert (reason is not None) == refused
    if capability == (8, 7):
        assert "Jetson Orin" in reason and ">= 8.9" in reason and "fp16 or int8" in reason


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_fp8_set_gets_no_plans_on_an_orin_class_gpu(monkeypatch, mode):
    from types import SimpleNamespace

    from genmask_sdk.errors import BackendUnavailableError
    from genmask_sdk.export import tensorrt_steps
    from genmask_sdk.families.genmask.export.options import build_options
    from genmask_sdk.families.genmask.export.tensorrt_step import TensorRTStep

    monkeypatch.setattr(tensorrt_steps, "availability", lambda _mode: (True, "TensorRT 10.3 on Orin (test)"))
    monkeypatch.setattr(tensorrt_steps, "current_target", lambda: ("10.3.0", [8, 7]))
    build = SimpleNamespace(opts=build_options(["fp32", "fp8"], tensorrt=mode), records={
        (stage, precision, "onnx"): {} for stage, precision in
        [("vae_encoder", "fp32"), ("dit", "fp32"), ("mask_head", "fp32"), ("dit", "fp8")]})
    step = TensorRTStep(build)
    if mode == "on":
        with pytest.raises(BackendUnavailableError, match="--tensorrt on with --precisions fp8: FP8 needs"):
            step.decide()
        return
    step.decide()
    assert "Jetson Orin" in step.refused["fp8"]
    assert ("dit", "fp8", "onnx") not in step._graphs() and ("dit", "fp32", "onnx") in step._graphs()
    step.plans = {(s, "fp32"): f"{s}.fp32.plan" for s in ("vae_encoder", "dit", "mask_head")}
    assert step.set_files("fp8") is None and step.set_files("fp32")["dit"] == "dit.fp32.plan"
