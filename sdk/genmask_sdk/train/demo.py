"""Train the demo checkpoint on procedural scenes: ``python -m genmask_sdk.train.demo``.

Stages (each saved under ``--work``, so an interrupted run resumes where it stopped):

1. data      procedural scenes (referring expressions + masks) and captioned images;
2. vae       a small ``AutoencoderKLWan`` reconstructing scene and mask images; μ/σ measured;
3. cache     VAE latents of images, masks and captioned images; MiniLM states of every text;
4. dit       the paper's recipe: flow matching in latent space, segmentation samples with the
             shifted sampler (a = 0.05) mixed 1:1 with generation samples (logit-normal t,
             10 % CFG dropout — generation only); VAE and embedder frozen;
5. probe     the linear-probe mask head, BCE on latents of ground-truth masks;
6. save      a standard checkpoint directory (``GenMaskModel.save_pretrained``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import EMBEDDERS, GenMaskConfig
from ..data import ReferringDataset, generate_captioned_image
from ..embedders.minilm import MiniLMEmbedder
from ..io import atomic_path, atomic_write_text
from ..model import GenMaskModel
from ..model.wan_forward import wan_velocity
from .losses import add_noise, flow_matching_loss
from .probe import fit_linear_probe, mask_to_pixels
from .timesteps import generation_timesteps, segmentation_timesteps
from .vae_fit import encode_all, reconstruction_error, set_latent_stats, train_vae


@dataclass(frozen=True)
class DemoTrainingConfig:
    """Every knob of the demo run (saved as ``training_config.json`` next to the checkpoint)."""

    preset: str = "demo"
    seed: int = 0
    n_scenes: int = 4000
    n_captioned: int = 2000
    image_size: int = 128
    vae_steps: int = 1500
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_crop: int = 64
    dit_steps: int = 6000
    seg_batch: int = 32
    gen_batch: int = 16
    dit_lr: float = 1e-3
    warmup_steps: int = 150
    shift_a: float = 0.05
    cfg_dropout: float = 0.1
    probe_steps: int = 3000
    probe_lr: float = 3e-2
    checkpoint_every: int = 250
    threads: int = 0  # 0: leave torch's default

    @classmethod
    def tiny(cls) -> "DemoTrainingConfig":
        """Seconds-long settings for tests (tiny model, few scenes, few steps)."""
        return cls(preset="tiny", n_scenes=24, n_captioned=12, image_size=32, vae_steps=3, vae_batch=4, vae_crop=16,
                   dit_steps=30, seg_batch=8, gen_batch=4, warmup_steps=2, probe_steps=5, checkpoint_every=10)


# ---------------------------------------------------------------------------------- stage: data
def build_data(cfg: DemoTrainingConfig) -> dict:
    """Scenes -> tensors: images (S,3,H,W) in [-1,1], masks (N,H,W) bool, per-expression scene
    index, text and kind; captioned images (G,3,H,W) and captions."""
    dataset = ReferringDataset(cfg.seed, cfg.n_scenes, cfg.image_size)
    images, masks, scene_of, texts, kinds = [], [], [], [], []
    for s, scene in enumerate(tqdm(dataset, desc="scenes", total=len(dataset))):
        images.append(scene.image)
        for expression in scene.expressions:
            masks.append(expression.mask)
            scene_of.append(s)
            texts.append(expression.text)
            kinds.append(expression.kind)
    captioned = [generate_captioned_image(cfg.seed + 1, i, cfg.image_size) for i in range(cfg.n_captioned)]
    return {
        "images": _to_pixels(np.stack(images)),
        "masks": torch.from_numpy(np.stack(masks)),
        "scene_of": torch.tensor(scene_of),
        "texts": texts,
        "kinds": kinds,
        "caption_images": _to_pixels(np.stack([c.image for c in captioned])),
        "captions": [c.caption for c in captioned],
    }


def _to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


# --------------------------------------------------------------------------------- stage: cache
def build_cache(model: GenMaskModel, embedder: MiniLMEmbedder, data: dict) -> dict:
    """Normalised latents of everything and padded text states (frozen VAE and embedder)."""
    vae = model.vae
    mean, std = (torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1),
                 torch.tensor(vae.config.latents_std).view(1, -1, 1, 1))
    normalise = lambda z: (z - mean) / std  # noqa: E731
    texts = sorted(set(data["texts"]) | set(data["captions"]))
    index = {t: i for i, t in enumerate(texts)}
    states, lengths = _padded_states(embedder, texts)
    null = embedder.null_states()
    return {
        "z_images": normalise(encode_all(vae, data["images"], desc="encode images")),
        "z_masks": normalise(encode_all(vae, mask_to_pixels(data["masks"]), desc="encode masks")),
        "z_captioned": normalise(encode_all(vae, data["caption_images"], desc="encode captioned")),
        "scene_of": data["scene_of"],
        "text_of": torch.tensor([index[t] for t in data["texts"]]),
        "caption_of": torch.tensor([index[t] for t in data["captions"]]),
        "states": states,
        "lengths": lengths,
        "null_states": null,
    }


def _padded_states(embedder: MiniLMEmbedder, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [embedder(None, [t]).states[0] for t in tqdm(texts, desc="embed texts")]
    length = max(r.shape[0] for r in rows)
    states = torch.zeros(len(rows), length, embedder.hidden_size)
    for i, row in enumerate(rows):
        states[i, : row.shape[0]] = row
    return states, torch.tensor([r.shape[0] for r in rows])


def _context(cache: dict, text_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = cache["lengths"][text_index]
    width = int(lengths.max())
    states = cache["states"][text_index, :width]
    mask = torch.arange(width)[None] < lengths[:, None]
    return states, mask


def with_cfg_dropout(states, mask, null, drop):
    """Replace rows where ``drop`` is True by the empty instruction's states."""
    if not bool(drop.any()):
        return states, mask
    width = max(states.shape[1], null.shape[0])
    padded = torch.zeros(states.shape[0], width, states.shape[2])
    padded[:, : states.shape[1]] = states
    new_mask = torch.zeros(states.shape[0], width, dtype=torch.bool)
    new_mask[:, : mask.shape[1]] = mask
    padded[drop] = 0.0
    padded[drop, : null.shape[0]] = null
    new_mask[drop] = False
    new_mask[drop, : null.shape[0]] = True
    return padded, new_mask


