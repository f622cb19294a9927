"""Train the demo checkpoint on procedural scenes: ``python -m genmask_sdk.families.genmask.train.demo``.

Stages (each saved under ``--work``, so an interrupted run resumes where it stopped):

1. data      procedural scenes (referring expressions + masks, ~10 % of them absent targets with
             empty masks) and captioned images, at each phase's image size (256 and 128 px);
2. vae       a small ``AutoencoderKLWan`` reconstructing scene and mask images; μ/σ measured;
3. cache     MiniLM states of every text; VAE latents of images, masks and captioned images;
4. dit       the paper's recipe: flow matching in latent space, segmentation samples with the
             shifted sampler (a = 0.05) mixed 1:1 with generation samples (logit-normal t,
             10 % CFG dropout — generation only); VAE and embedder frozen. Two phases of one
             cosine schedule: 128 px renders first (cheap steps: which object), then 256 px
             (the engine resolution: 8 px latent cells are fine enough for small objects);
5. probe     the linear-probe mask head, BCE on latents of ground-truth masks (256 px);
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

from genmask_sdk.families.genmask.config import EMBEDDERS, GenMaskConfig
from genmask_sdk.data import ABSENT_KIND, ReferringDataset, generate_captioned_image
from genmask_sdk.families.genmask.modeling.embedders.minilm import MiniLMEmbedder
from genmask_sdk.io import atomic_path, atomic_write_text
from genmask_sdk.families.genmask.modeling import GenMaskModel
from genmask_sdk.families.genmask.modeling.wan_forward import wan_velocity
from genmask_sdk.families.genmask.train.losses import add_noise, flow_matching_loss
from genmask_sdk.families.genmask.train.probe import fit_linear_probe, mask_to_pixels
from genmask_sdk.families.genmask.train.timesteps import generation_timesteps, segmentation_timesteps
from genmask_sdk.families.genmask.train.vae_fit import (
    encode_all,
    random_crops,
    reconstruction_error,
    set_latent_stats,
    train_vae,
)


@dataclass(frozen=True)
class DemoTrainingConfig:
    """Every knob of the demo run (saved as ``training_config.json`` next to the checkpoint).

    The DiT trains in two phases of one schedule: ``low_res_steps`` on ``low_res_size`` renders
    (4x fewer tokens: cheap steps that learn *which* object), then the rest of ``dit_steps`` on
    ``image_size`` renders (the engine resolution: fine masks). ``low_res_size = 0`` skips the
    first phase. Scenes of both phases come from the same seed (scene i is the same layout at
    both sizes); the VAE is fully convolutional and the DiT's RoPE has no fixed grid, so one
    model serves both sizes.
    """

    preset: str = "demo"
    seed: int = 0
    n_scenes: int = 3000
    n_captioned: int = 750
    image_size: int = 256
    low_res_size: int = 128
    low_res_scenes: int = 6000
    low_res_captioned: int = 2000
    low_res_steps: int = 4000
    low_res_seg_batch: int = 32
    low_res_gen_batch: int = 16
    vae_steps: int = 1500
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_crop: int = 64
    dit_steps: int = 6100
    seg_batch: int = 16
    gen_batch: int = 8
    dit_lr: float = 1e-3
    warmup_steps: int = 150
    shift_a: float = 0.05
    cfg_dropout: float = 0.1
    probe_steps: int = 3000
    probe_lr: float = 3e-2
    checkpoint_every: int = 100
    threads: int = 0  # 0: leave torch's default

    @classmethod
    def tiny(cls) -> "DemoTrainingConfig":
        """Seconds-long settings for tests (tiny model, few scenes, few steps, both phases)."""
        return cls(preset="tiny", n_scenes=12, n_captioned=6, image_size=64, low_res_size=32, low_res_scenes=24,
                   low_res_captioned=12, low_res_steps=20, low_res_seg_batch=8, low_res_gen_batch=4, vae_steps=3,
                   vae_batch=4, vae_crop=16, dit_steps=30, seg_batch=4, gen_batch=2, warmup_steps=2, probe_steps=5,
                   checkpoint_every=10)

    def phase_sizes(self) -> tuple[int, ...]:
        """Image sizes of the DiT phases, in training order."""
        return (self.low_res_size, self.image_size) if self.low_res_size else (self.image_size,)

    def phase_of(self, step: int) -> dict:
        """Size and batches of DiT step ``step`` (0-based)."""
        if self.low_res_size and step < self.low_res_steps:
            return {"size": self.low_res_size, "seg_batch": self.low_res_seg_batch, "gen_batch": self.low_res_gen_batch}
        return {"size": self.image_size, "seg_batch": self.seg_batch, "gen_batch": self.gen_batch}

    def counts_at(self, size: int) -> tuple[int, int]:
        """(scenes, captioned images) rendered at ``size``."""
        if size == self.image_size:
            return self.n_scenes, self.n_captioned
        return self.low_res_scenes, self.low_res_captioned


# ---------------------------------------------------------------------------------- stage: data
def build_data(cfg: DemoTrainingConfig, size: int) -> dict:
    """Scenes at ``size`` -> tensors: images (S,H,W,3) uint8, masks (N,H,W) bool (absent
    targets: all False), per-expression scene index, text and kind; captioned images (G,H,W,3)
    uint8 and captions."""
    n_scenes, n_captioned = cfg.counts_at(size)
    dataset = ReferringDataset(cfg.seed, n_scenes, size)
    images, masks, scene_of, texts, kinds = [], [], [], [], []
    for s, scene in enumerate(tqdm(dataset, desc=f"scenes {size}px", total=len(dataset))):
        images.append(scene.image)
        for expression in scene.expressions:
            masks.append(expression.mask)
            scene_of.append(s)
            texts.append(expression.text)
            kinds.append(expression.kind)
    captioned = [generate_captioned_image(cfg.seed + 1, i, size) for i in range(n_captioned)]
    return {
        "images": torch.from_numpy(np.stack(images)),
        "masks": torch.from_numpy(np.stack(masks)),
        "scene_of": torch.tensor(scene_of),
        "texts": texts,
        "kinds": kinds,
        "caption_images": torch.from_numpy(np.stack([c.image for c in captioned])),
        "captions": [c.caption for c in captioned],
    }


def _to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def encode_in_chunks(vae, items: torch.Tensor, to_pixels, desc: str, chunk: int = 256) -> torch.Tensor:
    """Posterior means of ``to_pixels(items[i:i+chunk])`` for every chunk (so the float pixels of
    thousands of images never sit in memory at once) -> (N, 16, h, w) un-normalised."""
    parts = [encode_all(vae, to_pixels(items[i: i + chunk]), progress=False)
             for i in tqdm(range(0, items.shape[0], chunk), desc=desc)]
    return torch.cat(parts)


# --------------------------------------------------------------------------------- stage: cache
def build_text_cache(embedder: MiniLMEmbedder, datasets: list[dict]) -> dict:
    """Padded MiniLM states of every expression and caption of ``datasets`` (frozen embedder):
    ``texts`` (sorted), ``states`` (T, L, 384), ``lengths`` (T,), ``null_states``."""
    texts = sorted({t for data in datasets for t in data["texts"] + data["captions"]})
    states, lengths = _padded_states(embedder, texts)
    return {"texts": texts, "states": states, "lengths": lengths, "null_states": embedder.null_states()}


def build_cache(model: GenMaskModel, text_cache: dict, data: dict) -> dict:
    """Normalised latents of one size's images, masks and captioned images, and the index of
    each expression's and caption's text in ``text_cache``."""
    vae = model.vae
    mean, std = (torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1),
                 torch.tensor(vae.config.latents_std).view(1, -1, 1, 1))
    normalise = lambda z: (z - mean) / std  # noqa: E731
    index = {t: i for i, t in enumerate(text_cache["texts"])}
    return {
        "z_images": normalise(encode_in_chunks(vae, data["images"], _to_pixels, "encode images")),
        "z_masks": normalise(encode_in_chunks(vae, data["masks"], mask_to_pixels, "encode masks")),
        "z_captioned": normalise(encode_in_chunks(vae, data["caption_images"], _to_pixels, "encode captioned")),
        "scene_of": data["scene_of"],
        "text_of": torch.tensor([index[t] for t in data["texts"]]),
        "caption_of": torch.tensor([index[t] for t in data["captions"]]),
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


def train_dit(model: GenMaskModel, caches: dict[int, dict], cfg: DemoTrainingConfig, work: Path,
              on_checkpoint=lambda: None) -> list[dict]:
    """The DiT stage over ``caches`` (image size -> latent cache merged with the text cache), in
    the phases of ``cfg.phase_of``; checkpoints every ``checkpoint_every`` steps to
    ``work/dit_state.pt`` and calls ``on_checkpoint()`` after each save."""
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
        phase = cfg.phase_of(step)
        cache = caches[phase["size"]]
        seg = segmentation_loss(model, cache, phase["seg_batch"], cfg, generator)
        gen = generation_loss(model, cache, phase["gen_batch"], cfg, generator)
        optimiser.zero_grad()
        (seg + gen).backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        log.append({"step": step + 1, "size": phase["size"], "seg": float(seg), "gen": float(gen)})
        bar.set_postfix(px=phase["size"], seg=f"{_recent(log, 'seg'):.4f}", gen=f"{_recent(log, 'gen'):.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.dit_steps:
            with atomic_path(state_file) as tmp:
                torch.save(plain({"transformer": transformer.state_dict(), "optimiser": optimiser.state_dict(),
                                  "schedule": schedule.state_dict(), "generator": generator.get_state(),
                                  "log": log, "step": step + 1}), tmp)
            on_checkpoint()
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
    """Run (or resume) every stage and write the checkpoint to ``out``; returns ``out``.

    Wall time is added to ``work/elapsed.json`` after every stage and DiT checkpoint, so a run
    interrupted and resumed (even across machines' sessions) reports all the compute it cost."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work.mkdir(parents=True, exist_ok=True)
    _check_same_run(cfg, work)
    clock = _WallClock(work)
    torch.manual_seed(cfg.seed)
    config = GenMaskConfig.preset(cfg.preset, embedder="minilm", resolution=cfg.image_size,
                                  name=f"{cfg.preset}-procedural-seed{cfg.seed}")
    model = GenMaskModel.from_config(config)
    embedder = MiniLMEmbedder.from_pretrained(EMBEDDERS["minilm"].name_or_path)
    datas = {size: _stage(work / f"data_{size}.pt", lambda size=size: build_data(cfg, size), clock)
             for size in cfg.phase_sizes()}
    vae_state = _stage(work / "vae.pt", lambda: _train_vae_stage(model, datas, cfg), clock)
    model.vae.load_state_dict(vae_state["weights"])
    vae_mse = vae_state["reconstruction_mse"]
    model.vae.register_to_config(**vae_state["stats"])
    text_cache = _stage(work / "texts.pt", lambda: build_text_cache(embedder, list(datas.values())), clock)
    caches = {size: {**_stage(work / f"cache_{size}.pt", lambda size=size: build_cache(model, text_cache, datas[size]),
                              clock), **text_cache} for size in cfg.phase_sizes()}
    log = train_dit(model, caches, cfg, work, on_checkpoint=clock.add)
    final = caches[cfg.image_size]
    probe_losses = fit_linear_probe(model.mask_head, final["z_masks"], datas[cfg.image_size]["masks"],
                                    steps=cfg.probe_steps, lr=cfg.probe_lr, seed=cfg.seed)
    model.save_pretrained(out)
    clock.add()
    summary = {
        "training_config": dataclasses.asdict(cfg),
        "minutes": round(clock.total() / 60, 2),
        "stage_minutes": {k: round(v / 60, 2) for k, v in clock.stages().items()},
        "threads": torch.get_num_threads(),
        "expressions": {str(size): int(datas[size]["masks"].shape[0]) for size in cfg.phase_sizes()},
        "absent_expressions": {str(size): sum(k == ABSENT_KIND for k in datas[size]["kinds"])
                               for size in cfg.phase_sizes()},
        "vae_reconstruction_mse": vae_mse,
        "final_seg_loss": _recent(log, "seg"),
        "final_gen_loss": _recent(log, "gen"),
        "final_probe_loss": float(np.mean(probe_losses[-20:])),
    }
    atomic_write_text(out / "training_summary.json", json.dumps(summary, indent=2))
    atomic_write_text(work / "dit_log.json", json.dumps(log))
    print(json.dumps(summary, indent=2))
    return out


class _WallClock:
    """Adds wall time to ``work/elapsed.json`` (total and per stage) each time ``add`` is called,
    so every invocation on ``work`` contributes the time it ran, even when it is interrupted."""

    def __init__(self, work: Path):
        self.marker = work / "elapsed.json"
        self.last = time.time()

    def _read(self) -> dict:
        return json.loads(self.marker.read_text()) if self.marker.exists() else {"seconds": 0.0, "stages": {}}

    def add(self, stage: str = "dit") -> None:
        now = time.time()
        data = self._read()
        data["seconds"] = data.get("seconds", 0.0) + now - self.last
        data.setdefault("stages", {})[stage] = data["stages"].get(stage, 0.0) + now - self.last
        atomic_write_text(self.marker, json.dumps(data))
        self.last = now

    def total(self) -> float:
        return self._read()["seconds"]

    def stages(self) -> dict:
        return self._read().get("stages", {})


def _train_vae_stage(model: GenMaskModel, datas: dict[int, dict], cfg: DemoTrainingConfig) -> dict:
    """Fit the VAE on scene images of every phase size and a quarter as many mask images; images
    larger than the smallest size are cut to it (random crops), so one tensor holds them all."""
    smallest = min(datas)
    generator = torch.Generator().manual_seed(cfg.seed + 2)
    images, masks = [], []
    for size, data in sorted(datas.items()):
        images.append(random_crops(_to_pixels(data["images"]), smallest, generator))
        n_masks = data["images"].shape[0] // 4  # masks are easy: a quarter as many as images
        masks.append(random_crops(mask_to_pixels(data["masks"][:n_masks]), smallest, generator))
    n_held_out = min(32, max(1, datas[cfg.image_size]["images"].shape[0] // 8))
    # the last final-size images are kept out of VAE training to report its error (their low-res
    # renders of the same layouts are not: the error is on unseen pixels, not unseen layouts)
    final = _to_pixels(datas[cfg.image_size]["images"][-n_held_out:])
    images[-1] = images[-1][:-n_held_out]  # the largest size, cfg.image_size, sorts last
    pixels = torch.cat(images + masks)
    torch.manual_seed(cfg.seed + 1)
    train_vae(model.vae, pixels, cfg.vae_steps, cfg.vae_batch, cfg.vae_lr, cfg.vae_crop, seed=cfg.seed)
    error = reconstruction_error(model.vae, final)
    print(f"VAE reconstruction MSE on {n_held_out} held-out {cfg.image_size}px images: {error:.4f} (pixels in [-1, 1])")
    stats_images = _to_pixels(datas[cfg.image_size]["images"][:256])
    set_latent_stats(model.vae, encode_all(model.vae, stats_images, desc="latent stats"))
    return {"weights": model.vae.state_dict(), "reconstruction_mse": error,
            "stats": {"latents_mean": model.vae.config.latents_mean, "latents_std": model.vae.config.latents_std}}


def _stage(path: Path, compute, clock: "_WallClock | None" = None):
    """Load a finished stage's result from ``path`` or compute and save it atomically (adding
    its wall time to ``clock`` under the file's name)."""
    if path.exists():
        print(f"reusing {path.name}")
        return torch.load(path, weights_only=True)  # tensors and plain data only
    result = plain(compute())
    with atomic_path(path) as tmp:
        torch.save(result, tmp)
    if clock is not None:
        clock.add(path.stem)
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


#: Settings only the DiT and later stages read: they may change until the DiT stage has started.
LATE_FIELDS = frozenset({"dit_steps", "low_res_steps", "seg_batch", "gen_batch", "low_res_seg_batch",
                         "low_res_gen_batch", "dit_lr", "warmup_steps", "shift_a", "cfg_dropout", "probe_steps",
                         "probe_lr", "checkpoint_every", "threads"})


def _check_same_run(cfg: DemoTrainingConfig, work: Path) -> None:
    """Refuse to resume a work directory that was started with different settings (DiT settings
    may still change while no DiT checkpoint exists: the earlier stages do not read them)."""
    marker = work / "training_config.json"
    text = json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)
    if marker.exists() and marker.read_text() != text:
        before = json.loads(marker.read_text())
        changed = {k for k, v in dataclasses.asdict(cfg).items() if before.get(k) != v}
        if not changed <= LATE_FIELDS or (work / "dit_state.pt").exists():
            raise SystemExit(f"{work} holds a run with other settings ({', '.join(sorted(changed))}); pass a fresh "
                             "--work directory or delete it to start over.")
        print(f"DiT settings changed before the DiT stage started: {', '.join(sorted(changed))}")
    atomic_write_text(marker, text)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m genmask_sdk.families.genmask.train.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/demo/checkpoint"), help="checkpoint directory to write")
    parser.add_argument("--work", type=Path, default=Path("runs/demo/work"),
                        help="stage outputs; re-running with the same --work resumes")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and sampling")
    parser.add_argument("--dit-steps", type=int, default=None, help="DiT optimisation steps, both phases (default 6100)")
    parser.add_argument("--low-res-steps", type=int, default=None, help="steps of the low-resolution phase (default 4000)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help="seconds-long smoke run on the tiny preset")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = DemoTrainingConfig.tiny() if args.tiny else DemoTrainingConfig()
    overrides = {"seed": args.seed, "threads": args.threads}
    if args.dit_steps is not None:
        overrides["dit_steps"] = args.dit_steps
    if args.low_res_steps is not None:
        overrides["low_res_steps"] = args.low_res_steps
    run(dataclasses.replace(cfg, **overrides), args.out, args.work)


if __name__ == "__main__":
    main()
