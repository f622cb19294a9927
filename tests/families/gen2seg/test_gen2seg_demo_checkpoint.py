"""The shipped gen2seg demo checkpoint (``demo-gen2seg``): offline loading, its files, and its
accuracy on a fixed small held-out set (thresholds a little below the measured values)."""

from __future__ import annotations

import json

import pytest

from genmask_sdk.families.gen2seg.checkpoints import demo_gen2seg_dir

DEMO = demo_gen2seg_dir()
pytestmark = pytest.mark.skipif(not (DEMO / "gen2seg_config.json").is_file(),
                                reason="gen2seg demo checkpoint not present in the package assets")

#: The fixed small held-out set: the first N_SCENES scenes of the held-out seed.
N_SCENES = 24
#: Measured on those scenes with the shipped checkpoint (PyTorch, fp32), minus a small margin
#: (different BLAS/CPU rounding may move a few uint8 colours, hence a mask pixel or two).
#: With the checkpoint's own prompt defaults (prompt_config.json, chosen on the validation seed).
MEASURED = {"single_point_miou": 0.865, "multi_point_miou": 0.946, "recall@0.5": 0.978, "recall@0.75": 0.893}
MARGIN = 0.03


@pytest.fixture(scope="module")
def segmenter():
    from genmask_sdk.families.gen2seg.segmenter import InstanceSegmenter

    with InstanceSegmenter.from_pretrained("demo-gen2seg") as seg:
        yield seg


def test_loads_offline_by_name(segmenter, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = segmenter.describe()
    assert info["variant"] == "mae" and info["backend"] == "torch" and info["processing_size"] == 128
    assert info["source"]["path"] == str(DEMO)
    assert info["prompt_config_source"] == "checkpoint (prompt_config.json)"
    summary = json.loads((DEMO / "training_summary.json").read_text())
    for name, value in summary["prompt_selection"]["chosen"].items():
        assert info["prompt_config"][name] == value


def test_files_size_and_summary():
    names = {p.name for p in DEMO.iterdir()}
    assert {"config.json", "gen2seg_config.json", "model.safetensors", "training_summary.json",
            "training_config.json", "pixel_head.safetensors", "prompt_config.json"} <= names
    assert sum(p.stat().st_size for p in DEMO.iterdir()) <= 25 * 1024 * 1024
    summary = json.loads((DEMO / "training_summary.json").read_text())
    assert summary["seconds"] <= 3600 and summary["steps"]["finetune"] > 0
    assert summary["finetune_loss"]["loss"]["final"] < summary["finetune_loss"]["loss"]["first"]


def test_accuracy_on_a_fixed_held_out_set(segmenter):
    from genmask_sdk.data.instances import held_out_instance_scenes
    from genmask_sdk.families.gen2seg.eval.demo import evaluate, summarise

    overall = summarise(evaluate(segmenter, held_out_instance_scenes(N_SCENES), progress=False))["all"]
    for key, measured in MEASURED.items():
        assert overall[key] >= measured - MARGIN, (key, overall[key], measured)
