"""The shipped demo checkpoint: it loads offline, stays small, and is accurate on held-out scenes."""

import json

import pytest

from conftest import requires_demo
from genmask_sdk.eval import evaluate_scenes, held_out_scenes
from genmask_sdk.eval.demo import reference_predictor
from genmask_sdk.model.genmask import demo_checkpoint_dir

pytestmark = requires_demo

# Measured on the 40 scenes below when the checkpoint was trained (see README); the bounds leave
# a small margin for platform differences in floating point, not for regressions.
MIN_MIOU_40 = MIN_MIOU_VALUE
MIN_ATTRIBUTE_MIOU_40 = MIN_ATTR_VALUE


def test_checkpoint_is_small_and_complete():
    files = [p for p in demo_checkpoint_dir().rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    assert size <= 25 * 2**20, f"demo checkpoint is {size / 2**20:.1f} MiB"
    names = {p.name for p in files}
    assert {"genmask_config.json", "mask_head.safetensors", "training_summary.json"} <= names


def test_demo_config(demo_model):
    config = demo_model.config
    assert config.embedder.kind == "minilm" and config.resolution == 128 and config.t_star == 1.0
    summary = json.loads((demo_checkpoint_dir() / "training_summary.json").read_text())
    assert summary["minutes"] < 60


def test_accuracy_on_fixed_held_out_scenes(demo_model):
    scores = evaluate_scenes(reference_predictor(demo_model), held_out_scenes(40), total=40, progress=False)
    summary = scores.summary()
    assert summary["count"] >= 80
    assert summary["miou"] >= MIN_MIOU_40, summary
    assert summary["groups"]["attribute"]["miou"] >= MIN_ATTRIBUTE_MIOU_40, summary


def test_segment_example_image_matches_reference_mask(demo_model):
    import numpy as np
    from PIL import Image

    from genmask_sdk.examples import example_image_path, example_mask_path
    from genmask_sdk.metrics import mask_iou

    logits = demo_model.segment(example_image_path(), "the red circle")[0].numpy()
    reference = np.asarray(Image.open(example_mask_path())) > 127
    assert mask_iou(logits > 0, reference) >= 0.9
