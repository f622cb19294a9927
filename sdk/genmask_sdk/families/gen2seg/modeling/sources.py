"""Where a gen2seg checkpoint's files are, and which variant it is (torch-free).

Accepted sources (a local directory or a hub id ``owner/name``):

- published SD (``reachomk/gen2seg-sd``): a diffusers pipeline folder, ``vae/``, ``unet/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (+ ``model_index.json``);
- published MAE (``reachomk/gen2seg-mae-h``): a transformers ``ViTMAEForPreTraining`` folder
  (``config.json`` with ``model_type: vit_mae`` + weights);
- ours (``save_pretrained``): ``gen2seg_config.json`` plus, for SD, ``vae/``, ``unet/``,
  ``scheduler/`` and ``empty_prompt_embedding.safetensors`` (c∅, so CLIP is not needed), or, for
  MAE, the transformers checkpoint files beside it.

A GenMask checkpoint or an unknown layout raises ``ArtifactMismatchError``; a missing path
``ArtifactNotFoundError``. ``sd.py`` and ``mae.py`` read and write the weights; ``loading.py`` is
the entry point (``load_gen2seg``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError
from genmask_sdk.families.gen2seg.config import CONFIG_NAME, Gen2SegConfig
from genmask_sdk.families.registry import GEN2SEG_DEMO, GENMASK_CONFIG_NAME

#: The released checkpoints (README of the official repository) and their variants.
KNOWN_HUB_IDS = {"reachomk/gen2seg-sd": "sd", "reachomk/gen2seg-mae-h": "mae"}
EMBEDDING_FILE = "empty_prompt_embedding.safetensors"
EMBEDDING_KEY = "empty_prompt_embedding"


@dataclass(frozen=True)
class Source:
    """Where a checkpoint is: ``root`` is a local directory or a hub id (``local`` tells which)."""

    root: str
    local: bool
    local_files_only: bool = False

    def file(self, name: str) -> Path | None:
        """The path of ``name`` (a relative file path), fetched from the hub if needed; None if absent."""
        if self.local:
            path = Path(self.root) / name
            return path if path.is_file() else None
        return _hub_file(self.root, name, self.local_files_only)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for diffusers/transformers ``from_pretrained``."""
        return {"local_files_only": self.local_files_only}


def resolve_source(name_or_path: str | os.PathLike, local_files_only: bool = False) -> Source:
    """``"demo-gen2seg"`` (the shipped demo), an existing directory, or a hub id ``owner/name``;
    anything else is ``ArtifactNotFoundError``."""
    text = str(name_or_path)
    if text == GEN2SEG_DEMO and not isinstance(name_or_path, Path):
        from genmask_sdk.families.gen2seg.checkpoints import demo_gen2seg_dir

        return Source(str(demo_gen2seg_dir()), True, True)
    path = Path(text).expanduser()
    if path.is_dir():
        return Source(str(path), True, local_files_only)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1 or isinstance(name_or_path, Path):
        raise ArtifactNotFoundError(
            f"{text} is not a gen2seg checkpoint directory; pass a directory (a published gen2seg folder or one "
            f"written by save_pretrained) or a hub id such as {sorted(KNOWN_HUB_IDS)}."
        )
    return Source(text, False, local_files_only)


def _hub_file(repo_id: str, name: str, local_files_only: bool) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, name, local_files_only=local_files_only))
    except LocalEntryNotFoundError:
        return None  # offline and not cached: treated as absent; required files fail in from_pretrained
    except EntryNotFoundError:
        return None
    except Exception as exc:  # missing repository, network errors
        raise ArtifactNotFoundError(
            f"could not read {name!r} of hub repository {repo_id!r} ({type(exc).__name__}: {exc}). "
            "Download the repository on a connected machine and pass the local directory instead."
        ) from exc


