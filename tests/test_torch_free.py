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

import numpy as np
import pytest

from genmask_sdk.examples import example_image_path
from genmask_sdk.metrics import decode_rle, mask_iou

BLOCKED = ("torch", "transformers", "diffusers", "accelerate", "safetensors")
BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys
    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"{{name}} is blocked in this test")
            return None
    sys.meta_path.insert(0, _Block())
""")
PROMPTS = ["the red circle", "the orange star", "the shape on the left"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_the_blocker_blocks():
    done = _run("import torch")
    assert done.returncode != 0 and "is blocked in this test" in done.stderr


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_demo_engines_run_without_torch_and_match_pytorch(demo_engines, demo_model, precision, tmp_path):
    out = tmp_path / "result.npz"
    done = _run(f"""
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
    done = _run(f"""
        import sys
        from genmask_sdk.cli import main
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
