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

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilyEntry:
    """One model family, as the shared layers and the CLI see it (no import of the family itself).

    ``segmenter`` and ``build`` are ``"module:attribute"`` paths inside ``genmask_sdk``, imported when
    used; ``config_file`` is what the family's checkpoints hold; ``demo`` the name of its embedded
    demo checkpoint; ``hub_ids`` published checkpoints recognised by name (nothing is downloaded)."""

    name: str
    display: str
    config_file: str
    segmenter: str
    build: str
    demo: str
    hub_ids: tuple[str, ...] = ()
    what: str = ""
    how_to_open: str = ""


#: Every family the SDK knows. Adding one = its folder under ``families/`` + one entry here.
REGISTRY: dict[str, FamilyEntry] = {
    "genmask": FamilyEntry(
        name="genmask", display="GenMask", config_file="genmask_config.json",
        segmenter="families.genmask.segmenter:Segmenter", build="families.genmask.export.build:build_engines",
        demo="demo", what="a GenMask model (text prompts: 'the red circle')",
        how_to_open="genmask_sdk.Segmenter (from_pretrained / from_engines; CLI: genmask segment IMAGE PROMPT...)"),
    "gen2seg": FamilyEntry(
        name="gen2seg", display="gen2seg", config_file="gen2seg_config.json",
        segmenter="families.gen2seg.segmenter:InstanceSegmenter",
        build="families.gen2seg.export.build:build_gen2seg_engines", demo="demo-gen2seg",
        hub_ids=("reachomk/gen2seg-sd", "reachomk/gen2seg-mae-h"),
        what="a gen2seg model (instance colouring with point prompts)",
        how_to_open="genmask_sdk.InstanceSegmenter (from_pretrained / from_engines; CLI: genmask segment IMAGE "
                    "--point X,Y or --everything)"),
}

GENMASK = "genmask"
GEN2SEG = "gen2seg"
FAMILIES = tuple(REGISTRY)
GENMASK_CONFIG_NAME = REGISTRY[GENMASK].config_file
GEN2SEG_CONFIG_NAME = REGISTRY[GEN2SEG].config_file
MANIFEST_NAME = "manifest.json"
GENMASK_DEMO = REGISTRY[GENMASK].demo
#: The embedded gen2seg demo (``families/gen2seg/checkpoints.py``; trained by ``python -m genmask_sdk.families.gen2seg.train.demo``).
GEN2SEG_DEMO = REGISTRY[GEN2SEG].demo
#: The released gen2seg checkpoints (``genmask_sdk.families.gen2seg.modeling.KNOWN_HUB_IDS``).
GEN2SEG_HUB_IDS = REGISTRY[GEN2SEG].hub_ids
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
    for entry in REGISTRY.values():
        if text == entry.demo:
            return entry.name
    try:
        directory = Path(text).expanduser()
        if directory.is_dir():
            return _directory_family(directory)
    except (OSError, ValueError):  # a name the file system refuses (too long, NUL byte)
        return None
    return next((entry.name for entry in REGISTRY.values() if text in entry.hub_ids), None)


def _directory_family(directory: Path) -> str | None:
    for entry in REGISTRY.values():
        if (directory / entry.config_file).is_file():
            return entry.name
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
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def wrong_family_message(name: Any, found: str, wanted: str) -> str:
    """The one explanation every segmenter gives when handed another family's artefact."""
    entry = REGISTRY[found]
    wanted_name = REGISTRY[wanted].display if wanted in REGISTRY else wanted
    return f"{name} is {entry.what}, not a {wanted_name} one; open it with {entry.how_to_open}."


def load_attribute(path: str):
    """``"module:attribute"`` (relative to ``genmask_sdk``) -> the object, imported now."""
    import importlib

    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(f"genmask_sdk.{module}"), attribute)
