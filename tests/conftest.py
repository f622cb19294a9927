"""Shared fixtures: tiny random GenMask models (diffusers-style tiny configs) and the demo checkpoint."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

from genmask_sdk.families.genmask.config import GenMaskConfig  # noqa: E402
from genmask_sdk.families.genmask.modeling import GenMaskModel  # noqa: E402
from genmask_sdk.families.genmask.modeling.model import demo_checkpoint_dir  # noqa: E402

DEMO_AVAILABLE = (demo_checkpoint_dir() / "genmask_config.json").is_file()
requires_demo = pytest.mark.skipif(not DEMO_AVAILABLE, reason="demo checkpoint not present in the package assets")


@pytest.fixture(scope="session")
def tiny_config() -> GenMaskConfig:
    return GenMaskConfig.preset("tiny", embedder="minilm")


@pytest.fixture(scope="session")
def tiny_model(tiny_config) -> GenMaskModel:
    torch.manual_seed(0)
    return GenMaskModel.from_config(tiny_config)


@pytest.fixture(scope="session")
def minilm():
    from genmask_sdk.families.genmask.modeling.embedders.minilm import MiniLMEmbedder

    return MiniLMEmbedder.from_pretrained()


@pytest.fixture(scope="session")
def demo_model() -> GenMaskModel:
    if not DEMO_AVAILABLE:
        pytest.skip("demo checkpoint not present in the package assets")
    return GenMaskModel.from_pretrained("demo")


@pytest.fixture(scope="session")
def tiny_engines(tiny_model, tmp_path_factory):
    """(engines dir, checkpoint dir) of ``tiny_model``: fp32 and fp16 ONNX sets + manifest.json,
    built by the exporter (no TensorRT, max_batch 4 so 5+ prompts take several DiT calls)."""
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
    from genmask_sdk.families.genmask.export.build import build_engines

    if not DEMO_AVAILABLE:
        pytest.skip("demo checkpoint not present in the package assets")
    out = tmp_path_factory.mktemp("demo") / "engines"
    result = build_engines("demo", out, ["fp32", "fp16"], tensorrt="off", progress=False, log=lambda _: None)
    return out, result
