"""gen2seg INT8 and TensorRT: Model Optimizer's calibration written as Q/DQ into Conv and MatMul
nodes (held to Model Optimizer's own simulated quantization), calibration sources, the up-to-date
rebuild, records-only end-to-end checks, and the TensorRT step and runtime wiring.

No TensorRT or GPU exists here: the TensorRT tests replace the SDK's two TensorRT boundaries —
``gen2seg_tensorrt.build_plan`` (writes the ONNX bytes as the "plan") and the plan runners
(ONNX Runtime on that file) — with doubles, and check everything around them: which graphs get
plans, the manifest's sets and records, per-plan fidelity, the end-to-end check of the plan sets,
``open_colorizer(backend=...)`` choices and errors. Real plans are built and checked on a GPU by
``tests/test_tensorrt_build.py``'s GPU tests (skipped here, with the reason).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from genmask_sdk.errors import ArtifactNotFoundError, BackendUnavailableError, InvalidInputError
from genmask_sdk.families.gen2seg.export import build as gb
from genmask_sdk.families.gen2seg.export import quant as gq
from genmask_sdk.families.gen2seg.export import tensorrt as gen2seg_tensorrt
from genmask_sdk.export import tensorrt_steps
from genmask_sdk.export.fidelity import run_onnx
from genmask_sdk.families.gen2seg.export.build import build_gen2seg_engines
from genmask_sdk.export.modelopt_calib import fake_quant_forward
from genmask_sdk.export.qdq import write_qdq_graph
from genmask_sdk.export.tensorrt_build import PlanInfo
from genmask_sdk.families.gen2seg.modeling import Gen2SegMAE
from genmask_sdk.families.gen2seg.modeling.configs import tiny_mae_config
from genmask_sdk.families.gen2seg import pipeline as runtime
from genmask_sdk.runtime import trt_api
from genmask_sdk.families.gen2seg.engines import open_colorizer
from genmask_sdk.runtime.manifest import load_manifest
from test_gen2seg_export import structured_tiny_sd


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    return Gen2SegMAE.from_config(tiny_mae_config()).save_pretrained(tmp_path_factory.mktemp("g2s_q") / "mae")


# ------------------------------------------------------------------------------- Q/DQ vs modelopt
def test_sd_unet_qdq_graph_is_model_optimizers_quantization(tmp_path):
    """Conv and MatMul Q/DQ of the UNet = Model Optimizer's fake quantization (not just close to fp32);
    the caller's model is untouched; conv_in/conv_out and the time embedding stay float32."""
    model = structured_tiny_sd().float().eval()
    size = model.config.processing_size
    module = gb.stage_modules(model)["unet"]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    fp32 = tmp_path / "unet.fp32.onnx"
    gb.export_stage(module, "unet", gb.signature("unet", size), fp32, timestep=model.config.timestep)
    inputs = gq.stage_inputs(model, gq.calibration_images("demo", 6, size), size)
    layers, fake = gq.calibrate_stage(module, "sd", inputs, progress=False)
    names = {layer.module for layer in layers}
    assert {layer.kind for layer in layers} == {"conv", "linear"}
    assert not any(part in name for name in names for part in ("conv_in", "conv_out", "time_emb"))
    info = write_qdq_graph(fp32, tmp_path / "unet.int8.onnx", layers, mode="int8", external_data=False)
    assert info["quantized_ops"]["Conv"] == sum(layer.kind == "conv" for layer in layers)
    # Equal to Model Optimizer's simulation up to float rounding (measured ~1e-9 against 7e-4 from fp32),
    # except where an activation sits on a rounding boundary: one flipped int8 step then propagates
    # (measured on 1 probe of 3: max 7.7e-4, mean still below the distance to fp32).
    exact = 0
    for seed in (40, 41, 42):
        probe = gq.stage_inputs(model, [gb.check_images(1, size, seed=seed)[0][0]], size)[0]
        ours = run_onnx(tmp_path / "unet.int8.onnx", {"latent": probe[0]})
        simulated, reference = fake_quant_forward(fake, probe), run_onnx(fp32, {"latent": probe[0]})
        exact += int(np.abs(ours - simulated).max() <= 1e-6 + 0.01 * np.abs(ours - reference).max())
        assert np.abs(ours - simulated).mean() < np.abs(ours - reference).mean()
    assert exact >= 2
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    graph = onnx.load(str(tmp_path / "unet.int8.onnx"))
    conv_dq = [n for n in graph.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith("weight_DequantizeLinear")
               and ".conv" in n.name]
    assert conv_dq and all(a.i == 0 for n in conv_dq for a in n.attribute if a.name == "axis")  # per output channel