def detect_variant(source: Source) -> str:
    """``"sd"`` or ``"mae"`` from the files at ``source``; raises for GenMask and unknown layouts."""
    if source.file(GENMASK_CONFIG_NAME) is not None:
        raise ArtifactMismatchError(
            f"{source.root} is a GenMask checkpoint ({GENMASK_CONFIG_NAME}), not a gen2seg one; "
            "load it with GenMaskModel.from_pretrained."
        )
    config_file = source.file(CONFIG_NAME)
    if config_file is not None:
        return _read_config(config_file).variant
    if not source.local and source.root in KNOWN_HUB_IDS:
        return KNOWN_HUB_IDS[source.root]
    if source.file("unet/config.json") is not None and source.file("vae/config.json") is not None:
        return "sd"
    transformers_config = source.file("config.json")
    if transformers_config is not None:
        model_type = _json(transformers_config).get("model_type")
        if model_type == "vit_mae":
            return "mae"
        raise ArtifactMismatchError(f"{source.root} holds a transformers model of type {model_type!r}; "
                                    "gen2seg-mae needs a ViTMAEForPreTraining checkpoint (model_type 'vit_mae').")
    expected = (f"expected {CONFIG_NAME}, a diffusers pipeline folder with unet/ and vae/ (gen2seg-sd), "
                "or a ViT-MAE config.json (gen2seg-mae)")
    if not source.local:
        raise ArtifactNotFoundError(f"hub repository {source.root!r} has none of the gen2seg files, or they are not "
                                    f"in the local hub cache (local_files_only={source.local_files_only}): {expected}.")
    raise ArtifactMismatchError(f"{source.root} is not a gen2seg checkpoint: {expected}.")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactMismatchError(f"{path} is not valid JSON ({exc}).") from exc
    return data if isinstance(data, dict) else {}


def _read_config(path: Path) -> Gen2SegConfig:
    try:
        return Gen2SegConfig.from_json(Path(path).read_text())
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{path} is not a valid gen2seg config ({exc}); re-save the checkpoint.") from exc


def _config(source: Source, default: Gen2SegConfig, overrides: dict[str, Any]) -> Gen2SegConfig:
    path = source.file(CONFIG_NAME)
    config = _read_config(path) if path is not None else default
    return config.replace(**overrides) if overrides else config


def _load(what: str, source: Source, loader: Callable[[], Any]) -> Any:
    """Run a ``from_pretrained`` call; missing files become ``ArtifactNotFoundError``."""
    try:
        return loader()
    except OSError as exc:  # diffusers/transformers raise OSError (EnvironmentError) for missing files
        raise ArtifactNotFoundError(f"could not load the {what} of {source.root}: {exc}") from exc


def _expect(source: Source, variant: str) -> None:
    found = detect_variant(source)
    if found != variant:
        raise ArtifactMismatchError(f"{source.root} is a gen2seg-{found} checkpoint, not gen2seg-{variant}; "
                                    "use load_gen2seg or the matching class.")


def _write_directory(target: Path, write: Callable[[Path], None]) -> Path:
    """Write into a staging directory beside ``target``, then swap it in (a complete directory or nothing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    backup = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        write(staging)
        if target.exists():
            os.replace(target, backup)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)
    return target


def checkpoint_prompt_defaults(name_or_path: str | os.PathLike, local_files_only: bool = False):
    """The checkpoint's own prompt defaults, ``(PromptConfig, selection)`` from its
    ``prompt_config.json`` (``instance.prompt_defaults``), or None when it has none (the published
    checkpoints). Works for local directories, the demo and hub ids (the file is fetched with the
    others). A broken file raises ``ArtifactMismatchError``."""
    from genmask_sdk.families.gen2seg.prompt_defaults import PROMPT_CONFIG_FILE, read_prompt_defaults

    path = resolve_source(name_or_path, local_files_only).file(PROMPT_CONFIG_FILE)
    return None if path is None else read_prompt_defaults(path.parent)
