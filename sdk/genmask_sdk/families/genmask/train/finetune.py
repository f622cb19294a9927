"""Fine-tune GenMask's DiT on a cached prepared set with 🤗 accelerate (DESIGN.md §2, §8).

    accelerate launch [--num_processes N] -m genmask_sdk.families.genmask.train.finetune --data DIR [DIR ...] --preset NAME \\
        --max-steps N --out CKPT [--eval-data DIR2] [--gradient-checkpointing]

Reads only ``DIR/cache`` of each prepared set (``python -m genmask_sdk.families.genmask.train.cache`` makes it; several
sets, e.g. RefCOCO + COCO-Stuff + captions, are read as one): neither the VLM nor the VAE is loaded.
The recipe: flow matching in latent space; every optimizer step sees ``--global-batch`` samples,
segmentation and generation 1:1; segmentation timesteps from the shifted sampler (a = 0.05),
generation timesteps logit-normal, CFG dropout for generation only; the image latent is a clean first
frame at t = 0 (the VAE shortcut); AdamW, cosine LR 5e-5 → 1e-5. DDP, FSDP, bf16 and the number of
processes come from ``accelerate config`` / ``accelerate launch`` (docs/training.md).

Writes into ``CKPT``: ``training_log.jsonl`` (per logged step: step, loss_seg, loss_gen, lr,
world_size, samples_per_s, ...; eval_miou / eval_oiou when evaluated), ``finetune_config.json``, the
resumable training state (``.training_state/``, every ``--checkpoint-every`` steps) and, at the end, the
standard checkpoint (``genmask_config.json``, ``transformer/``, ``vae/``, ``mask_head.safetensors``) that
``build_engines`` and ``Segmenter.from_pretrained`` take unchanged. Re-running the same command resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from genmask_sdk.families.genmask.train.finetune_config import FinetuneConfig, add_arguments, config_from_args


def train(cfg: FinetuneConfig, data: Sequence[Path], out: Path, eval_data: Path | None = None) -> Path:
    """Run (or resume) the fine-tuning on the cached prepared sets ``data``; every process of the
    launch calls it. Returns ``out``."""
    from tqdm.auto import tqdm

    from genmask_sdk.families.genmask.train.finetune_run import after_step, finish, optimizer_step, start
    from genmask_sdk.families.genmask.train.finetune_state import Window

    run = start(cfg, data, Path(out), eval_data)
    accelerator = run.accelerator
    accelerator.print(f"{'resuming from step ' + str(run.step) if run.step else 'starting'}: "
                      f"{accelerator.num_processes} process(es), {run.accumulation} micro-step(s) of 2 x "
                      f"{cfg.micro_batch} samples per process per step, target step {cfg.max_steps}")
    window = Window()
    bar = tqdm(total=cfg.max_steps, initial=run.step, desc="finetune", disable=not (cfg.progress and run.main))
    while run.step < cfg.max_steps:
        lr = optimizer_step(run, window)
        entry = after_step(run, window, lr)
        bar.update(1)
        if entry is not None:
            bar.set_postfix(seg=f"{entry['loss_seg']:.4f}", gen=f"{entry['loss_gen']:.4f}", lr=f"{lr:.2e}")
    bar.close()
    finish(run)
    accelerator.end_training()
    return Path(out)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="accelerate launch -m genmask_sdk.families.genmask.train.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", required=True,
                        help="prepared dataset(s), each with its cache (train.cache); several are read as one")
    parser.add_argument("--out", type=Path, required=True, help="run + checkpoint directory (re-run to resume)")
    parser.add_argument("--eval-data", type=Path, default=None, help="held-out prepared dataset with its cache")
    add_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    return train(config_from_args(args), args.data, args.out, args.eval_data)


if __name__ == "__main__":
    main()