def test_calibration_sources(tmp_path):
    from PIL import Image

    demo = gq.calibration_images("demo", 2, 48)
    assert len(demo) == 2 and demo[0].shape == (48, 48, 3) and demo[0].dtype == np.uint8
    np.testing.assert_array_equal(demo[1], gq.calibration_images("demo", 2, 48)[1])  # deterministic
    assert gq.describe_source(None) == {"kind": "demo", "seed": 5000}
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, colour in (("b.png", 200), ("a.jpg", 10)):
        Image.fromarray(np.full((20, 30, 3), colour, np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    images = gq.calibration_images(folder, 8, 48)
    assert [int(i.mean()) for i in images] == [10, 200]  # sorted by name, text file ignored, at most 8
    assert gq.describe_source(folder)["files"] == ["a.jpg", "b.png"]
    with pytest.raises(ArtifactNotFoundError, match="holds no image"):
        gq.calibration_images(_empty(tmp_path), 4, 48)
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        gq.describe_source(tmp_path / "missing")
    (folder / "c.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match="c.png"):
        gq.calibration_images(folder, 8, 48)


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


# ------------------------------------------------------------------------------ up to date
def test_an_unchanged_build_is_reused_and_any_change_rebuilds(mae_checkpoint, tmp_path):
    out = tmp_path / "engines"
    first = build_gen2seg_engines(mae_checkpoint, out, ["fp32", "int8"], progress=False, log=quiet, check_samples=1,
                                  calib_size=4)
    assert sorted(first.built) == ["mae.fp32.onnx", "mae.int8.onnx"] and first.reused == []
    manifest = (out / "manifest.json").read_bytes()
    lines: list[str] = []
    again = build_gen2seg_engines(mae_checkpoint, out, ["fp32", "int8"], progress=False, log=lines.append,
                                  check_samples=1, calib_size=4)
    assert again.built == [] and sorted(again.reused) == ["mae.fp32.onnx", "mae.int8.onnx"]
    assert (out / "manifest.json").read_bytes() == manifest and any("up to date" in line for line in lines)
    for change in ({"calib_size": 5}, {"precisions": ["fp32"]}, {"force": True}):
        kwargs = {"precisions": ["fp32", "int8"], "calib_size": 4, **change}
        result = build_gen2seg_engines(mae_checkpoint, out, progress=False, log=quiet, check_samples=1, **kwargs)
        assert result.built, change
    # a flipped byte is never reused
    build_gen2seg_engines(mae_checkpoint, out, ["fp32"], progress=False, log=quiet, check_samples=1)
    data = bytearray((out / "mae.fp32.onnx").read_bytes())
    data[-1] ^= 1
    (out / "mae.fp32.onnx").write_bytes(bytes(data))
    assert build_gen2seg_engines(mae_checkpoint, out, ["fp32"], progress=False, log=quiet, check_samples=1).built


def test_end_to_end_checks_can_be_recorded_without_enforcing(mae_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(gb.END_TO_END_TOLERANCES, "fp32", (-1.0, 2.0))  # impossible bounds
    with pytest.raises(gb.FidelityError, match="end to end"):
        build_gen2seg_engines(mae_checkpoint, tmp_path / "strict", ["fp32"], progress=False, log=quiet, check_samples=1)
    result = build_gen2seg_engines(mae_checkpoint, tmp_path / "recorded", ["fp32"], progress=False, log=quiet,
                                   check_samples=1, enforce_end_to_end=False)
    end = result.manifest.data["end_to_end"]["fp32"]
    assert end["enforced"] is False and end["colour_max_abs_error"] >= 0
    assert result.manifest.data["build_inputs"]["enforce_end_to_end"] is False


# ---------------------------------------------------------------------------------- TensorRT
class PlanDoubles:
    """The SDK's TensorRT boundaries replaced: plans are the ONNX bytes, run by ONNX Runtime."""

    def __init__(self, monkeypatch) -> None:
        self.built: list[str] = []
        monkeypatch.setattr(gen2seg_tensorrt, "availability", lambda mode: (True, "TensorRT 10.13 (double)"))
        monkeypatch.setattr(gen2seg_tensorrt, "build_plan", self.build_plan)
        monkeypatch.setattr(gen2seg_tensorrt, "plan_output", lambda path, feeds: run_onnx(Path(path), dict(feeds)))
        monkeypatch.setattr(tensorrt_steps, "current_target", lambda: ("10.13.0", [8, 7]))
        monkeypatch.setattr(runtime.EngineColorizer, "_make_runners", self.make_runners)
        monkeypatch.setattr(trt_api, "import_tensorrt", lambda: SimpleNamespace(__version__="10.13.0"))

    def build_plan(self, onnx_path, plan_path, config, progress=True) -> PlanInfo:
        shutil.copyfile(onnx_path, plan_path)
        self.built.append(Path(plan_path).name)
        profiles = {k: tuple(tuple(s) for s in v) for k, v in config.profiles.items()}
        return PlanInfo(str(plan_path), "10.13.0", (8, 7), profiles, 0.5, False)

    @staticmethod
    def make_runners(colorizer):
        from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner

        return {stage: OnnxRuntimeRunner(path, provider="cpu") for stage, path in colorizer.files.items()}


def test_tensorrt_plans_are_built_checked_recorded_and_opened(mae_checkpoint, tmp_path, monkeypatch):
    doubles = PlanDoubles(monkeypatch)
    out = tmp_path / "engines"
    lines: list[str] = []
    result = build_gen2seg_engines(mae_checkpoint, out, ["fp16", "int8"], progress=False, log=lines.append,
                                   check_samples=1, calib_size=4, tensorrt="on", max_batch=2)
    assert sorted(doubles.built) == ["mae.fp16.plan", "mae.int8.plan"]  # fp32 is a source only: no plan
    data = result.manifest.data
    assert data["tensorrt"] == {"built": True, "reason": "TensorRT 10.13 (double)", "timing_cache": "timing.cache"}
    assert data["sets"] == {p: {"onnx": {"mae": f"mae.{p}.onnx"}, "tensorrt": {"mae": f"mae.{p}.plan"}}
                            for p in ("fp16", "int8")}
    plan = next(r for r in data["artifacts"] if r["file"] == "mae.int8.plan")
    assert plan["runtime"] == "tensorrt" and plan["source"] == "mae.int8.onnx" and plan["compute_capability"] == [8, 7]
    assert plan["fidelity"]["runtime"] == "tensorrt" and plan["fidelity"]["max_abs_error"] <= plan["fidelity"]["tolerance"]
    assert plan["profiles"] == {"pixels": [[1, 3, 56, 56], [1, 3, 56, 56], [2, 3, 56, 56]]}
    assert any("fp16 TensorRT end to end" in line for line in lines)
    load_manifest(out, verify=True)
    with open_colorizer(out, backend="auto", precision="int8", device="cuda") as colorizer:  # auto + GPU -> plans
        described = colorizer.describe()
        assert described["backend"] == "tensorrt" and described["graphs"] == {"mae": "mae.int8.plan"}
        assert colorizer.color_map(np.zeros((30, 40, 3), np.uint8)).shape == (30, 40, 3)
    with open_colorizer(out, backend="onnxruntime", precision="int8") as colorizer:
        assert colorizer.describe()["graphs"] == {"mae": "mae.int8.onnx"}
    with pytest.raises(BackendUnavailableError, match="runs on a CUDA GPU"):
        open_colorizer(out, backend="tensorrt", precision="int8", device="cpu")
    # unchanged on the same TensorRT and GPU: reused; on another GPU: rebuilt
    doubles.built.clear()
    again = build_gen2seg_engines(mae_checkpoint, out, ["fp16", "int8"], progress=False, log=quiet, check_samples=1,
                                  calib_size=4, tensorrt="on", max_batch=2)
    assert again.built == [] and doubles.built == []
    monkeypatch.setattr(tensorrt_steps, "current_target", lambda: ("10.13.0", [9, 0]))
    build_gen2seg_engines(mae_checkpoint, out, ["fp16", "int8"], progress=False, log=quiet, check_samples=1,
                          calib_size=4, tensorrt="on", max_batch=2)
    assert sorted(doubles.built) == ["mae.fp16.plan", "mae.int8.plan"]


def test_a_plan_past_its_tolerance_commits_nothing(mae_checkpoint, tmp_path, monkeypatch):
    PlanDoubles(monkeypatch)
    monkeypatch.setattr(gen2seg_tensorrt, "plan_output", lambda path, feeds: run_onnx(Path(path), dict(feeds)) + 1.0)
    with pytest.raises(gb.FidelityError, match="mae.fp32.plan"):
        build_gen2seg_engines(mae_checkpoint, tmp_path / "bad", ["fp32"], progress=False, log=quiet, check_samples=1,
                              tensorrt="on")
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_without_tensorrt_the_manifest_says_why_and_how(mae_checkpoint, tmp_path):
    result = build_gen2seg_engines(mae_checkpoint, tmp_path / "e", ["fp32"], progress=False, log=quiet,
                                   check_samples=1, tensorrt="off")
    summary = result.manifest.data["tensorrt"]
    assert summary["built"] is False and "--tensorrt off" in summary["reason"]
    assert "--stronglyTyped" in summary["trtexec"]["mae.fp32.onnx"]
    with pytest.raises(BackendUnavailableError, match="no TensorRT plans for the fp32 set"):
        open_colorizer(tmp_path / "e", backend="tensorrt", device="cuda")
    json.dumps(result.manifest.data)  # plain JSON throughout
