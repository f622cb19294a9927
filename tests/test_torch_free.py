"""Deploying without PyTorch: the demo engines (DiT, VAE encoder, mask head and the MiniLM text
embedder as ONNX graphs + tokenizer.json) run in a subprocess where importing torch,
transformers, diffusers, accelerate or safetensors raises, through ``Segmenter.from_engines`` and
``genmask segment``; the masks equal the PyTorch reference path's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from genmask_sdk.data.examples import example_image_path
from genmask_sdk.metrics import decode_rle, mask_iou

BLOCKED = ("torch", "transformers", "diffusers", "accelerate", "safetensors")
PROMPTS = ["the red circle", "the orange star", "the shape on the left"]


def import_blocker(blocked: tuple[str, ...] = BLOCKED) -> str:
    """Python source that makes importing any of ``blocked`` (or a submodule) raise ImportError."""
    return textwrap.dedent(f"""
        import importlib.abc, sys
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"{{name}} is blocked in this test", name=name)
                return None
        sys.meta_path.insert(0, _Block())
    """)


def run_blocked(code: str, blocked: tuple[str, ...] = BLOCKED) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing ``blocked`` raises."""
    return subprocess.run([sys.executable, "-c", import_blocker(blocked) + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def test_the_blocker_blocks():
    done = run_blocked("import torch")
    assert done.returncode != 0 and "is blocked in this test" in done.stderr


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_demo_engines_run_without_torch_and_match_pytorch(demo_engines, demo_model, precision, tmp_path):
    out = tmp_path / "result.npz"
    done = run_blocked(f"""
        import json, sys, numpy as np
        from genmask_sdk import Segmenter
        seg = Segmenter.from_engines({str(demo_engines[0])!r}, backend="onnxruntime", precision={precision!r})
        results = seg.predict({str(example_image_path())!r}, {PROMPTS!r})
        seg.set_image({str(example_image_path())!r})
        again = seg.predict({PROMPTS!r})
        np.savez({str(out)!r}, logits=np.stack([r.logits for r in results]), again=np.stack([r.logits for r in again]))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
        print(json.dumps({{"loaded": loaded, "embedder": seg.describe()["embedder"]["runs_on"],
                          "torch": seg.describe()["versions"]["torch"]}}))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == [] and report["torch"] is None
    assert report["embedder"].startswith("onnxruntime (cpu): embedder.")
    data = np.load(out)
    np.testing.assert_array_equal(data["logits"], data["again"])
    from genmask_sdk import Segmenter

    reference = Segmenter.from_model(demo_model).predict(example_image_path(), PROMPTS)
    atol = 1e-3 if precision == "fp32" else 0.1
    for ours, ref in zip(data["logits"], reference):
        assert float(np.abs(ours - ref.logits).max()) <= atol * max(1.0, float(np.abs(ref.logits).max()))
        assert mask_iou(ours > 0, ref.mask) >= (0.999 if precision == "fp32" else 0.99)


def test_genmask_segment_without_torch(demo_engines, demo_model, tmp_path):
    overlay = tmp_path / "overlay.png"
    argv = ["segment", str(example_image_path()), PROMPTS[0], "--engines", str(demo_engines[0]), "--backend",
            "onnxruntime", "--out", str(overlay), "--json"]
    done = run_blocked(f"""
        import sys
        from genmask_sdk.cli.main import main
        sys.exit(main({argv!r}))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(done.stdout)["results"]
    from genmask_sdk import Segmenter

    reference = Segmenter.from_model(demo_model).predict(example_image_path(), PROMPTS[0])
    assert mask_iou(decode_rle(result["rle"]).astype(bool), reference.mask) >= 0.999
    assert overlay.is_file()


def test_manifest_records_the_embedder_engine(demo_engines):
    data = json.loads((demo_engines[0] / "manifest.json").read_text())
    assert data["embedder_runtime"] == "onnx"
    records = {(a["stage"], a["precision"]): a for a in data["artifacts"]}
    entry = data["text_embedder"]
    for precision, tolerance in (("fp32", 1e-4), ("fp16", 2e-2)):
        record = records[("embedder", precision)]
        assert record["fidelity"]["max_abs_error"] <= tolerance
        assert record["fidelity"]["mask_iou_pooled"] >= 0.99 and record["fidelity"]["tokens_equal"] is True
        assert entry["graphs"][entry["for_sets"][precision]] == record["file"]
    assert records[("tokenizer", "all")]["file"] == entry["tokenizer"] == "tokenizer.json"
    assert all("embedder" not in data["sets"][p]["onnx"] for p in data["sets"])  # the sets stay the three stages


def test_gpu_code_paths_run_without_torch(demo_engines, tmp_path):
    """The device paths, with torch blocked: TensorRTRunner on cuda-python (API doubles: no GPU here)
    and the demo engines through ONNX Runtime IOBinding, stage outputs kept as OrtValues between
    sessions (CPU OrtValues here; the CUDA EP takes the same code with 'cuda' ones)."""
    tests_dir = str(Path(__file__).parent)
    out = tmp_path / "bound.npz"
    done = run_blocked(f"""
        import json, sys
        sys.path.insert(0, {tests_dir!r})
        import numpy as np
        from cuda_double import make_fake_cudart
        from trt_double import make_fake_tensorrt
        from genmask_sdk import Segmenter
        from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner
        from genmask_sdk.families.genmask.pipeline import RunnerPipeline
        from genmask_sdk.runtime.tensorrt_runner import TensorRTRunner

        plan = {str(tmp_path / "m.plan")!r}
        open(plan, "wb").write(b"FAKE-PLAN")
        rt = make_fake_cudart()
        trt = make_fake_tensorrt(engine_tensors=[("x", "INPUT", "FLOAT", (-1, 3), ((1, 3), (2, 3), (4, 3))),
                                                 ("y", "OUTPUT", "FLOAT", (-1, 3), None)],
                                 cudart=rt, compute=lambda f: {{"y": f["x"] * 2.0}})
        with TensorRTRunner(plan, trt=trt, cudart=rt) as runner:
            y = runner.infer({{"x": np.ones((2, 3), np.float32)}})["y"].to_numpy()
        assert (y == 2.0).all(), y

        seg = Segmenter.from_engines({str(demo_engines[0])!r}, backend="onnxruntime", device="cpu")
        files = seg.describe()["files"]
        runners = {{stage: OnnxRuntimeRunner({str(demo_engines[0])!r} + "/" + f["file"], device_outputs=True).load()
                   for stage, f in files.items()}}
        host = seg.predict({str(example_image_path())!r}, {PROMPTS!r})
        seg._pipeline = RunnerPipeline("onnxruntime", runners, "cpu", host_io=False)
        bound = seg.predict({str(example_image_path())!r}, {PROMPTS!r})
        np.savez({str(out)!r}, host=np.stack([r.logits for r in host]), bound=np.stack([r.logits for r in bound]))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
        print(json.dumps({{"loaded": loaded, "z_img": type(seg._pipeline.encode(np.zeros((1, 3, seg.config.resolution,
            seg.config.resolution), np.float32))).__name__}}))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"loaded": [], "z_img": "OrtValue"}
    data = np.load(out)
    np.testing.assert_allclose(data["bound"], data["host"], rtol=0, atol=1e-5)


def test_the_torch_free_layers_tests_collect_and_run_without_torch():
    """The tests of the torch-free layers (``tests/runtime``, ``tests/metrics``, ``tests/data``, gen2seg's
    point prompts) collect and pass where torch and the other heavy packages cannot be imported; those
    that need torch (a PyTorch reference, building engines) skip, saying so."""
    root = Path(__file__).resolve().parents[1]
    done = run_blocked(f"""
        import os, sys
        import pytest
        os.chdir({str(root)!r})
        sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-rs", "tests/runtime", "tests/metrics", "tests/data",
                              "tests/families/gen2seg/test_instance_prompts.py"]))
    """)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "error" not in summary and "failed" not in summary, summary
