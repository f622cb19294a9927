"""``genmask_sdk.families.genmask.train.finetune`` under ``accelerate launch`` with two CPU processes (gloo).

The module fixture prepares a tiny training set and a held-out set, caches the training set with two
processes (data-parallel caching), trains 6 steps with two processes, then resumes the same run to
step 9: loss falls, both ranks take part, the resumed run continues from the saved step, and the
final checkpoint builds engines and segments.

Why ``--multi_gpu`` and ``ACCELERATE_USE_CPU``: ``accelerate launch --cpu --num_processes 2`` starts
one process unless mpirun is configured (``--mpirun_hostfile``); torchrun's launcher
(``--multi_gpu``) with ``ACCELERATE_USE_CPU=true`` starts two CPU processes on gloo.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError

pytest.importorskip("datasets")

from test_cache import prepare_scenes, run_cache, tiny_checkpoint  # noqa: E402

from genmask_sdk.families.genmask.train import finetune  # noqa: E402
from genmask_sdk.families.genmask.train.finetune_config import FinetuneConfig  # noqa: E402
from genmask_sdk.families.genmask.train.finetune_data import TaskStream  # noqa: E402
from genmask_sdk.families.genmask.train.finetune_model import TrainingDiT, load_wan_transformer, transformer_state  # noqa: E402
from genmask_sdk.families.genmask.train.finetune_step import lr_at  # noqa: E402

STEPS, RESUMED_STEPS = 6, 9
TRAIN_ARGS = ["--preset", "tiny", "--global-batch", "32", "--micro-batch", "4", "--lr", "2e-3", "--min-lr", "2e-4",
              "--log-every", "1", "--checkpoint-every", "3", "--eval-every", "3", "--eval-samples", "6",
              "--probe-steps", "60", "--no-progress"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(module: str, *args: str) -> str:
    """``accelerate launch`` of ``module`` with two CPU processes, one thread each; returns its output."""
    port = free_port()
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(port), "-m", module, *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout + done.stderr


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    checkpoint = tiny_checkpoint(root / "frozen")
    referring = prepare_scenes(root / "referring", seg=24, gen=0)  # two prepared sets, as RefCOCO + captions
    captions = prepare_scenes(root / "captions", seg=0, gen=12, seed=1)
    held_out = prepare_scenes(root / "held_out", seg=6, gen=1, seed=10_000)
    cache_output = launch("genmask_sdk.families.genmask.train.cache", "--data", str(referring), "--checkpoint", str(checkpoint),
                          "--shard-rows", "8", "--batch", "8", "--no-progress")
    run_cache(captions, checkpoint)
    run_cache(held_out, checkpoint)
    out, data = root / "run", [referring, captions]
    common = ["--data", str(referring), str(captions), "--eval-data", str(held_out), "--out", str(out),
              "--checkpoint", str(checkpoint), *TRAIN_ARGS]
    first_output = launch("genmask_sdk.families.genmask.train.finetune", *common, "--max-steps", str(STEPS))
    first_log = read_log(out)
    resumed_output = launch("genmask_sdk.families.genmask.train.finetune", *common, "--max-steps", str(RESUMED_STEPS))
    return {"root": root, "data": data, "out": out, "checkpoint": checkpoint, "cache_output": cache_output,
            "first_log": first_log, "first_output": first_output, "resumed_output": resumed_output}


# -------------------------------------------------------------------------- two-process runs
def test_cache_runs_data_parallel(trained):
    assert "(3 shards, 2 computed by the main process, 2 process(es))" in trained["cache_output"]


def test_prepared_sets_are_read_as_one(trained):
    from genmask_sdk.families.genmask.train.cache_reader import open_caches

    caches = open_caches(trained["data"])
    assert len(caches) == 36 and list(caches.indices("gen")) == list(range(24, 36))
    batch = caches.batch([3, 30])
    assert batch.z_mask[0].abs().sum() > 0 and batch.z_mask[1].abs().sum() == 0


def test_both_ranks_train_and_the_loss_falls(trained):
    log = read_log(trained["out"])
    assert [e["step"] for e in log] == list(range(1, RESUMED_STEPS + 1))
    assert all(e["world_size"] == 2 and e["micro_steps_per_rank"] == [2, 2] for e in log)
    first, last = log[0], np.mean([e["loss_seg"] + e["loss_gen"] for e in log[-3:]])
    assert last < 0.9 * (first["loss_seg"] + first["loss_gen"]), log
    assert all(e["lr"] > 0 and e["samples_per_s"] > 0 for e in log)
    evaluated = [e for e in log if "eval_miou" in e]
    assert [e["step"] for e in evaluated] == [3, 6, 9]
    assert all(e["eval_count"] == 6 and 0.0 <= e["eval_miou"] <= 1.0 and 0.0 <= e["eval_oiou"] <= 1.0
               for e in evaluated)


def test_resumed_run_continues_from_the_saved_step(trained):
    assert "starting: 2 process(es)" in trained["first_output"]
    assert f"resuming from step {STEPS}" in trained["resumed_output"]
    log = read_log(trained["out"])
    assert log[:STEPS] == trained["first_log"]  # the first run's lines kept, nothing repeated
    assert log[STEPS]["samples"] == (STEPS + 1) * 32
    state = trained["out"] / ".training_state"
    assert (state / "latest").read_text().strip() == f"step-{RESUMED_STEPS:07d}"
    assert json.loads((state / f"step-{RESUMED_STEPS:07d}" / "position.json").read_text())["step"] == RESUMED_STEPS


def test_resume_after_a_crash_repeats_exactly_the_lost_steps(trained, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    args = ["--data", *map(str, trained["data"]), "--out", str(out), "--preset", "tiny", "--max-steps", "4",
            "--global-batch", "16", "--micro-batch", "4", "--lr", "2e-3", "--min-lr", "2e-4", "--log-every", "1",
            "--checkpoint-every", "2", "--probe-steps", "0", "--no-progress"]
    finetune.main(args)
    uninterrupted, weights = read_log(out), load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    state = out / ".training_state"  # a crash after step 3: the newest state on disk is step 2's
    shutil.rmtree(state / "step-0000004")
    (state / "latest").write_text("step-0000002\n")
    finetune.main(args)
    resumed = read_log(out)
    timing = ("samples_per_s",)
    assert [{k: v for k, v in e.items() if k not in timing} for e in resumed] == \
        [{k: v for k, v in e.items() if k not in timing} for e in uninterrupted]
    again = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    swapped = ["--data", *map(str, trained["data"][::-1])] + args[1 + len(trained["data"]):]
    with pytest.raises(ConfigError, match="other data"):
        finetune.main(swapped)


def test_final_checkpoint_builds_engines_and_segments(trained):
    from genmask_sdk import Segmenter
    from genmask_sdk import build_engines
    from genmask_sdk.families.genmask.modeling import GenMaskModel

    out = trained["out"]
    model = GenMaskModel.from_pretrained(out)
    frozen = GenMaskModel.from_pretrained(trained["checkpoint"])
    assert model.config.embedder == frozen.config.embedder and model.config.resolution == 32
    assert all(torch.equal(a, b) for a, b in zip(model.vae.state_dict().values(), frozen.vae.state_dict().values()))
    engines = trained["root"] / "engines"
    build_engines(out, engines, ["fp32"], tensorrt="off", max_batch=2, check_samples=1, calib="random",
                  text_embedder=False, progress=False, log=lambda line: None)
    segmenter = Segmenter.from_engines(engines, backend="onnxruntime", precision="fp32")
    image = np.full((40, 30, 3), 200, np.uint8)
    result = segmenter.predict(image, "the red circle")
    assert result.mask.shape == (40, 30) and result.mask.dtype == bool


# ------------------------------------------------------------------------------ in-process
def test_training_forward_equals_the_reference_forward(tiny_model):
    from genmask_sdk.families.genmask.modeling.wan_forward import wan_velocity

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 16, 2, 4, 4, generator=generator)
    frame_t = torch.tensor([[0.0, 700.0], [0.0, 30.0]])
    context = torch.randn(2, 5, 384, generator=generator)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    model = TrainingDiT(tiny_model.transformer, checkpointing=True)
    with torch.no_grad():
        expected = wan_velocity(tiny_model.transformer, latents, frame_t, context, mask)
        got, single = model([(latents, frame_t, context, mask), (latents[:, :, :1], frame_t[:, 1:], context, mask)])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert single.shape == (2, 16, 1, 4, 4)
    assert transformer_state(model.state_dict()).keys() == tiny_model.transformer.state_dict().keys()


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model):
    inputs = [(torch.randn(1, 16, 2, 4, 4), torch.tensor([[0.0, 500.0]]), torch.randn(1, 3, 384), None)]
    grads = []
    for enabled in (False, True):
        model = TrainingDiT(tiny_model.transformer, checkpointing=enabled).train()
        model.zero_grad()
        model(inputs)[0].square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])
    tiny_model.transformer.zero_grad(set_to_none=True)


def test_bad_inputs_are_typed_errors(tmp_path, trained):
    with pytest.raises(ConfigError, match="unknown preset"):
        finetune.main(["--data", str(trained["data"][0]), "--out", str(tmp_path / "x"), "--preset", "huge", "--max-steps", "1"])
    with pytest.raises(ArtifactNotFoundError, match="train.cache"):
        finetune.main(["--data", str(tmp_path), "--out", str(tmp_path / "x"), "--preset", "tiny", "--max-steps", "1"])
    other = tiny_checkpoint(tmp_path / "other", seed=3)
    with pytest.raises(ArtifactMismatchError, match="other frozen stages"):
        finetune.main(["--data", *map(str, trained["data"]), "--out", str(tmp_path / "x"), "--preset", "tiny",
                       "--max-steps", "1", "--checkpoint", str(other)])
    with pytest.raises(ConfigError, match="not a multiple"):
        FinetuneConfig(preset="tiny", max_steps=1, global_batch=1000, micro_batch=3).accumulation(2)
    with pytest.raises(ConfigError, match="other settings"):
        FinetuneConfig(preset="tiny", max_steps=5, lr=1e-3).check_resumable(json.loads(
            (trained["out"] / "finetune_config.json").read_text()))


def test_learning_rate_is_cosine_from_peak_to_floor():
    cfg = FinetuneConfig(preset="tiny", max_steps=8000)
    rates = [lr_at(s, cfg) for s in range(0, 8001, 500)]
    assert rates[0] == pytest.approx(5e-5) and rates[-1] == pytest.approx(1e-5)
    assert rates[8] == pytest.approx(3e-5) and all(a > b for a, b in zip(rates, rates[1:]))


def test_micro_step_inputs_follow_the_recipe():
    from genmask_sdk.families.genmask.train.cache_reader import CachedBatch
    from genmask_sdk.families.genmask.train.finetune_data import (
        generation_inputs,
        micro_generator,
        segmentation_inputs,
    )

    n = 512
    batch = CachedBatch(torch.arange(n), torch.full((n, 2), 8), torch.randn(n, 16, 2, 2), torch.randn(n, 16, 2, 2),
                        torch.ones(n, 3, 4), torch.ones(n, 3, dtype=torch.bool))
    (latents, frame_t, states, mask), (x0, noise) = segmentation_inputs(batch, 0.05, micro_generator(0, 0, 0, 0))
    assert torch.equal(latents[:, :, 0], batch.z_image) and torch.equal(x0, batch.z_mask)  # the VAE shortcut
    assert torch.all(frame_t[:, 0] == 0) and (frame_t[:, 1] < 850).float().mean() < 0.2  # shifted: mostly near 1000
    assert torch.equal(states, batch.states)  # no CFG dropout for segmentation
    null = torch.zeros(2, 4)
    (latents, frame_t, states, mask), (x0, _) = generation_inputs(batch, null, 0.1, micro_generator(0, 0, 0, 1))
    assert latents.shape == (n, 16, 1, 2, 2) and torch.equal(x0, batch.z_image) and frame_t.shape == (n, 1)
    dropped = ~mask[:, 2]  # dropped rows hold the 2-token empty instruction
    assert 0.05 < dropped.float().mean() < 0.15 and torch.all(states[dropped] == 0)
    assert abs(float(frame_t.median()) - 500) < 60  # logit-normal around t = 0.5


def test_task_stream_splits_ranks_and_resumes_exactly():
    rows = np.arange(100, 111)
    a, b = TaskStream(rows, 0, 2, seed=4), TaskStream(rows, 1, 2, seed=4)
    first = a.take(6)
    assert not set(first) & set(b.take(5)) and set(first) <= set(rows)
    a.take(4)  # crosses into epoch 1
    position = a.position()
    assert position["epoch"] == 1
    assert TaskStream(rows, 0, 2, seed=4, **position).take(7) == a.take(7)


def test_wan_transformer_is_loaded_with_a_new_text_width(tmp_path, tiny_config):
    from diffusers import WanTransformer3DModel

    wan = WanTransformer3DModel(**dict(tiny_config.transformer, text_dim=48))
    wan.save_pretrained(tmp_path / "wan" / "transformer")
    loaded = load_wan_transformer(str(tmp_path / "wan"), 384)
    assert loaded.condition_embedder.text_embedder.linear_1.in_features == 384
    assert loaded.config.text_dim == 384
    torch.testing.assert_close(loaded.blocks[0].attn1.to_q.weight, wan.blocks[0].attn1.to_q.weight)
    from genmask_sdk.families.genmask.train.finetune_model import initial_transformer

    cfg = FinetuneConfig(preset="tiny", max_steps=1, init=str(tmp_path / "wan"))  # what --init WAN does
    transformer, config = initial_transformer(cfg, tiny_config)
    assert config.transformer["text_dim"] == 384 == transformer.condition_embedder.text_embedder.linear_1.in_features
    with pytest.raises(ConfigError, match="cannot load a Wan2.1 transformer"):
        load_wan_transformer(str(tmp_path / "missing"), 384)


def test_initial_weights_of_another_size_are_refused(trained):
    from genmask_sdk.families.genmask.config import GenMaskConfig
    from genmask_sdk.families.genmask.train.finetune_model import initial_transformer

    cfg = FinetuneConfig(preset="demo", max_steps=1, init=str(trained["checkpoint"]))  # a tiny checkpoint
    with pytest.raises(ConfigError, match="not a demo DiT.*num_layers"):
        initial_transformer(cfg, GenMaskConfig.preset("demo", embedder="minilm"))


FSDP2_SCRIPT = """
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.families.genmask.modeling import GenMaskModel
from genmask_sdk.families.genmask.train.finetune_model import TrainingDiT
dist.init_process_group("gloo")
torch.manual_seed(0)
transformer = GenMaskModel.from_config(GenMaskConfig.preset("tiny", embedder="minilm")).transformer
reference = TrainingDiT(GenMaskModel.from_config(GenMaskConfig.preset("tiny", embedder="minilm")).transformer)
reference.load_state_dict(TrainingDiT(transformer).state_dict())
model = TrainingDiT(transformer, checkpointing=True).train()
for block in model.blocks:
    fully_shard(block)
