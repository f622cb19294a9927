"""Loading gen2seg models of either variant: ``load_gen2seg`` (detected from the files),
``load_sd``, ``load_mae``; sources and layouts in ``sources.py``, each variant's reading and
writing in ``sd.py`` / ``mae.py``. The weights are read by diffusers' / transformers' own
``from_pretrained`` (fp32).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from genmask_sdk.families.gen2seg.modeling.mae import Gen2SegMAE, _load_mae, save_mae  # noqa: F401  (re-exported)
from genmask_sdk.families.gen2seg.modeling.sd import Gen2SegSD, _load_sd, save_sd  # noqa: F401  (re-exported)
from genmask_sdk.families.gen2seg.modeling.sources import (  # noqa: F401  (re-exported)
    KNOWN_HUB_IDS,
    Source,
    _expect,
    checkpoint_prompt_defaults,
    detect_variant,
    resolve_source,
)


def load_gen2seg(name_or_path: str | os.PathLike, local_files_only: bool = False,
                 device: str | torch.device = "cpu", **overrides: Any) -> Gen2SegSD | Gen2SegMAE:
    """Load a gen2seg model of either variant (detected from the files)."""
    source = resolve_source(name_or_path, local_files_only)
    if detect_variant(source) == "sd":
        return _load_sd(source, device, overrides)
    return _load_mae(source, device, overrides)


def load_sd(name_or_path: str | os.PathLike, local_files_only: bool = False,
            device: str | torch.device = "cpu", **overrides: Any) -> Gen2SegSD:
    """Load gen2seg-sd; raises ``ArtifactMismatchError`` if the source is an MAE checkpoint."""
    source = resolve_source(name_or_path, local_files_only)
    _expect(source, "sd")
    return _load_sd(source, device, overrides)


def load_mae(name_or_path: str | os.PathLike, local_files_only: bool = False,
             device: str | torch.device = "cpu", **overrides: Any) -> Gen2SegMAE:
    """Load gen2seg-mae; raises ``ArtifactMismatchError`` if the source is an SD checkpoint."""
    source = resolve_source(name_or_path, local_files_only)
    _expect(source, "mae")
    return _load_mae(source, device, overrides)
