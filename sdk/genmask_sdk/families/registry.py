"""Which model family a checkpoint or engines directory belongs to: GenMask or gen2seg.

    family_of("demo")                   -> "genmask"   (the shipped GenMask demo)
    family_of("checkpoints/run7")       -> "genmask"   (genmask_config.json)
    family_of("reachomk/gen2seg-sd")    -> "gen2seg"   (a published gen2seg hub id)
    family_of("engines/gen2seg")        -> "gen2seg"   (manifest.json with family "gen2seg")
    family_of("somewhere/else")         -> None        (unknown: the loaders say what is wrong)

Torch-free and cheap (a few ``stat`` calls and at most one small JSON file read), so the
segmenters and the CLI can send a user to the right class before anything heavy is loaded.
Nothing is downloaded: a hub id is recognised by name only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from genmask_sdk.families.genmask.config import CONFIG_NAME as GENMASK_CONFIG_NAME

GENMASK = "genmask"
GEN2SEG = "gen2seg"
FAMILIES = (GENMASK, GEN2SEG)

#: What our gen2seg checkpoints hold (``genmask_sdk.families.gen2seg.config.CONFIG_NAME``; repeated
#: here because importing that package imports torch).
GEN2SEG_CONFIG_NAME = "gen2seg_config.json"
MANIFEST_NAME = "manifest.json"
GENMASK_DEMO = "demo"
#: The embedded gen2seg demo (``families.gen2seg.checkpoints.demo_gen2seg_dir()``; ``python -m genmask_sdk.families.gen2seg.train.demo``).
GEN2SEG_DEMO = "demo-gen2seg"
#: The released gen2seg checkpoints (``genmask_sdk.families.gen2seg.modeling.KNOWN_HUB_IDS``).
GEN2SEG_HUB_IDS = ("reachomk/gen2seg-sd", "reachomk/gen2seg-mae-h")
_MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def family_of(path: Any) -> str | None:
    """``"genmask"``, ``"gen2seg"`` or None for a checkpoint name, checkpoint directory or engines directory.

    Names: ``"demo"`` is GenMask, ``"demo-gen2seg"`` and the published gen2seg hub ids are gen2seg.
    Directories: ``genmask_config.json`` -> GenMask; ``gen2seg_config.json`` -> gen2seg; an engines
    ``manifest.json`` -> its ``family`` (top level, or in its ``config``), GenMask when it names none
    (GenMask manifests predate the field); the published gen2seg layouts (a diffusers folder with
    ``unet/`` and ``vae/``, or a ViT-MAE ``config.json``) -> gen2seg. Anything else (a missing path,
    an unreadable manifest, another hub id) -> None.
    """
    if not isinstance(path, (str, os.PathLike)):
        return None
    text = os.fspath(path)
    if isinstance(text, bytes):
        return None
    if text == GENMASK_DEMO:
        return GENMASK
    if text == GEN2SEG_DEMO:
        return GEN2SEG
    try:
        directory = Path(text).expanduser()
        if directory.is_dir():
            return _directory_family(directory)
    except (OSError, ValueError):  # a name the file system refuses (too long, NUL byte)
        return None
    return GEN2SEG if text in GEN2SEG_HUB_IDS else None


def _directory_family(directory: Path) -> str | None:
    if (directory / GENMASK_CONFIG_NAME).is_file():
        return GENMASK
    if (directory / GEN2SEG_CONFIG_NAME).is_file():
        return GEN2SEG
    manifest = directory / MANIFEST_NAME
    if manifest.is_file():
        return _manifest_family(manifest)
    if (directory / "unet" / "config.json").is_file() and (directory / "vae" / "config.json").is_file():
        return GEN2SEG  # the published gen2seg-sd layout (a diffusers pipeline folder)
    config = _json(directory / "config.json")
    if config is not None and config.get("model_type") == "vit_mae":
        return GEN2SEG  # the published gen2seg-mae layout (a transformers ViTMAEForPreTraining folder)
    return None


def _manifest_family(manifest: Path) -> str | None:
    data = _json(manifest)
    if data is None:
        return None
    config = data.get("config")
    family = data.get("family") or (config.get("family") if isinstance(config, dict) else None)
    if family is None:
        return GENMASK
    return family if family in FAMILIES else None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_MANIFEST_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def wrong_family_message(name: Any, found: str, wanted: str) -> str:
    """The one explanation both segmenters give when handed the other family's artefact."""
    what = {GENMASK: "a GenMask model (text prompts: 'the red circle')",
            GEN2SEG: "a gen2seg model (instance colouring with point prompts)"}[found]
    use = {GENMASK: "genmask_sdk.Segmenter (from_pretrained / from_engines; CLI: genmask segment IMAGE PROMPT...)",
           GEN2SEG: "genmask_sdk.InstanceSegmenter (from_pretrained / from_engines; CLI: genmask segment IMAGE "
                    "--point X,Y or --everything)"}[found]
    return f"{name} is {what}, not a {wanted} one; open it with {use}."
