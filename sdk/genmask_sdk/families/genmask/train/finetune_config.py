"""``FinetuneConfig``: every knob of ``python -m genmask_sdk.families.genmask.train.finetune``, saved as
``finetune_config.json`` beside the checkpoint it produces.

Batch arithmetic: one optimizer step sees ``global_batch`` samples, half segmentation and half
generation (the paper's 1:1 mix); each process runs ``micro_batch`` samples *of each task* per
micro-step, so ``accumulation = global_batch / (2 · micro_batch · processes)`` micro-steps make a
step (it must divide exactly). The paper: global batch 1024, ~8000 steps, cosine LR 5e-5 → 1e-5.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from genmask_sdk.errors import ConfigError
from genmask_sdk.io import atomic_write_text

CONFIG_FILE = "finetune_config.json"
PRESETS = ("tiny", "demo", "wan2.1-1.3b")
#: The public Wan2.1 checkpoint the real preset starts from (diffusers layout, ``transformer/`` + ``vae/``).
WAN_13B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
#: Fields that may change when a run is resumed (they do not change what was computed so far).
RESUMABLE_CHANGES = ("checkpoint", "max_steps", "log_every", "eval_every", "eval_samples", "checkpoint_every", "keep_states",
                     "gradient_checkpointing", "probe_steps", "probe_samples", "threads", "progress")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run.

    Attributes:
        preset: DiT architecture: ``"tiny"`` (tests), ``"demo"`` (the demo checkpoint's size) or
            ``"wan2.1-1.3b"`` (Wan2.1-T2V-1.3B, initialised from ``init``, default ``WAN_13B``).
        max_steps: optimizer steps to reach (a resumed run continues to this step; a larger value
            than before stretches the cosine schedule from the saved step on).
        global_batch: samples per optimizer step, both tasks together (paper: 1024).
        micro_batch: samples per task, per process, per micro-step.
        lr, min_lr: cosine schedule from ``lr`` (after ``warmup_steps`` linear warm-up) to ``min_lr`` at ``max_steps``.
        weight_decay: AdamW's. grad_clip: max global gradient norm (0: no clipping).
        shift_a: segmentation timestep shift (``timesteps.segmentation_timesteps``, 0.05).
        cfg_dropout: probability that a generation sample's instruction is replaced by the empty one.
        gradient_checkpointing: recompute each block's activations in the backward pass.
        seed: data order, noise, timesteps and dropout (with the process rank and step).
        init: DiT initial weights: None (random; for ``wan2.1-1.3b``: ``WAN_13B``), a GenMask
            checkpoint, or a Wan2.1 diffusers checkpoint (hub id or directory).
        checkpoint: the GenMask checkpoint the cache must come from (identity check); None: trust the cache.
        log_every, checkpoint_every, eval_every: in optimizer steps (0: never; the last step always
            logs and saves). eval_samples: held-out segmentation rows scored per evaluation.
        keep_states: training states kept on disk (older ones are deleted).
        probe_steps, probe_samples, probe_lr: linear-probe fit on cached mask latents (``train.probe``).
        threads: torch CPU threads per process (0: leave torch's default). progress: tqdm bar on the main process.
    """

    preset: str
    max_steps: int
    global_batch: int = 1024
    micro_batch: int = 4
    lr: float = 5e-5
    min_lr: float = 1e-5
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    shift_a: float = 0.05
    cfg_dropout: float = 0.1
    gradient_checkpointing: bool = False
    seed: int = 0
    init: str | None = None
    checkpoint: str | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    eval_every: int = 0
    eval_samples: int = 256
    keep_states: int = 2
    probe_steps: int = 1000
    probe_samples: int = 1024
    probe_lr: float = 3e-2
    threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; use one of {list(PRESETS)}.")
        positive = ("max_steps", "global_batch", "micro_batch", "eval_samples", "keep_states", "probe_samples")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("warmup_steps", "log_every", "checkpoint_every", "eval_every", "probe_steps", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if not 0.0 < self.min_lr <= self.lr:
            raise ConfigError(f"need 0 < min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}.")
        if not 0.0 <= self.cfg_dropout < 1.0:
            raise ConfigError(f"cfg_dropout must be in [0, 1), got {self.cfg_dropout}.")

    def accumulation(self, processes: int) -> int:
        """Micro-steps per optimizer step for ``processes`` processes; ConfigError unless exact."""
        per_micro = 2 * self.micro_batch * processes
        if self.global_batch % per_micro:
            raise ConfigError(
                f"global batch {self.global_batch} is not a multiple of 2 tasks x micro batch {self.micro_batch} x "
                f"{processes} processes = {per_micro}; change --global-batch or --micro-batch.")
        return self.global_batch // per_micro

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def save(self, directory: Path) -> None:
        atomic_write_text(Path(directory) / CONFIG_FILE, self.to_json() + "\n")

    def check_resumable(self, saved: dict) -> None:
        """Refuse to resume a run saved with other settings (those outside ``RESUMABLE_CHANGES``)."""
        mine = dataclasses.asdict(self)
        changed = sorted(k for k in mine if k not in RESUMABLE_CHANGES and saved.get(k) != mine[k])
        if changed:
            details = ", ".join(f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in changed)
            raise ConfigError(f"the run being resumed was started with other settings ({details}); pass the same "
                              "values, or a fresh --out to start a new run.")


def add_arguments(parser) -> None:
    """The command-line options of ``FinetuneConfig`` (besides --data / --out / --eval-data)."""
    defaults = FinetuneConfig(preset="tiny", max_steps=1)
    parser.add_argument("--preset", required=True, help=f"DiT size: {', '.join(PRESETS)}")
    parser.add_argument("--max-steps", type=int, required=True, help="optimizer steps to reach")
    for name, kind, help_text in (
        ("global_batch", int, "samples per optimizer step, both tasks (paper: 1024)"),
        ("micro_batch", int, "samples per task per process per micro-step"),
        ("lr", float, "peak learning rate"), ("min_lr", float, "final learning rate (cosine)"),
        ("warmup_steps", int, "linear warm-up steps"), ("weight_decay", float, "AdamW weight decay"),
        ("grad_clip", float, "max gradient norm (0: off)"), ("shift_a", float, "segmentation timestep shift a"),
        ("cfg_dropout", float, "generation-only instruction dropout"), ("seed", int, "seed"),
        ("log_every", int, "log every N steps"), ("checkpoint_every", int, "save the training state every N steps"),
        ("eval_every", int, "held-out evaluation every N steps (needs --eval-data; 0: only at the end)"),
        ("eval_samples", int, "held-out segmentation rows per evaluation"),
        ("keep_states", int, "training states kept on disk"), ("probe_steps", int, "mask-head fit steps"),
        ("probe_samples", int, "cached masks the mask head is fitted on"), ("probe_lr", float, "mask-head learning rate"),
        ("threads", int, "torch CPU threads per process (0: default)"),
    ):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=getattr(defaults, name), help=f"{help_text} (default {getattr(defaults, name)})")
    parser.add_argument("--init", default=None, help=f"initial DiT: GenMask checkpoint or Wan2.1 diffusers id/dir (wan2.1-1.3b: {WAN_13B})")
    parser.add_argument("--checkpoint", default=None, help="GenMask checkpoint the cache must have been computed from")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute block activations (less memory)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args) -> FinetuneConfig:
    names = {f.name for f in dataclasses.fields(FinetuneConfig)} - {"progress"}
    return FinetuneConfig(progress=not args.no_progress, **{k: getattr(args, k) for k in names})