# ----------------------------------------------------------------------------------- stage: dit
def segmentation_loss(model, cache, batch, cfg, generator) -> torch.Tensor:
    """Flow matching on the mask frame; the image latent is a clean frame 0 with t = 0."""
    pick = torch.randint(0, cache["z_masks"].shape[0], (batch,), generator=generator)
    x0 = cache["z_masks"][pick]
    z_img = cache["z_images"][cache["scene_of"][pick]]
    t = segmentation_timesteps(batch, a=cfg.shift_a, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    x_t = add_noise(x0, noise, t)
    states, mask = _context(cache, cache["text_of"][pick])
    frame_t = torch.stack([torch.zeros_like(t), 1000.0 * t], dim=1)
    velocity = wan_velocity(model.transformer, torch.stack([z_img, x_t], dim=2), frame_t, states, mask)[:, :, 1]
    return flow_matching_loss(velocity, x0, noise)


def generation_loss(model, cache, batch, cfg, generator) -> torch.Tensor:
    """Text-to-image flow matching on single-frame captioned images, with CFG dropout."""
    pick = torch.randint(0, cache["z_captioned"].shape[0], (batch,), generator=generator)
    x0 = cache["z_captioned"][pick]
    t = generation_timesteps(batch, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    states, mask = _context(cache, cache["caption_of"][pick])
    drop = torch.rand(batch, generator=generator) < cfg.cfg_dropout
    states, mask = with_cfg_dropout(states, mask, cache["null_states"], drop)
    velocity = wan_velocity(model.transformer, add_noise(x0, noise, t)[:, :, None], 1000.0 * t[:, None], states, mask)
    return flow_matching_loss(velocity[:, :, 0], x0, noise)


def train_dit(model: GenMaskModel, cache: dict, cfg: DemoTrainingConfig, work: Path) -> list[dict]:
    """The DiT stage; checkpoints every ``checkpoint_every`` steps to ``work/dit_state.pt``."""
    transformer = model.transformer.train()
    optimiser = torch.optim.AdamW(transformer.parameters(), lr=cfg.dit_lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _lr_factor(s, cfg))
    generator = torch.Generator().manual_seed(cfg.seed + 7)
    log, start = [], 0
    state_file = work / "dit_state.pt"
    if state_file.exists():
        state = torch.load(state_file, weights_only=True)  # tensors and plain data only
        transformer.load_state_dict(state["transformer"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        log, start = state["log"], state["step"]
        print(f"resuming the DiT stage at step {start}/{cfg.dit_steps}")
    bar = tqdm(range(start, cfg.dit_steps), desc="dit", initial=start, total=cfg.dit_steps)
    for step in bar:
        seg = segmentation_loss(model, cache, cfg.seg_batch, cfg, generator)
        gen = generation_loss(model, cache, cfg.gen_batch, cfg, generator)
        optimiser.zero_grad()
        (seg + gen).backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        log.append({"step": step + 1, "seg": float(seg), "gen": float(gen)})
        bar.set_postfix(seg=f"{_recent(log, 'seg'):.4f}", gen=f"{_recent(log, 'gen'):.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.dit_steps:
            with atomic_path(state_file) as tmp:
                torch.save(plain({"transformer": transformer.state_dict(), "optimiser": optimiser.state_dict(),
                                  "schedule": schedule.state_dict(), "generator": generator.get_state(),
                                  "log": log, "step": step + 1}), tmp)
    transformer.eval()
    model.invalidate()
    return log


def _lr_factor(step: int, cfg: DemoTrainingConfig) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.dit_steps - cfg.warmup_steps)
    return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))


def _recent(log: list[dict], key: str, n: int = 50) -> float:
    return float(np.mean([entry[key] for entry in log[-n:]]))


# ----------------------------------------------------------------------------------- orchestration
def run(cfg: DemoTrainingConfig, out: Path, work: Path) -> Path:
    """Run (or resume) every stage and write the checkpoint to ``out``; returns ``out``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work.mkdir(parents=True, exist_ok=True)
    _check_same_run(cfg, work)
    started = time.time()
    torch.manual_seed(cfg.seed)
    config = GenMaskConfig.preset(cfg.preset, embedder="minilm", resolution=cfg.image_size,
                                  name=f"{cfg.preset}-procedural-seed{cfg.seed}")
    model = GenMaskModel.from_config(config)
    embedder = MiniLMEmbedder.from_pretrained(EMBEDDERS["minilm"].name_or_path)
    data = _stage(work / "data.pt", lambda: build_data(cfg))
    vae_state = _stage(work / "vae.pt", lambda: _train_vae_stage(model, data, cfg))
    model.vae.load_state_dict(vae_state["weights"])
    vae_mse = vae_state["reconstruction_mse"]
    model.vae.register_to_config(**vae_state["stats"])
    cache = _stage(work / "cache.pt", lambda: build_cache(model, embedder, data))
    log = train_dit(model, cache, cfg, work)
    probe_losses = fit_linear_probe(model.mask_head, cache["z_masks"], data["masks"], steps=cfg.probe_steps,
                                    lr=cfg.probe_lr, seed=cfg.seed)
    model.save_pretrained(out)
    summary = {
        "training_config": dataclasses.asdict(cfg),
        "minutes": round(_add_elapsed(work, time.time() - started) / 60, 2),
        "threads": torch.get_num_threads(),
        "expressions": int(data["masks"].shape[0]),
        "vae_reconstruction_mse": vae_mse,
        "final_seg_loss": _recent(log, "seg"),
        "final_gen_loss": _recent(log, "gen"),
        "final_probe_loss": float(np.mean(probe_losses[-20:])),
    }
    atomic_write_text(out / "training_summary.json", json.dumps(summary, indent=2))
    atomic_write_text(work / "dit_log.json", json.dumps(log))
    print(json.dumps(summary, indent=2))
    return out


def _add_elapsed(work: Path, seconds: float) -> float:
    """Add this invocation's wall time to ``work/elapsed.json``; returns the total over every
    invocation on ``work`` (so a resumed run reports all the compute its checkpoint cost)."""
    marker = work / "elapsed.json"
    before = json.loads(marker.read_text())["seconds"] if marker.exists() else 0.0
    atomic_write_text(marker, json.dumps({"seconds": before + seconds}))
    return before + seconds


def _train_vae_stage(model: GenMaskModel, data: dict, cfg: DemoTrainingConfig) -> dict:
    n_images = data["images"].shape[0]
    n_held_out = min(32, max(1, n_images // 8))  # images kept out of VAE training, to report its error
    held_out = data["images"][-n_held_out:]
    n_masks = n_images // 4  # masks are easy: a quarter as many as images
    pixels = torch.cat([data["images"][:-n_held_out], mask_to_pixels(data["masks"][:n_masks])])
    torch.manual_seed(cfg.seed + 1)
    train_vae(model.vae, pixels, cfg.vae_steps, cfg.vae_batch, cfg.vae_lr, cfg.vae_crop, seed=cfg.seed)
    error = reconstruction_error(model.vae, held_out)
    print(f"VAE reconstruction MSE on {n_held_out} held-out images: {error:.4f} (pixels in [-1, 1])")
    set_latent_stats(model.vae, encode_all(model.vae, data["images"][:512], desc="latent stats"))
    return {"weights": model.vae.state_dict(), "reconstruction_mse": error,
            "stats": {"latents_mean": model.vae.config.latents_mean, "latents_std": model.vae.config.latents_std}}


def _stage(path: Path, compute):
    """Load a finished stage's result from ``path`` or compute and save it atomically."""
    if path.exists():
        print(f"reusing {path.name}")
        return torch.load(path, weights_only=True)  # tensors and plain data only
    result = plain(compute())
    with atomic_path(path) as tmp:
        torch.save(result, tmp)
    return result


def plain(value):
    """``value`` with numpy scalars and arrays turned into Python numbers and tensors, so that
    ``torch.load(..., weights_only=True)`` reads it back (no pickled classes in our files)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


def _check_same_run(cfg: DemoTrainingConfig, work: Path) -> None:
    """Refuse to resume a work directory that was started with different settings."""
    marker = work / "training_config.json"
    text = json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)
    if marker.exists() and marker.read_text() != text:
        raise SystemExit(f"{work} holds a run with other settings; pass a fresh --work directory "
                         "or delete it to start over.")
    atomic_write_text(marker, text)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genmask_sdk.train.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo/checkpoint"), help="checkpoint directory to write")
    parser.add_argument("--work", type=Path, default=Path("runs/demo/work"),
                        help="stage outputs; re-running with the same --work resumes")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and sampling")
    parser.add_argument("--dit-steps", type=int, default=None, help="DiT optimisation steps (default 6000)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run on the tiny preset")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = DemoTrainingConfig.tiny() if args.tiny else DemoTrainingConfig()
    overrides = {"seed": args.seed, "threads": args.threads}
    if args.dit_steps is not None:
        overrides["dit_steps"] = args.dit_steps
    run(dataclasses.replace(cfg, **overrides), args.out, args.work)


if __name__ == "__main__":
    main()
