"""Train the gen2seg demo checkpoint on procedural instance scenes: ``python -m genmask_sdk.families.gen2seg.train.demo``.

The paper's idea at demo scale: a generative prior is a grouping prior. Stages (each resumable
from ``--work``; re-running with the same ``--work`` continues where it stopped):

1. data      ``n_scenes`` instance scenes (``genmask_sdk.data.instances``, seed ``seed``),
             regenerated deterministically in memory (a few seconds, nothing stored);
2. pretrain  a small ``ViTMAEForPreTraining`` (our config: 128², patch 8, width 128, 4 encoder
             + 1 decoder layers) with its own masked-reconstruction objective (75 % of the patches
             masked) on the scene images; skipped by ``--no-pretrain`` (the ablation), whose fine-tuning then gets the
             pre-training's compute in extra steps (``ablation_extra_steps``);
3. finetune  the same network run as gen2seg-mae does at inference (no masking, identity patch
             order, unpatchify, per-image min–max to 0–255) trained with the instance-colouring
             loss (``train.instance_loss``: variance, pixel separation with w = 30/√|inst| (the
             value upstream's comment gives for SD2; 10 separated instances too weakly here),
             mean separation);
4. prompts   the point-prompt parameters (threshold × the refinement's colour sigma, the grid
             ``prompt_thresholds`` × ``prompt_colour_sigmas``) that maximise single-point mIoU on
             ``validation_scenes`` scenes of ``validation_seed`` (not this run's training seed,
             never the held-out one), written as ``prompt_config.json``
             (``instance.prompt_defaults``: the checkpoint's own prompt defaults; the published
             values were set for the published models' maps, not for this one's);
5. save      ``save_mae`` (the layout ``load_gen2seg`` reads) + ``training_config.json`` +
             ``training_summary.json`` (steps, seconds, CPU, losses, the prompt selection).

Determinism: data, initialisation, masking noise, batches and augmentations come from seeded
generators, so a run on one machine with one thread count reproduces itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from genmask_sdk.runtime.hardware import cpu_model
from genmask_sdk.data.instances import TRAIN_SEEDS, InstanceDataset
from genmask_sdk.errors import ConfigError
from genmask_sdk.io import atomic_path, atomic_write_text
from genmask_sdk.families.gen2seg.config import Gen2SegConfig
from genmask_sdk.families.gen2seg.modeling.mae import Gen2SegMAE
from genmask_sdk.families.gen2seg.modeling.processing import min_max_gamma
from genmask_sdk.families.gen2seg.train.losses import InstanceLossConfig, instance_colouring_loss

DEMO_NAME = "demo-gen2seg"


@dataclass(frozen=True)
class Gen2SegDemoConfig:
    """Every knob of the run (saved as ``training_config.json`` beside the checkpoint).

    Model: ViT-MAE at ``image_size``² with ``patch_size`` patches (128/8: a 16×16 grid, 256
    tokens, 192 predictions per token), encoder ``hidden_size`` × ``layers``, decoder
    ``decoder_hidden`` × ``decoder_layers``: about 1.1 M parameters, plus the pixel head
    (``pixel_head_channels`` wide, ``pixel_head_depth`` dilated residual blocks, ~12 k parameters,
    ``pixel_head.py``) that sharpens the 8×8-patch colour map at full resolution; 4.6 MB in fp32,
    sized so that both stages fit well inside an hour on a shared 2-core CPU. Patch 8 keeps 256 tokens (patch
    16 would be 4× cheaper but predicts 16×16 pixels per token from a 128-wide vector, too coarse
    for the small objects); a wider/deeper encoder did not fit the budget.
    ``pretrain=False`` is the ablation: no MAE stage, ``ablation_extra_steps`` more fine-tuning
    steps (the pre-training's measured CPU time in fine-tuning steps).
    """

    preset: str = "demo"
    seed: int = 0
    n_scenes: int = 6000
    image_size: int = 128
    patch_size: int = 8
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 512
    decoder_hidden: int = 128
    decoder_layers: int = 1
    decoder_heads: int = 4
    decoder_intermediate: int = 512
    pixel_head_channels: int = 24
    pixel_head_depth: int = 3
    pretrain: bool = True
    mask_ratio: float = 0.75
    pretrain_steps: int = 600
    pretrain_batch: int = 32
    pretrain_lr: float = 1e-3
    finetune_steps: int = 2800
    finetune_batch: int = 8
    finetune_lr: float = 2e-3
    # the pre-training's ~400 s in fine-tuning steps, from a 0.85 s/step estimate made before the runs; the
    # shipped runs fine-tuned at 0.68 s/step (0.73 for the ablation), so these steps are ~350 s, while the
    # ablation's whole run took 2402 s of wall time against the pre-trained run's 2311 s
    ablation_extra_steps: int = 480
    separation_weight: float = 30.0
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    validation_seed: int = 1
    validation_scenes: int = 40
    prompt_thresholds: tuple[float, ...] = (3, 6, 10, 15)
    prompt_colour_sigmas: tuple[float, ...] = (2.5, 5, 10, 25, 75)
    threads: int = 1  # 1 thread: on a shared 2-core CPU, 2 OpenMP threads ran 3-5x slower per step

    def __post_init__(self) -> None:
        if self.seed not in TRAIN_SEEDS:
            raise ConfigError(f"seed {self.seed} is outside the training seeds {TRAIN_SEEDS} (the rest is held out).")
        if self.validation_seed == self.seed or self.validation_seed not in TRAIN_SEEDS:
            raise ConfigError(f"validation_seed {self.validation_seed} must be a seed in {TRAIN_SEEDS} other than the "
                              f"training seed {self.seed} (the held-out seed is for the final evaluation only).")
        if self.validation_scenes < 1 or not self.prompt_thresholds or not self.prompt_colour_sigmas:
            raise ConfigError("validation_scenes must be >= 1, prompt_thresholds and prompt_colour_sigmas non-empty.")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}.")

    @classmethod
    def tiny(cls) -> "Gen2SegDemoConfig":
        """Seconds-long settings for tests: 32², patch 8, width 32, a few steps."""
        return cls(preset="tiny", n_scenes=16, image_size=32, patch_size=8, hidden_size=32, layers=2, heads=2,
                   intermediate=64, decoder_hidden=32, decoder_layers=1, decoder_heads=2, decoder_intermediate=64,
                   pixel_head_channels=4, pixel_head_depth=2, pretrain_steps=12, pretrain_batch=8, pretrain_lr=3e-3,
                   finetune_steps=12, finetune_batch=4, finetune_lr=3e-3, ablation_extra_steps=4, warmup_steps=2, checkpoint_every=5,
                   validation_scenes=2, prompt_thresholds=(3, 10), prompt_colour_sigmas=(5, 75), threads=0)

    @property
    def total_finetune_steps(self) -> int:
        """Fine-tuning steps of this run (the ablation adds ``ablation_extra_steps``)."""
        return self.finetune_steps + (0 if self.pretrain else self.ablation_extra_steps)

    def mae_config(self, mask_ratio: float):
        """The ``ViTMAEConfig`` of the model."""
        from transformers import ViTMAEConfig

        return ViTMAEConfig(image_size=self.image_size, patch_size=self.patch_size, num_channels=3,
                            hidden_size=self.hidden_size, num_hidden_layers=self.layers,
                            num_attention_heads=self.heads, intermediate_size=self.intermediate,
                            decoder_hidden_size=self.decoder_hidden, decoder_num_hidden_layers=self.decoder_layers,
                            decoder_num_attention_heads=self.decoder_heads,
                            decoder_intermediate_size=self.decoder_intermediate, mask_ratio=mask_ratio,
                            norm_pix_loss=False)

    def gen2seg_config(self) -> Gen2SegConfig:
        name = DEMO_NAME if self.preset == "demo" else f"{self.preset}-gen2seg"
        suffix = "" if self.pretrain else "-no-pretrain"
        return Gen2SegConfig.mae(processing_size=self.image_size, name=f"{name}{suffix}-procedural-seed{self.seed}",
                                 pixel_head_channels=self.pixel_head_channels, pixel_head_depth=self.pixel_head_depth)


# ----------------------------------------------------------------------------------- stage: data
def build_data(cfg: Gen2SegDemoConfig) -> dict[str, torch.Tensor]:
    """Scenes -> ``images`` uint8 (N, 3, S, S) and ``ids`` uint8 (N, S, S) (0 = background)."""
    dataset = InstanceDataset(cfg.seed, cfg.n_scenes, cfg.image_size)
    images = np.empty((cfg.n_scenes, cfg.image_size, cfg.image_size, 3), dtype=np.uint8)
    ids = np.empty((cfg.n_scenes, cfg.image_size, cfg.image_size), dtype=np.uint8)
    for i, scene in enumerate(tqdm(dataset, desc="scenes", total=len(dataset))):
        images[i], ids[i] = scene.image, scene.instance_ids
    return {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), "ids": torch.from_numpy(ids)}


def sample_batch(data: dict[str, torch.Tensor], batch: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch with a random dihedral augmentation (flip + 90° rotation) per sample.

    Returns pixels float32 (B, 3, S, S) in [0, 1] and ids int64 (B, S, S)."""
    pick = torch.randint(0, data["images"].shape[0], (batch,), generator=generator)
    flips = torch.randint(0, 2, (batch,), generator=generator).tolist()
    turns = torch.randint(0, 4, (batch,), generator=generator).tolist()
    images, ids = [], []
    for index, flip, turn in zip(pick.tolist(), flips, turns):
        image, label = data["images"][index], data["ids"][index]
        if flip:
            image, label = image.flip(-1), label.flip(-1)
        images.append(torch.rot90(image, turn, (-2, -1)))
        ids.append(torch.rot90(label, turn, (-2, -1)))
    return torch.stack(images).float().div(255.0), torch.stack(ids).long()


# ----------------------------------------------------------------------------------- optimisation
def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return float(0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress))))  # a float: weights_only resume


