"""Engines directories built by genmask-sdk 0.2.0 (before the families layout) open with this SDK,
through the public loaders, and give what 0.2.0 gave (tests/fixtures/engines_0.2.0/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genmask_sdk import InstanceSegmenter, Segmenter, family_of
from genmask_sdk.data.examples import example_image_path, example_point

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines_0.2.0"


@pytest.fixture(scope="module")
def outputs():
    return np.load(FIXTURES / "outputs_0.2.0.npz")


def test_the_fixtures_were_written_by_0_2_0():
    for name in ("genmask_tiny", "gen2seg_tiny"):
        assert json.loads((FIXTURES / name / "manifest.json").read_text())["sdk_version"] == "0.2.0"
    assert family_of(FIXTURES / "genmask_tiny") == "genmask" and family_of(FIXTURES / "gen2seg_tiny") == "gen2seg"


def test_genmask_engines_from_0_2_0_give_the_same_mask(outputs):
    with Segmenter.from_engines(FIXTURES / "genmask_tiny", backend="onnxruntime", device="cpu") as seg:
        result = seg.predict(str(example_image_path()), "the red circle")
        assert seg.describe()["versions"]["engines_sdk_version"] == "0.2.0"
    np.testing.assert_array_equal(result.mask, outputs["genmask_mask"])
    np.testing.assert_allclose(result.logits, outputs["genmask_logits"].astype(np.float32), atol=2e-3)


def test_gen2seg_engines_from_0_2_0_give_the_same_colors_and_mask(outputs):
    with InstanceSegmenter.from_engines(FIXTURES / "gen2seg_tiny", backend="onnxruntime", device="cpu") as seg:
        colors = seg.colorize(str(example_image_path()))
        mask = seg.predict(str(example_image_path()), [example_point()]).mask
        assert seg.describe()["precision"] == "fp32"
    np.testing.assert_array_equal(colors, outputs["gen2seg_colors"])
    np.testing.assert_array_equal(mask, outputs["gen2seg_point_mask"])
