"""Where a checkpoint lives: ``"demo"`` (shipped in the package), a local directory, or a hub id.

Torch-free, so that the engine builder can decide that a rebuild has nothing to do without
importing torch (``genmask_sdk.families.genmask.export.uptodate``). ``genmask_sdk.families.genmask.modeling.model`` re-exports these.
(gen2seg's demo lives in ``families/gen2seg/checkpoints.py``.)
"""

from __future__ import annotations

import os
from pathlib import Path

from genmask_sdk.families.genmask.config import CONFIG_NAME
from genmask_sdk.errors import ArtifactNotFoundError

DEMO_NAME = "demo"


def demo_checkpoint_dir() -> Path:
    """Directory of the demo checkpoint shipped inside the package."""
    return Path(__file__).resolve().parents[2] / "assets" / "demo_checkpoint"


def local_checkpoint(name_or_path: str | os.PathLike) -> Path | None:
    """The directory of ``"demo"`` or of an existing local directory; None for anything else (a hub
    id, a missing path: ``resolve_checkpoint`` says what is wrong). Downloads nothing."""
    if str(name_or_path) == DEMO_NAME:
        directory = demo_checkpoint_dir()
        return directory if (directory / CONFIG_NAME).is_file() else None
    path = Path(name_or_path).expanduser()
    return path if path.is_dir() else None


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """``"demo"`` -> the shipped checkpoint; an existing directory -> itself; else a hub download."""
    if str(name_or_path) == DEMO_NAME:
        directory = demo_checkpoint_dir()
        if not (directory / CONFIG_NAME).is_file():
            raise ArtifactNotFoundError(
                f"the demo checkpoint is missing from {directory}; reinstall genmask-sdk or retrain it with "
                "'python -m genmask_sdk.families.genmask.train.demo'."
            )
        return directory
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") != 1:
        raise ArtifactNotFoundError(
            f"{name_or_path} is not a checkpoint directory; pass 'demo', a directory written by "
            "GenMaskModel.save_pretrained, or a hub id 'owner/name'."
        )
    return _download_from_hub(str(name_or_path))


def _download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # network errors, missing repos and offline mode all land here
        raise ArtifactNotFoundError(
            f"could not fetch checkpoint {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Download it on a connected machine and pass the local directory instead."
        ) from exc
