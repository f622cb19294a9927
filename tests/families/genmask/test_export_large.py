"""External-data export path, through the real-size benchmark script (benchmarks/export_real_size.py).

The tiny case forces every graph into ``<file>.data`` (threshold 0) at a non-default resolution,
building fp16 and int8 (the fp32 DiT is then an intermediate, not kept);
the real-size case (Wan2.1-1.3B DiT, ~5.7 GB of fp32 weights, 512², fp32 + fp16 + Model Optimizer
int8) runs only with ``-m slow`` (see benchmarks/README.md for its time and peak RSS, < 23 GiB).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from genmask_sdk.export.manifest import load_manifest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "export_real_size.py"


def _script():
    spec = importlib.util.spec_from_file_location("export_real_size", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [
    pytest.param(dict(preset="tiny", resolution=48, precisions=("fp16", "int8"), embedder="minilm",
                      external_data_threshold=0, int8_keep_blocks=0), id="tiny-all-external"),
    pytest.param(dict(preset="wan2.1-1.3b", resolution=512, precisions=("fp32", "fp16", "int8"), calib_size=8,
                      check_samples=2), id="wan2.1-1.3b-512", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("case", CASES)
def test_real_size_export_script(case, tmp_path):
    summary = _script().export_random_model(tmp_path / "engines", progress=False, **case)
    manifest = load_manifest(tmp_path / "engines")  # every file, .data included, verifies
    assert manifest.data["resolution"] == case["resolution"]
    assert manifest.data["checkpoint"]["source"] == "in-memory"
    dit = manifest.artifact("dit", case["precisions"][0])
    assert dit["inputs"][0]["shape"] == [None, 16, case["resolution"] // 8, case["resolution"] // 8]
    assert [e["file"] for e in dit["external_data"]] == [dit["file"] + ".data"]
    if case["preset"] == "wan2.1-1.3b":
        assert dit["external_data"][0]["bytes"] > 2 * 1024**3 and dit["bytes"] < 100 * 1024**2
        int8 = next(a for a in summary["artifacts"] if a["file"] == "dit.int8.onnx")
        assert int8["mask_iou_pooled"] >= 0.98 and int8["check_samples"] == 2, int8  # inputs disjoint from calibration
        assert summary["peak_rss_gib"] < 23, summary["peak_rss_gib"]
    else:  # every graph external; the fp32 DiT was only the int8 source, so it is not kept
        assert all(a["external_data"] for a in manifest.artifacts)
        assert not (tmp_path / "engines" / "dit.fp32.onnx").exists()
        assert sorted(a["file"] for a in manifest.artifacts) == ["dit.fp16.onnx", "dit.int8.onnx", "mask_head.fp32.onnx",
                                                                 "vae_encoder.fp16.onnx", "vae_encoder.fp32.onnx"]
    for entry in summary["artifacts"]:
        assert (tmp_path / "engines" / entry["file"]).is_file()
        if entry["file"].endswith(".fp32.onnx"):
            assert entry["max_abs_error"] <= 1e-4 * max(1.0, entry["reference_max_abs"]), entry
