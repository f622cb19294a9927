"""Where a gen2seg checkpoint lives: ``"demo-gen2seg"`` (shipped in the package), a local directory or
a hub id (``modeling/loading.py`` resolves those). Torch-free."""

from __future__ import annotations

from pathlib import Path


def demo_gen2seg_dir() -> Path:
    """Directory of the gen2seg demo checkpoint (``"demo-gen2seg"``) shipped inside the package."""
    return Path(__file__).resolve().parents[2] / "assets" / "demo_gen2seg"
