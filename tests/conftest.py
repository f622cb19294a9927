"""Shared fixtures: tiny random GenMask models (diffusers-style tiny configs) and the demo checkpoint.

Torch is imported only by the fixtures that build models, so the torch-free layers' tests
(``tests/runtime``, ``tests/metrics``, ...) collect and run where torch is not installed.
The tests mirror the package: ``tests/<layer>/`` and ``tests/families/<family>/``; helpers shared by
several folders (``cuda_double``, ``trt_double``, ``tiny_onnx``) sit here and are importable from all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers above, from every test folder
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from genmask_sdk.families.genmask.checkpoints import demo_checkpoint_dir  # noqa: E402
from genmask_sdk.families.genmask.config import GenMaskConfig  # noqa: E402


def pytest_configure(config) -> None:
    try:
        import torch
    except ImportError:  # the torch-free runtime: model fixtures skip, the rest runs
        return
    torch.set_num_threads(min(2, torch.get_num_threads()))


DEMO_AVAILABLE = (demo_checkpoint_dir() / "genmask_config.json").is_file()
requires_demo = pytest.mark.skipif(not DEMO_AVAILABLE, reason="demo checkpoint not present in the package assets")


@pytest.fixture(scope="session")
def tiny_config() -> GenMaskConfig:
    return GenMaskConfig.preset("tiny", embedder="minilm")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    torch = pytest.importorskip("torch")
    from genmask_sdk.families.genmask.modeling import GenMaskModel

    torch.manual_seed(0)
    return GenMaskModel.from_config(tiny_config)


@pytest.fixture(scope="session")
def minilm():
    from genmask_sdk.families.genmask.modeling.embedders.minilm import MiniLMEmbedder

    return MiniLMEmbedder.from_pretrained()


@pytest.fixture(scope="session")
def demo_model():
    if not DEMO_AVAILABLE:
        pytest.skip("demo checkpoint not present in the package assets")
    pytest.importorskip("torch")
    from genmask_sdk.families.genmask.modeling import GenMaskModel

    return GenMaskModel.from_pretrained("demo")


@pytest.fixture(scope="session")
def tiny_engines(tiny_model, tmp_path_factory):
    """(engines dir, checkpoint dir) of ``tiny_model``: fp32 and fp16 ONNX sets + manifest.json,
    built by the exporter (no TensorRT, max_batch 4 so 5+ prompts take several DiT calls)."""
    pytest.importorskip("torch")
    from genmask_sdk.families.genmask.export.build import build_engines

    root = tmp_path_factory.mktemp("tiny_engines")
    checkpoint = tiny_model.save_pretrained(root / "checkpoint")
    result = build_engines(checkpoint, root / "engines" / "tiny", ["fp32", "fp16"], tensorrt="off", max_batch=4,
                           check_samples=1, progress=False, log=lambda line: None)
    return result.directory, checkpoint


@pytest.fixture(scope="session")
def demo_engines(tmp_path_factory):
    """(engines dir, BuildResult) of the shipped demo checkpoint: fp32 and fp16 ONNX sets +
    manifest.json, built once per session by the exporter (no TensorRT). Tests may add sets to it."""
    pytest.importorskip("torch")
    from genmask_sdk.families.genmask.export.build import build_engines

    if not DEMO_AVAILABLE:
        pytest.skip("demo checkpoint not present in the package assets")
    out = tmp_path_factory.mktemp("demo") / "engines"
    result = build_engines("demo", out, ["fp32", "fp16"], tensorrt="off", progress=False, log=lambda _: None)
    return out, result
