"""The shipped demo checkpoint: it loads offline, stays small, and is accurate on held-out scenes."""

import json


from conftest import requires_demo
from genmask_sdk.families.genmask.eval import evaluate_scenes, held_out_scenes
from genmask_sdk.families.genmask.eval.demo import reference_predictor
from genmask_sdk.families.genmask.modeling.model import demo_checkpoint_dir

pytestmark = requires_demo

# Measured on the 40 scenes below when the checkpoint was shipped: mIoU 0.556 over 101 expressions,
# attribute 0.523 (benchmarks/results/demo_eval.md has 500 scenes). The bounds leave a small margin
# for floating-point differences between platforms, not for regressions. They guard the shipped
# checkpoint; they are NOT the accuracy target (0.80 / 0.90), which this checkpoint does not reach.
MIN_MIOU_40 = 0.53
MIN_ATTRIBUTE_MIOU_40 = 0.50
# IoU of the README example ("the red circle") against its ground truth when shipped: 0.879.
MIN_EXAMPLE_IOU = 0.85


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
    report = evaluate_scenes(reference_predictor(demo_model), held_out_scenes(40), total=40, progress=False)
    summary = report.summary()["present"]
    assert summary["count"] >= 80
    assert summary["miou"] >= MIN_MIOU_40, summary
    assert summary["groups"]["attribute"]["miou"] >= MIN_ATTRIBUTE_MIOU_40, summary


def test_segment_example_image_matches_reference_mask(demo_model):
    import numpy as np
    from PIL import Image

    from genmask_sdk.data.examples import example_image_path, example_mask_path
    from genmask_sdk.metrics import mask_iou

    logits = demo_model.segment(example_image_path(), "the red circle")[0].numpy()
    reference = np.asarray(Image.open(example_mask_path())) > 127
    assert mask_iou(logits > 0, reference) >= MIN_EXAMPLE_IOU
