"""The demo training script on the tiny preset: it runs, the loss falls, it resumes."""

import dataclasses
import json

import numpy as np
import pytest

from genmask_sdk.families.genmask.modeling import GenMaskModel
from genmask_sdk.families.genmask.train import demo


def _mean(log, key, sl):
    return float(np.mean([e[key] for e in log[sl]]))


def test_tiny_training_loss_falls_and_checkpoint_loads(tmp_path):
    cfg = demo.DemoTrainingConfig.tiny()
    out = demo.run(cfg, tmp_path / "ckpt", tmp_path / "work")
    log = json.loads((tmp_path / "work" / "dit_log.json").read_text())
    assert len(log) == cfg.dit_steps
    # two phases of one run: low-res renders first, then the engine resolution
    assert [e["size"] for e in log] == [cfg.low_res_size] * cfg.low_res_steps + \
        [cfg.image_size] * (cfg.dit_steps - cfg.low_res_steps)
    assert _mean(log, "seg", slice(cfg.low_res_steps - 8, cfg.low_res_steps)) < 0.92 * _mean(log, "seg", slice(0, 8))
    summary = json.loads((out / "training_summary.json").read_text())
    assert all(n > 0 for n in summary["expressions"].values()) and np.isfinite(summary["final_probe_loss"])
    assert summary["minutes"] > 0 and {"data_32", "data_64", "vae", "texts", "dit"} <= set(summary["stage_minutes"])
    model = GenMaskModel.from_pretrained(out)
    mean, std = model.vae.config.latents_mean, model.vae.config.latents_std
    assert len(mean) == 16 and min(std) > 0 and mean != [-0.7571] * 16  # measured, not Wan's defaults


def test_interrupted_training_resumes_from_last_dit_checkpoint(tmp_path, monkeypatch):
    cfg = demo.DemoTrainingConfig.tiny()
    real_step = demo.generation_loss
    calls = {"n": 0}

    def crash_at_step_15(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(demo, "generation_loss", crash_at_step_15)
    with pytest.raises(KeyboardInterrupt):
        demo.run(cfg, tmp_path / "ckpt", tmp_path / "work")
    assert not (tmp_path / "ckpt").exists()
    monkeypatch.setattr(demo, "generation_loss", real_step)
    demo.run(cfg, tmp_path / "ckpt", tmp_path / "work")
    log = json.loads((tmp_path / "work" / "dit_log.json").read_text())
    assert [e["step"] for e in log] == list(range(1, cfg.dit_steps + 1))


def test_work_directory_with_other_settings_is_refused(tmp_path):
    cfg = demo.DemoTrainingConfig.tiny()
    demo._check_same_run(cfg, tmp_path)
    with pytest.raises(SystemExit, match="other settings"):
        demo._check_same_run(dataclasses.replace(cfg, seed=5), tmp_path)
    demo._check_same_run(dataclasses.replace(cfg, dit_steps=40), tmp_path)  # DiT settings: fine before the DiT
    (tmp_path / "dit_state.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match="dit_steps"):
        demo._check_same_run(dataclasses.replace(cfg, dit_steps=50), tmp_path)
