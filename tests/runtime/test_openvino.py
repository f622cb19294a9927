"""The OpenVINO backend: the runner against ONNX Runtime on the same graphs, ``Segmenter.from_engines
(backend="openvino")`` end to end with its precision hint reported, typed errors, and a clear
message where OpenVINO is not installed. Runs OpenVINO for real on this CPU (no double)."""

from __future__ import annotations

import numpy as np
import pytest

from genmask_sdk.errors import ArtifactNotFoundError, BackendUnavailableError, ConfigError, InvalidInputError
from genmask_sdk.data.examples import EXAMPLE_PROMPT, example_image_path

openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'genmask-sdk[openvino]')")


def _feeds(specs, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = [2 if d is None else d for d in spec.shape]
        feeds[spec.name] = np.ones(shape, bool) if spec.dtype == "bool" else rng.standard_normal(shape).astype(spec.dtype)
    return feeds


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_runner_matches_onnxruntime_at_f32(tiny_engines, precision):
    from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from genmask_sdk.runtime.openvino_runner import OpenVinoRunner

    for stage in ("vae_encoder", "dit", "mask_head"):
        path = next(tiny_engines[0].glob(f"{stage}.{precision}.onnx"), None) or tiny_engines[0] / f"{stage}.fp32.onnx"
        with OnnxRuntimeRunner(path) as ort_runner, OpenVinoRunner(path, precision_hint="f32") as ov_runner:
            assert [s.name for s in ov_runner.input_specs] == [s.name for s in ort_runner.input_specs]
            assert [s.dtype for s in ov_runner.output_specs] == [s.dtype for s in ort_runner.output_specs]
            assert ov_runner.describe()["inference_precision"] == "f32"
            feeds = _feeds(ort_runner.input_specs)
            ours, reference = ov_runner.infer(feeds), ort_runner.infer(feeds)
            for name, expected in reference.items():
                scale = float(np.abs(expected).max()) + 1e-6
                assert float(np.abs(ours[name] - expected).max()) / scale < 1e-3, (stage, name)


def test_runner_typed_errors(tiny_engines, tmp_path):
    from genmask_sdk.runtime.openvino_runner import OpenVinoRunner

    with pytest.raises(ConfigError, match="precision_hint"):
        OpenVinoRunner(tiny_engines[0] / "dit.fp32.onnx", precision_hint="int4")
    with pytest.raises(ConfigError, match="device"):
        OpenVinoRunner(tiny_engines[0] / "dit.fp32.onnx", device="cuda")
    with pytest.raises(ConfigError, match="threads"):
        OpenVinoRunner(tiny_engines[0] / "dit.fp32.onnx", threads=0)
    with pytest.raises(ArtifactNotFoundError):
        OpenVinoRunner(tmp_path / "missing.onnx").load()
    with OpenVinoRunner(tiny_engines[0] / "mask_head.fp32.onnx") as runner:
        feeds = _feeds(runner.input_specs)
        name = runner.input_specs[0].name
        with pytest.raises(InvalidInputError):
            runner.infer({})
        with pytest.raises(Exception, match="float64|dtype"):
            runner.infer({name: feeds[name].astype(np.float64)})


def test_segmenter_backend_openvino_end_to_end(tiny_engines):
    from genmask_sdk import Segmenter
    from genmask_sdk.metrics import mask_iou

    image = example_image_path()
    with Segmenter.from_engines(tiny_engines[0], backend="onnxruntime", device="cpu") as reference, \
            Segmenter.from_engines(tiny_engines[0], backend="openvino", device="cpu") as ours:
        info = ours.describe()
        assert info["backend"] == "openvino" and info["versions"]["openvino"] == openvino.__version__
        assert info["runtime_options"] == {"precision_hint": "f32", "inference_precision": {
            "vae_encoder": "f32", "dit": "f32", "mask_head": "f32"}}
        expected, got = reference.predict(image, EXAMPLE_PROMPT), ours.predict(image, EXAMPLE_PROMPT)
    assert float(np.abs(got.logits - expected.logits).max()) < 1e-3
    assert mask_iou(got.mask, expected.mask) >= 0.99 or expected.area == got.area == 0
    with Segmenter.from_engines(tiny_engines[0], backend="openvino", device="cpu", openvino_hint=None) as default:
        hint = default.describe()["runtime_options"]
        assert hint["precision_hint"] is None and set(hint["inference_precision"].values()) <= {"f32", "bf16", "f16"}


def test_segmenter_refusals(tiny_engines):
    from genmask_sdk import Segmenter

    with pytest.raises(ConfigError, match="precision_hint"):
        Segmenter.from_engines(tiny_engines[0], backend="openvino", device="cpu", openvino_hint="fp8")
    with pytest.raises(BackendUnavailableError, match="int8"):
        Segmenter.from_engines(tiny_engines[0], backend="openvino", precision="int8", device="cpu")


def test_without_openvino_the_error_says_how_to_install(tiny_engines):
    from test_torch_free import run_blocked

    run = run_blocked(f"""
        from genmask_sdk import Segmenter
        from genmask_sdk.errors import BackendUnavailableError
        try:
            Segmenter.from_engines({str(tiny_engines[0])!r}, backend="openvino", device="cpu")
        except BackendUnavailableError as exc:
            print("REFUSED", exc)
    """, blocked=("openvino",))
    assert "REFUSED" in run.stdout and "genmask-sdk[openvino]" in run.stdout, run.stdout + run.stderr


def test_openvino_backend_runs_without_torch(tiny_engines):
    """The deployed path: ``genmask segment --backend openvino`` with torch & co. unimportable."""
    from test_torch_free import BLOCKED, run_blocked

    argv = ["segment", str(example_image_path()), EXAMPLE_PROMPT, "--engines", str(tiny_engines[0]), "--backend",
            "openvino", "--device", "cpu", "--json"]
    run = run_blocked(f"""
        import sys
        from genmask_sdk.cli.main import main
        code = main({argv!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
        print("LOADED", loaded)
        sys.exit(code)
    """)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"backend": "openvino"' in run.stdout and "LOADED []" in run.stdout


def test_gen2seg_engines_on_openvino(tmp_path):
    """gen2seg's engine colorizer on OpenVINO: the same colour map as ONNX Runtime (f32), the checkpoint's
    prompt defaults kept, the hint reported."""
    pytest.importorskip("torch")  # the build
    from genmask_sdk.families.gen2seg.export.build import build_gen2seg_engines
    from genmask_sdk.families.gen2seg.segmenter import InstanceSegmenter
    from genmask_sdk.runtime.imaging import load_image

    out = tmp_path / "g2s"
    build_gen2seg_engines("demo-gen2seg", out, ("fp32",), check_samples=1, progress=False, log=lambda line: None)
    image = load_image(example_image_path())
    with InstanceSegmenter.from_engines(out, backend="onnxruntime") as reference, \
            InstanceSegmenter.from_engines(out, backend="openvino") as ours:
        info = ours.describe()
        assert info["backend"] == "openvino" and info["device"] == "cpu"
        assert info["colorizer"]["runtime_options"] == {"precision_hint": "f32", "inference_precision": {"mae": "f32"}}
        assert info["prompt_config"] == reference.describe()["prompt_config"]
        difference = np.abs(ours.colorize(image).astype(int) - reference.colorize(image).astype(int))
        assert int(difference.max()) <= 1
    with pytest.raises(ConfigError, match="precision_hint"):
        InstanceSegmenter.from_engines(out, backend="openvino", openvino_hint="int4")
