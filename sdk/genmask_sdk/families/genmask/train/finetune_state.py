"""Training state on disk (resume) and the training log of a fine-tuning run.

Layout inside ``--out CKPT``::

    training_log.jsonl             one JSON object per logged step (step, loss_seg, loss_gen, lr, world_size, ...)
    finetune_config.json           FinetuneConfig of the run
    .training_state/latest         name of the newest complete state (written last, atomically)
    .training_state/step-0000500/ accelerate ``save_state`` (model, optimizer, scheduler, RNGs) + position.json

The state folder is hidden so that the checkpoint hash of ``build_engines`` (hidden entries skipped)
depends on the weights only. ``position.json`` holds the step, each task's data position and the
counters; a resume loads the newest state and cuts the log back to its step.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from genmask_sdk.errors import ConfigError
from genmask_sdk.io import atomic_write_text
from genmask_sdk.families.genmask.train.finetune_config import CONFIG_FILE

STATE_DIR = ".training_state"
LATEST = "latest"
POSITION = "position.json"
LOG_FILE = "training_log.jsonl"


def state_root(out: Path) -> Path:
    return Path(out) / STATE_DIR


def latest_state(out: Path) -> Path | None:
    """The newest complete training state of ``out``, or None."""
    pointer = state_root(out) / LATEST
    if not pointer.is_file():
        return None
    directory = state_root(out) / pointer.read_text().strip()
    return directory if (directory / POSITION).is_file() else None


def save_training_state(accelerator, out: Path, position: dict, keep: int) -> Path:
    """Save model, optimizer, scheduler and RNG states (every process) and ``position`` (main
    process), then point ``latest`` at it and delete all but the ``keep`` newest states."""
    directory = state_root(out) / f"step-{position['step']:07d}"
    accelerator.save_state(str(directory))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_text(directory / POSITION, json.dumps(position, indent=2) + "\n")
        atomic_write_text(state_root(out) / LATEST, directory.name + "\n")
        states = sorted(p for p in state_root(out).glob("step-*") if p.is_dir())
        for old in states[:-keep]:
            if old != directory:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return directory


def load_training_state(accelerator, out: Path) -> dict | None:
    """Restore the newest state of ``out`` into the prepared objects; returns its position (None: fresh run)."""
    directory = latest_state(out)
    if directory is None:
        return None
    accelerator.load_state(str(directory))
    return json.loads((directory / POSITION).read_text())


class TrainingLog:
    """``training_log.jsonl``, appended by the main process only; on resume, entries after the
    resumed step are dropped (they were computed after the last saved state)."""

    def __init__(self, out: Path, resumed_step: int, main: bool) -> None:
        self.path, self.main = Path(out) / LOG_FILE, main
        if main:
            kept = [line for line in self._lines() if json.loads(line)["step"] <= resumed_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def _lines(self) -> list[str]:
        if not self.path.is_file():
            return []
        return [line for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, entry: dict) -> None:
        if self.main:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")


def resume_position(accelerator, cfg, out: Path, data: list[str]) -> dict | None:
    """Check that ``out`` may be resumed with ``cfg`` on the prepared sets of fingerprints ``data``
    and load its newest state (None: fresh run)."""
    state, saved = latest_state(out), Path(out) / CONFIG_FILE
    if state is None:
        return None
    if saved.is_file():
        cfg.check_resumable(json.loads(saved.read_text()))
    position = json.loads((state / POSITION).read_text())
    if position.get("data") != data:
        raise ConfigError(f"{out} was trained on other data (other --data sets, or prepared again since); pass the "
                          "same --data in the same order, or a fresh --out to start a new run.")
    if position["world_size"] != accelerator.num_processes:
        raise ConfigError(f"{out} was trained with {position['world_size']} processes; resume it with "
                          f"--num_processes {position['world_size']} (now {accelerator.num_processes}).")
    return load_training_state(accelerator, out)


class Window:
    """Losses since the last log line (per process), gathered over processes into one log entry:
    means per task over every micro-step of every process, samples/s, micro-steps per process."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.started = time.time()

    def add(self, seg: torch.Tensor, gen: torch.Tensor) -> None:
        """One micro-step's losses (kept on their device: no synchronisation until the log line)."""
        self.losses.append(torch.stack([seg.detach(), gen.detach()]).double())

    def entry(self, accelerator, step: int, lr: float, samples: int, micro_batch: int) -> dict:
        """The log entry of ``step`` (call on every process: it gathers)."""
        count = torch.tensor([float(len(self.losses))], dtype=torch.float64)
        sums = torch.stack(self.losses).sum(0).cpu() if self.losses else torch.zeros(2, dtype=torch.float64)
        local = torch.cat([sums, count]).to(accelerator.device)
        per_rank = accelerator.gather(local[None]).cpu()
        seconds = max(time.time() - self.started, 1e-9)
        entry = {"step": step, "loss_seg": float(per_rank[:, 0].sum() / per_rank[:, 2].sum()),
                 "loss_gen": float(per_rank[:, 1].sum() / per_rank[:, 2].sum()), "lr": lr,
                 "world_size": accelerator.num_processes,
                 "samples_per_s": float(per_rank[:, 2].sum()) * 2 * micro_batch / seconds, "samples": samples,
                 "micro_steps_per_rank": [int(m) for m in per_rank[:, 2].tolist()]}
        if accelerator.device.type == "cuda":  # this process's peak, to check docs/training.md's memory table
            entry["max_memory_gib"] = round(torch.cuda.max_memory_allocated(accelerator.device) / 2**30, 2)
        self.reset()
        return entry
