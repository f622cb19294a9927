"""One fine-tuning run, piece by piece: ``start`` (set up or resume), ``optimizer_step``, ``after_step``
(log, evaluate, save the state), ``finish`` (the standard checkpoint). ``finetune.train`` strings them together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ConfigError
from genmask_sdk.families.genmask.train.finetune_config import FinetuneConfig


@dataclass
class Run:
    """Everything the loop touches. ``step`` counts optimizer steps done, ``samples`` the samples they saw."""

    cfg: FinetuneConfig
    out: Path
    accelerator: Any
    accumulation: int
    config: GenMaskConfig
    model: Any
    optimizer: Any
    scheduler: Any
    reader: Any
    streams: dict
    null_states: torch.Tensor
    probe: torch.nn.Module
    held_out: Any
    log: Any
    step: int
    samples: int

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def position(self) -> dict:
        """What a resumed run needs besides accelerate's state (saved as ``position.json``)."""
        return {"step": self.step, "samples": self.samples, "world_size": self.accelerator.num_processes,
                "data": self.reader.fingerprints(), **{task: s.position() for task, s in self.streams.items()}}


def expected_identity(cfg: FinetuneConfig) -> str | None:
    """The source identity ``--checkpoint`` gives the cache to check against (None: no check)."""
    if cfg.checkpoint is None:
        return None
    from genmask_sdk.families.genmask.train.cache_source import resolve_source

    return resolve_source(checkpoint=cfg.checkpoint).identity


def check_tasks(reader) -> None:
    """ConfigError unless the caches hold rows of both tasks (the 1:1 mix needs them)."""
    for task, hint in (("seg", "referring / semantic segmentation sources"), ("gen", "captions (--captions N for scenes)")):
        if len(reader.indices(task)) == 0:
            raise ConfigError(f"the cache holds no {task!r} rows; the 1:1 recipe needs both tasks. Prepare the data "
                              f"with {hint} and cache it too.")


def fit_probe(reader, cfg: FinetuneConfig, progress: bool) -> torch.nn.Module:
    """The linear-probe mask head, fitted by BCE on up to ``probe_samples`` cached mask latents
    (``train.probe``; no DiT involved). Deterministic: every process gets the same head."""
    from genmask_sdk.families.genmask.modeling.mask_head import LinearProbeHead
    from genmask_sdk.families.genmask.train.probe import fit_linear_probe

    torch.manual_seed(cfg.seed)
    head = LinearProbeHead(16, 8)
    rows = np.sort(np.random.default_rng(cfg.seed).permutation(reader.indices("seg"))[: cfg.probe_samples])
    if cfg.probe_steps:
        fit_linear_probe(head, reader.latents(rows, "z_mask"), reader.masks(rows), steps=cfg.probe_steps,
                         lr=cfg.probe_lr, seed=cfg.seed, progress=progress)
    return head.eval()


def start(cfg: FinetuneConfig, data: Sequence[Path], out: Path, eval_data: Path | None) -> Run:
    """Open the caches, build (or restore) model, optimizer, scheduler and data position."""
    from accelerate import Accelerator

    from genmask_sdk.families.genmask.train.cache import process_state
    from genmask_sdk.families.genmask.train.cache_reader import open_caches
    from genmask_sdk.families.genmask.train.finetune_data import TaskStream
    from genmask_sdk.families.genmask.train.finetune_eval import HeldOut
    from genmask_sdk.families.genmask.train.finetune_model import (
        TrainingDiT,
        check_fsdp_wrapping,
        genmask_config,
        initial_transformer,
    )
    from genmask_sdk.families.genmask.train.finetune_state import TrainingLog, resume_position
    from genmask_sdk.families.genmask.train.finetune_step import lr_at, lr_factor

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    reader = open_caches(data, identity=expected_identity(cfg))
    check_tasks(reader)
    accumulation = cfg.accumulation(process_state().num_processes)
    accelerator = Accelerator(gradient_accumulation_steps=accumulation)
    transformer, config = initial_transformer(cfg, genmask_config(cfg, reader.info))
    model = TrainingDiT(transformer, cfg.gradient_checkpointing).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg))
    check_fsdp_wrapping(accelerator)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    position = resume_position(accelerator, cfg, out, reader.fingerprints()) or {}
    step = position.get("step", 0)
    for group in optimizer.param_groups:  # a resumed run may have a new --max-steps: its schedule from here on
        group["lr"] = lr_at(step, cfg)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    streams = {task: TaskStream(reader.indices(task), rank, world, cfg.seed + k, **position.get(task, {}))
               for k, task in enumerate(("seg", "gen"))}
    held_out = HeldOut(eval_data, reader, cfg.eval_samples) if eval_data is not None else None
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out)
    return Run(cfg, out, accelerator, accumulation, config, model, optimizer, scheduler, reader, streams,
               reader.null_states(), fit_probe(reader, cfg, cfg.progress and main), held_out,
               TrainingLog(out, step, main), step, position.get("samples", 0))


def optimizer_step(run: Run, window) -> float:
    """``accumulation`` micro-steps, one optimizer and scheduler step; returns the learning rate used."""
    from genmask_sdk.families.genmask.train.finetune_step import micro_step_losses

    accelerator, cfg = run.accelerator, run.cfg
    for micro in range(run.accumulation):
        with accelerator.accumulate(run.model):
            seg, gen = micro_step_losses(run.model, run.reader, run.streams, run.null_states, cfg,
                                         accelerator.process_index, run.step, micro, accelerator.device)
            accelerator.backward(seg + gen)
            if accelerator.sync_gradients and cfg.grad_clip:
                accelerator.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        window.add(seg, gen)
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    run.step, run.samples = run.step + 1, run.samples + cfg.global_batch
    return lr


def after_step(run: Run, window, lr: float) -> dict | None:
    """Log (and evaluate) when due, save the training state when due; returns the log entry, if any."""
    from genmask_sdk.families.genmask.train.finetune_eval import evaluate
    from genmask_sdk.families.genmask.train.finetune_state import save_training_state

    cfg, step = run.cfg, run.step
    last = step == cfg.max_steps
    evaluate_now = run.held_out is not None and (last or bool(cfg.eval_every and step % cfg.eval_every == 0))
    entry = None
    if last or evaluate_now or (cfg.log_every and step % cfg.log_every == 0):
        entry = window.entry(run.accelerator, step, lr, run.samples, cfg.micro_batch)
        if evaluate_now:
            entry.update(evaluate(run.accelerator, run.model, run.probe, run.held_out, run.config, cfg.micro_batch))
        run.log.append(entry)
    if last or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
        save_training_state(run.accelerator, run.out, run.position(), cfg.keep_states)
    return entry


def finish(run: Run) -> None:
    """Gather the trained DiT and write the standard checkpoint into ``out`` (main process)."""
    from genmask_sdk.families.genmask.train.finetune_save import final_model, install_checkpoint

    state = run.accelerator.get_state_dict(run.model)  # every process takes part (FSDP gathers)
    if run.main:
        install_checkpoint(final_model(run.config, state, run.reader.directory / "vae", run.probe), run.out)
        run.accelerator.print(f"checkpoint at step {run.step} written to {run.out}")
    run.accelerator.wait_for_everyone()