@dataclass
class _Loop:
    """One resumable optimisation loop over ``params`` (its state file under the work dir)."""

    name: str
    module: torch.nn.Module
    steps: int
    lr: float
    cfg: Gen2SegDemoConfig
    state_file: Path
    seed: int

    def run(self, step_fn: Callable[[torch.Generator], dict[str, torch.Tensor]]) -> list[dict[str, float]]:
        """Run ``step_fn`` (returns a dict with a differentiable ``loss``) until ``steps``; returns the log."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimiser = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.cfg.weight_decay, betas=(0.9, 0.95))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda s: lr_factor(s, self.cfg.warmup_steps, self.steps))
        generator = torch.Generator().manual_seed(self.seed)
        log: list[dict[str, float]] = []
        start, self.seconds = 0, 0.0
        if self.state_file.exists():
            state = torch.load(self.state_file, weights_only=True)
            self.module.load_state_dict(state["model"])
            optimiser.load_state_dict(state["optimiser"])
            schedule.load_state_dict(state["schedule"])
            generator.set_state(state["generator"])
            log, start = state["log"], state["step"]
            self.seconds = float(state.get("seconds", 0.0))
            print(f"resuming {self.name} at step {start}/{self.steps}")
        self.module.train()
        bar = tqdm(range(start, self.steps), desc=self.name, initial=start, total=self.steps)
        for step in bar:
            began = time.time()
            parts = step_fn(generator)
            optimiser.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            optimiser.step()
            schedule.step()
            self.seconds += time.time() - began
            log.append({"step": step + 1, **{k: float(v.detach()) for k, v in parts.items()}})
            bar.set_postfix(loss=f"{recent(log, 'loss'):.4g}")
            if (step + 1) % self.cfg.checkpoint_every == 0 or step + 1 == self.steps:
                with atomic_path(self.state_file) as tmp:
                    torch.save({"model": self.module.state_dict(), "optimiser": optimiser.state_dict(),
                                "schedule": schedule.state_dict(), "generator": generator.get_state(),
                                "log": log, "step": step + 1, "seconds": self.seconds}, tmp)
        self.module.eval()
        return log


def recent(log: list[dict[str, float]], key: str, n: int = 50) -> float | None:
    """Mean of ``key`` over the last ``n`` log entries (None for an empty log: JSON null, not NaN)."""
    values = [entry[key] for entry in log[-n:] if key in entry]
    return float(np.mean(values)) if values else None


# ------------------------------------------------------------------------------- stage: pretrain
def mae_pretrain_step(mae: torch.nn.Module, data: dict, batch: int, generator: torch.Generator) -> dict:
    """One masked-reconstruction step of ``ViTMAEForPreTraining`` (its own loss on masked patches);
    the masking noise comes from ``generator``. Pixels are ImageNet-normalised as at inference."""
    pixels, _ = sample_batch(data, batch, generator)
    tokens = (mae.config.image_size // mae.config.patch_size) ** 2
    noise = torch.rand(batch, tokens, generator=generator)
    output = mae(pixel_values=_normalise(pixels), noise=noise)
    return {"loss": output.loss}


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    from genmask_sdk.families.gen2seg.modeling.mae import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


# ------------------------------------------------------------------------------- stage: finetune
def colour_prediction(model: Gen2SegMAE, pixels: torch.Tensor) -> torch.Tensor:
    """The training-time colour map: the inference network (no masking, identity order,
    unpatchify), then per-image min–max to 0–255 without gamma (upstream trains without the
    gamma; it normalises over the batch, we per image as inference does). (B, 3, S, S) in [0, 1]
    -> (B, 3, S, S) float in [0, 255)."""
    return min_max_gamma(model.predict_image(pixels), 1.0, eps=1e-5, per_image=True)


def finetune_step(model: Gen2SegMAE, data: dict, batch: int, generator: torch.Generator,
                  loss_config: InstanceLossConfig) -> dict:
    """One instance-colouring step; returns the loss and its three parts."""
    pixels, ids = sample_batch(data, batch, generator)
    return instance_colouring_loss(colour_prediction(model, pixels), ids, loss_config)


# ----------------------------------------------------------------------------------- orchestration
def build_model(cfg: Gen2SegDemoConfig) -> Gen2SegMAE:
    """The randomly initialised model (seeded), wrapped as ``Gen2SegMAE`` (its ``mae`` is the
    ``ViTMAEForPreTraining``; the wrapper sets the mask ratio to 0 for inference)."""
    from transformers import ViTMAEForPreTraining

    torch.manual_seed(cfg.seed)
    mae = ViTMAEForPreTraining(cfg.mae_config(cfg.mask_ratio))
    return Gen2SegMAE(cfg.gen2seg_config(), mae)


def run(cfg: Gen2SegDemoConfig, out: Path, work: Path) -> dict[str, Any]:
    """Run (or resume) every stage and write the checkpoint to ``out``; returns the summary."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work.mkdir(parents=True, exist_ok=True)
    _check_same_run(cfg, work)
    started = time.time()
    model = build_model(cfg)
    data = build_data(cfg)
    pretrain_log: list[dict[str, float]] = []
    seconds: dict[str, float] = {}
    if cfg.pretrain:
        mae = model.mae
        mae.config.mask_ratio = cfg.mask_ratio  # the wrapper set 0; pre-training masks
        loop = _Loop("pretrain", mae, cfg.pretrain_steps, cfg.pretrain_lr, cfg, work / "pretrain_state.pt",
                     cfg.seed + 11)
        pretrain_log = loop.run(lambda g: mae_pretrain_step(mae, data, cfg.pretrain_batch, g))
        seconds["pretrain"] = loop.seconds
        mae.config.mask_ratio = 0.0
    loss_config = InstanceLossConfig(separation_weight=cfg.separation_weight)
    loop = _Loop("finetune", model, cfg.total_finetune_steps, cfg.finetune_lr, cfg, work / "finetune_state.pt",
                 cfg.seed + 23)
    finetune_log = loop.run(lambda g: finetune_step(model, data, cfg.finetune_batch, g, loss_config))
    seconds["finetune"] = loop.seconds
    model.save_pretrained(out)
    selection = write_prompt_defaults(model, cfg, out)
    total = _add_elapsed(work, time.time() - started)
    total = max(total, sum(seconds.values()))  # a killed invocation adds no wall time; its steps' time is in the states
    summary = _summary(cfg, model, out, total, pretrain_log, finetune_log, loss_config)
    summary["stage_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    summary["prompt_selection"] = selection
    atomic_write_text(out / "training_config.json", json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
    atomic_write_text(out / "training_summary.json", json.dumps(summary, indent=2))
    atomic_write_text(work / "logs.json", json.dumps({"pretrain": pretrain_log, "finetune": finetune_log}))
    print(json.dumps({k: v for k, v in summary.items() if k != "training_config"}, indent=2))
    return summary


def export_partial(cfg: Gen2SegDemoConfig, out: Path, work: Path) -> dict[str, Any]:
    """Write a checkpoint from the latest saved fine-tuning state of ``work`` (a run that was
    stopped before its last step: the summary says ``partial`` and at which step). The run can
    still be resumed later with the same command."""
    _check_same_run(cfg, work)
    state_file = work / "finetune_state.pt"
    if not state_file.exists():
        raise ConfigError(f"{work} has no fine-tuning state yet; nothing to export.")
    model = build_model(cfg)
    state = torch.load(state_file, weights_only=True)
    model.load_state_dict(state["model"])
    model.mae.config.mask_ratio = 0.0
    model.eval().save_pretrained(out)
    selection = write_prompt_defaults(model, cfg, out)
    pretrain = ({"log": [], "seconds": 0.0} if not cfg.pretrain
                else torch.load(work / "pretrain_state.pt", weights_only=True))
    seconds = {"pretrain": float(pretrain.get("seconds", 0.0)), "finetune": float(state.get("seconds", 0.0))}
    elapsed = work / "elapsed.json"
    total = json.loads(elapsed.read_text())["seconds"] if elapsed.exists() else 0.0
    total += sum(seconds.values()) if not elapsed.exists() else seconds["finetune"]
    total = max(total, sum(seconds.values()))
    summary = _summary(cfg, model, out, total, pretrain["log"], state["log"],
                       InstanceLossConfig(separation_weight=cfg.separation_weight))
    summary["stage_seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    summary["partial"] = {"finetune_step": int(state["step"]), "finetune_steps": cfg.total_finetune_steps}
    summary["prompt_selection"] = selection
    atomic_write_text(out / "training_config.json", json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
    atomic_write_text(out / "training_summary.json", json.dumps(summary, indent=2))
    return summary


def write_prompt_defaults(model: Gen2SegMAE, cfg: Gen2SegDemoConfig, out: Path) -> dict[str, Any]:
    """Choose the prompt parameters on the validation scenes (``eval.gen2seg_demo.select_prompt_config``)
    and write ``out/prompt_config.json``; returns the selection record (also in the file)."""
    from genmask_sdk.families.gen2seg.eval.demo import select_prompt_config
    from genmask_sdk.families.gen2seg.prompt_defaults import PROMPT_CONFIG_FILE, prompt_defaults_json
    from genmask_sdk.families.gen2seg.segmenter import InstanceSegmenter

    started = time.time()
    scenes = InstanceDataset(cfg.validation_seed, cfg.validation_scenes, cfg.image_size)
    segmenter = InstanceSegmenter.from_model(model.eval())
    with torch.inference_mode():
        config, record = select_prompt_config(segmenter, scenes, {"threshold": cfg.prompt_thresholds,
                                                                  "bilateral_sigma_color": cfg.prompt_colour_sigmas})
    record = {**record, "seed": cfg.validation_seed, "scenes": cfg.validation_scenes,
              "seconds": round(time.time() - started, 1)}
    atomic_write_text(out / PROMPT_CONFIG_FILE, prompt_defaults_json(config, record))
    print(f"[gen2seg_demo] prompt defaults {record['chosen']} (single-point mIoU {record['chosen_score']:.3f} on "
          f"{record['instances']} validation instances, seed {cfg.validation_seed})")
    return record


def _summary(cfg, model, out, total_seconds, pretrain_log, finetune_log, loss_config) -> dict[str, Any]:
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    return {
        "name": model.config.name,
        "training_config": dataclasses.asdict(cfg),
        "loss_config": dataclasses.asdict(loss_config),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "checkpoint_bytes": int(size),
        "seconds": round(total_seconds, 1),
        "minutes": round(total_seconds / 60, 2),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": {"pretrain": len(pretrain_log), "finetune": len(finetune_log)},
        "pretrain_loss": {"first": _first(pretrain_log, "loss"), "final": recent(pretrain_log, "loss")},
        "finetune_loss": {key: {"first": _first(finetune_log, key), "final": recent(finetune_log, key)}
                          for key in ("loss", "variance", "separation", "mean_separation")},
    }


def _first(log: list[dict[str, float]], key: str, n: int = 20) -> float | None:
    values = [entry[key] for entry in log[:n] if key in entry]
    return float(np.mean(values)) if values else None


def _add_elapsed(work: Path, seconds: float) -> float:
    """Add this invocation's wall time to ``work/elapsed.json``; the total over all invocations."""
    marker = work / "elapsed.json"
    before = json.loads(marker.read_text())["seconds"] if marker.exists() else 0.0
    atomic_write_text(marker, json.dumps({"seconds": before + seconds}))
    return before + seconds


def _check_same_run(cfg: Gen2SegDemoConfig, work: Path) -> None:
    """Refuse to resume a work directory that was started with different settings."""
    marker = work / "training_config.json"
    text = json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)
    if marker.exists() and marker.read_text() != text:
        raise ConfigError(f"{work} holds a run with other settings; pass a fresh --work directory "
                          "or delete it to start over.")
    atomic_write_text(marker, text)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genmask_sdk.families.gen2seg.train.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/gen2seg_demo/checkpoint"),
                        help="checkpoint directory to write (ship it with --out sdk/genmask_sdk/assets/demo_gen2seg)")
    parser.add_argument("--work", type=Path, default=Path("runs/gen2seg_demo/work"),
                        help="stage states; re-running with the same --work resumes")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and sampling")
    parser.add_argument("--no-pretrain", action="store_true",
                        help="ablation: no MAE pre-training; its compute goes to extra fine-tuning steps")
    parser.add_argument("--pretrain-steps", type=int, default=None)
    parser.add_argument("--finetune-steps", type=int, default=None)
    parser.add_argument("--ablation-extra-steps", type=int, default=None,
                        help="with --no-pretrain: extra fine-tuning steps worth the pre-training's CPU time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1)")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run on a tiny config")
    parser.add_argument("--export-partial", action="store_true",
                        help="write --out from the latest fine-tuning state of --work (a stopped run) and exit")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Gen2SegDemoConfig:
    cfg = Gen2SegDemoConfig.tiny() if args.tiny else Gen2SegDemoConfig()
    overrides: dict[str, Any] = {"seed": args.seed, "pretrain": not args.no_pretrain}
    for name in ("pretrain_steps", "finetune_steps", "ablation_extra_steps", "threads"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    return dataclasses.replace(cfg, **overrides)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.export_partial:
        print(json.dumps(export_partial(config_from_args(args), args.out, args.work)["partial"]))
        return
    run(config_from_args(args), args.out, args.work)


if __name__ == "__main__":
    main()
