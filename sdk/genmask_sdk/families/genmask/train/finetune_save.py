"""The final checkpoint of a fine-tuning run, in the standard format (``GenMaskModel.save_pretrained``).

It is written into ``--out`` beside the run's own files (``training_log.jsonl``, ``finetune_config.json``,
the hidden training state), entry by entry, ``genmask_config.json`` last: a directory with a config is
always a complete checkpoint, and ``build_engines`` / ``Segmenter.from_pretrained`` take it unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from genmask_sdk.families.genmask.config import CONFIG_NAME, GenMaskConfig
from genmask_sdk.families.genmask.modeling import GenMaskModel
from genmask_sdk.families.genmask.modeling.model import MASK_HEAD_FILE
from genmask_sdk.families.genmask.modeling.mask_head import LinearProbeHead
from genmask_sdk.families.genmask.train.finetune_model import architecture, transformer_state

ENTRIES = ("transformer", "vae", MASK_HEAD_FILE)


def final_model(config: GenMaskConfig, training_state: dict[str, torch.Tensor], vae_dir: Path,
                probe: LinearProbeHead) -> GenMaskModel:
    """A ``GenMaskModel`` of the trained DiT (``TrainingDiT`` state dict, float32), the cached
    frozen VAE and the fitted probe; its config's ``vae`` section is the VAE's own."""
    transformer = WanTransformer3DModel(**config.transformer)
    transformer.load_state_dict(transformer_state({k: v.float().cpu() for k, v in training_state.items()}))
    vae = AutoencoderKLWan.from_pretrained(vae_dir)
    return GenMaskModel(config.replace(vae=architecture(vae)), transformer, vae, probe).eval()


def install_checkpoint(model: GenMaskModel, out: Path) -> Path:
    """Write ``model`` as a standard checkpoint into ``out``, keeping the other files there."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=out))
    try:
        staged = model.save_pretrained(staging / "checkpoint")
        (out / CONFIG_NAME).unlink(missing_ok=True)  # not a checkpoint while its parts change
        for name in ENTRIES:
            _replace(staged / name, out / name, staging)
        os.replace(staged / CONFIG_NAME, out / CONFIG_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _replace(source: Path, target: Path, trash: Path) -> None:
    if target.exists():
        os.replace(target, trash / f"old-{target.name}")
    os.replace(source, target)
