"""The gen2seg demo training: the instance-colouring loss, a tiny run where both losses fall,
resuming, and the checkpoint it writes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from genmask_sdk.errors import ConfigError, InvalidInputError
from genmask_sdk.families.gen2seg.train import demo as gen2seg_demo
from genmask_sdk.families.gen2seg.train.demo import Gen2SegDemoConfig, run
from genmask_sdk.families.gen2seg.train.losses import (
    InstanceLossConfig,
    instance_colouring_loss,
    reference_sample_loss,
    sample_loss,
)


# ------------------------------------------------------------------------------------------ loss
def _random_case(seed: int = 0, size: int = 24):
    generator = torch.Generator().manual_seed(seed)
    pred = torch.rand(3, 3, size, size, generator=generator) * 255
    ids = torch.randint(0, 5, (3, size, size), generator=generator)
    ids[1] = torch.randint(1, 4, (size, size), generator=generator)  # no background
    ids[2] = 0  # background only
    return pred, ids


@pytest.mark.parametrize("include_background", [True, False])
def test_vectorised_loss_matches_the_published_loop(include_background):
    pred, ids = _random_case()
    config = InstanceLossConfig(include_background=include_background)
    for p, i in zip(pred, ids):
        p = p.clone().requires_grad_()
        fast, slow = sample_loss(p, i, config), reference_sample_loss(p, i, config)
        for key in slow:
            assert torch.allclose(fast[key], slow[key], rtol=1e-4, atol=1e-6), key
        if slow["loss"].requires_grad:
            fast_grad = torch.autograd.grad(fast["loss"], p)[0]
            slow_grad = torch.autograd.grad(slow["loss"], p)[0]
            assert torch.allclose(fast_grad, slow_grad, rtol=1e-3, atol=1e-6)


def test_loss_prefers_flat_distinct_colours():
    ids = torch.zeros(1, 32, 32, dtype=torch.long)
    ids[0, 4:14, 4:14], ids[0, 18:30, 18:30] = 1, 2
    palette = torch.tensor([[0, 0, 0], [250, 30, 30], [30, 30, 250]], dtype=torch.float32)
    good = palette[ids].permute(0, 3, 1, 2)
    merged = palette[ids.clamp(max=1)].permute(0, 3, 1, 2)  # both objects one colour
    noisy = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    losses = [float(instance_colouring_loss(x, ids)["loss"]) for x in (good, merged, noisy)]
    assert losses[0] < losses[1] < losses[2]
    parts = instance_colouring_loss(good, ids)
    assert float(parts["variance"]) == 0.0
    assert torch.isclose(parts["loss"], parts["variance"] + parts["separation"] + parts["mean_separation"])


def test_loss_checks_shapes():
    with pytest.raises(InvalidInputError):
        instance_colouring_loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ConfigError):
        InstanceLossConfig(huber_delta=0)


# -------------------------------------------------------------------------------------- training
TINY = dataclasses.replace(Gen2SegDemoConfig.tiny(), pretrain_steps=16, finetune_steps=16, threads=0)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen2seg_tiny")
    summary = run(TINY, root / "ck", root / "work")
    logs = json.loads((root / "work" / "logs.json").read_text())
    return root, summary, logs


def _falls(log, key, n=4):
    values = [entry[key] for entry in log]
    return np.mean(values[-n:]) < np.mean(values[:n])


def test_both_losses_fall(tiny_run):
    _, summary, logs = tiny_run
    assert summary["steps"] == {"pretrain": 16, "finetune": 16}
    assert _falls(logs["pretrain"], "loss"), [e["loss"] for e in logs["pretrain"]]
    assert _falls(logs["finetune"], "loss"), [e["loss"] for e in logs["finetune"]]


def test_checkpoint_layout_and_loading(tiny_run):
    from genmask_sdk.families.gen2seg.segmenter import InstanceSegmenter
    from genmask_sdk.families.gen2seg.modeling import load_gen2seg

    root, summary, _ = tiny_run
    ck = root / "ck"
    assert {"config.json", "gen2seg_config.json", "model.safetensors", "training_summary.json",
            "training_config.json", "prompt_config.json"} <= {p.name for p in ck.iterdir()}
    model = load_gen2seg(ck)
    assert model.config.variant == "mae" and model.config.processing_size == 32 and model.config.gamma == 0.7
    assert model.mae.config.mask_ratio == 0.0
    for key in ("seconds", "cpu", "checkpoint_bytes", "finetune_loss", "pretrain_loss", "stage_seconds"):
        assert key in summary
    with InstanceSegmenter.from_pretrained(ck) as segmenter:
        colours = segmenter.colorize(np.zeros((40, 30, 3), dtype=np.uint8))
        described = segmenter.describe()
    assert colours.shape == (40, 30, 3) and colours.dtype == np.uint8
    # the prompt threshold chosen on the validation seed is the checkpoint's default
    selection = summary["prompt_selection"]
    assert selection["seed"] == TINY.validation_seed != TINY.seed
    assert selection["grid"] == {"threshold": [3.0, 10.0], "bilateral_sigma_color": [5.0, 75.0]}
    assert len(selection["candidates"]) == 4
    best = max(selection["candidates"], key=lambda c: c["score"])
    assert best["score"] == selection["chosen_score"]
    assert described["prompt_config_source"] == "checkpoint (prompt_config.json)"
    for name, value in selection["chosen"].items():
        assert described["prompt_config"][name] == value


def test_resume_reproduces_an_uninterrupted_run(tiny_run, tmp_path, monkeypatch):
    root, _, _ = tiny_run
    real_step = gen2seg_demo.finetune_step
    calls = {"n": 0}

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8:  # after the checkpoint at step 5
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(gen2seg_demo, "finetune_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        run(TINY, tmp_path / "ck", tmp_path / "work")
    assert torch.load(tmp_path / "work" / "finetune_state.pt", weights_only=True)["step"] == 5
    partial = gen2seg_demo.export_partial(TINY, tmp_path / "partial", tmp_path / "work")
    assert partial["partial"] == {"finetune_step": 5, "finetune_steps": 16}
    assert (tmp_path / "partial" / "model.safetensors").is_file()
    monkeypatch.setattr(gen2seg_demo, "finetune_step", real_step)
    run(TINY, tmp_path / "ck", tmp_path / "work")
    from safetensors.torch import load_file

    resumed, straight = load_file(tmp_path / "ck" / "model.safetensors"), load_file(root / "ck" / "model.safetensors")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    with pytest.raises(ConfigError, match="other settings"):
        run(dataclasses.replace(TINY, finetune_lr=1e-2), tmp_path / "ck", tmp_path / "work")


def test_validation_seed_must_differ_from_the_training_seed():
    with pytest.raises(ConfigError, match="validation_seed"):
        dataclasses.replace(TINY, validation_seed=TINY.seed)
    with pytest.raises(ConfigError, match="validation_seed"):
        dataclasses.replace(TINY, validation_seed=10_000)  # the held-out seed


def test_ablation_config_spends_the_budget_on_fine_tuning():
    cfg = dataclasses.replace(Gen2SegDemoConfig(), pretrain=False)
    assert cfg.total_finetune_steps == cfg.finetune_steps + cfg.ablation_extra_steps
    assert Gen2SegDemoConfig().total_finetune_steps == Gen2SegDemoConfig().finetune_steps
    args = gen2seg_demo.parse_args(["--no-pretrain", "--tiny"])
    assert gen2seg_demo.config_from_args(args).pretrain is False
    with pytest.raises(ConfigError):
        Gen2SegDemoConfig(seed=10_000)