fully_shard(model)
g = torch.Generator().manual_seed(1)
inputs = [(torch.randn(2, 16, 2, 4, 4, generator=g), torch.tensor([[0.0, 700.0], [0.0, 30.0]]),
           torch.randn(2, 5, 384, generator=g), torch.ones(2, 5, dtype=torch.bool)),
          (torch.randn(2, 16, 1, 4, 4, generator=g), torch.tensor([[300.0], [20.0]]), torch.randn(2, 5, 384, generator=g), None)]
sum(o.square().mean() for o in model(inputs)).backward()
sum(o.square().mean() for o in reference(inputs)).backward()
sharded = model.blocks[0].block.attn1.to_q.weight
assert tuple(sharded.to_local().shape) == (16, 32), sharded.to_local().shape
for (name, p), q in zip(model.named_parameters(), reference.parameters()):
    assert torch.allclose(p.grad.full_tensor(), q.grad, atol=1e-6), name
print(f"fsdp2-ok-rank{dist.get_rank()}", flush=True)
dist.destroy_process_group()
# leave without the interpreter's teardown: gloo's threads are sometimes still being destroyed then and
# abort the process ("terminate called without an active exception", ~1 run in 5 on 2 cores) after the
# checks above have passed
import os
os._exit(0)
"""


def test_fsdp2_shards_training_blocks_and_keeps_the_gradients(tmp_path):
    """Without a GPU accelerate never picks FSDP, so torch's FSDP2 is applied as accelerate would
    (each TrainingBlock, then the root) on two gloo processes: the weights are sharded and every
    gradient equals the unsharded model's."""
    script = tmp_path / "fsdp2.py"
    script.write_text(FSDP2_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "fsdp2-ok-rank0" in done.stdout and "fsdp2-ok-rank1" in done.stdout
    assert "returned a view tensor" not in done.stderr


def test_fsdp_must_wrap_the_training_blocks():
    from types import SimpleNamespace

    from genmask_sdk.families.genmask.train.finetune_model import check_fsdp_wrapping

    def accelerator(names):
        return SimpleNamespace(state=SimpleNamespace(fsdp_plugin=SimpleNamespace(transformer_cls_names_to_wrap=names)))

    check_fsdp_wrapping(accelerator(None))
    check_fsdp_wrapping(accelerator(["TrainingBlock"]))
    with pytest.raises(ConfigError, match="TrainingBlock"):
        check_fsdp_wrapping(accelerator(["WanTransformerBlock"]))
