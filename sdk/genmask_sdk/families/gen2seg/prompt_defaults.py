"""A checkpoint's own prompt defaults: ``prompt_config.json`` beside its weights.

The published point-prompt parameters (``PromptConfig()``, threshold 3) were chosen for the
published gen2seg weights, whose colour maps are flat. A checkpoint whose maps are less flat (our
demo) segments better with other values, chosen on *validation* scenes, never on the held-out ones.
Such a checkpoint carries them in ``prompt_config.json``::

    {"prompt_config": {"threshold": 10, ...every PromptConfig field...},
     "selection": {...how they were chosen: metric, seed, scenes, scores per candidate...}}

``InstanceSegmenter.from_pretrained(dir)`` uses them when the caller passes no ``prompt_config``;
``genmask build`` copies them into the engines' manifest, so ``from_engines`` does the same.
``describe()["prompt_config_source"]`` says which was used. Checkpoints without the file (the
published ones) get ``PromptConfig()``. torch-free (the runtime layer reads it).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

from genmask_sdk.errors import ArtifactMismatchError, ConfigError
from genmask_sdk.families.gen2seg.prompts import PromptConfig

PROMPT_CONFIG_FILE = "prompt_config.json"

_BOOL_FIELDS = {"refine", "clamp_similarity", "connected"}
_INT_FIELDS = {"bilateral_d"}


def prompt_config_from_mapping(data: Any, where: str) -> PromptConfig:
    """Build a ``PromptConfig`` from a JSON mapping of its fields (missing fields: the defaults).

    Raises ``ArtifactMismatchError`` naming ``where`` (the file or manifest entry) for a
    non-mapping, an unknown field or a value of the wrong type or range."""
    if not isinstance(data, Mapping):
        raise ArtifactMismatchError(f"{where}: the prompt configuration must be a JSON object of PromptConfig "
                                    f"fields, got {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(PromptConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ArtifactMismatchError(f"{where}: unknown PromptConfig field(s) {unknown}; known: {sorted(known)}. "
                                    "It was written by another genmask-sdk version: rebuild or edit the file.")
    for name, value in data.items():
        if name in _BOOL_FIELDS and not isinstance(value, bool):
            raise ArtifactMismatchError(f"{where}: PromptConfig.{name} must be true or false, got {value!r}.")
        if name not in _BOOL_FIELDS and (isinstance(value, bool) or not isinstance(value, (int, float))
                                         or not math.isfinite(value)):
            raise ArtifactMismatchError(f"{where}: PromptConfig.{name} must be a number, got {value!r}.")
        if name in _INT_FIELDS and value != int(value):
            raise ArtifactMismatchError(f"{where}: PromptConfig.{name} must be an integer, got {value!r}.")
    values = {k: (int(v) if k in _INT_FIELDS else v) for k, v in data.items()}
    try:
        return PromptConfig(**values)
    except ConfigError as exc:
        raise ArtifactMismatchError(f"{where}: {exc}") from None


def read_prompt_defaults(directory: str | Path) -> tuple[PromptConfig, dict[str, Any]] | None:
    """``(PromptConfig, selection)`` from ``directory/prompt_config.json``; None when there is no file.

    Raises ``ArtifactMismatchError`` naming the file when it is not valid JSON or not a prompt
    configuration (a broken file is never silently replaced by the defaults)."""
    path = Path(directory) / PROMPT_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactMismatchError(f"{path} is not readable JSON ({exc}); delete it to use the published prompt "
                                    "defaults, or restore it from the checkpoint.") from None
    if not isinstance(data, dict) or "prompt_config" not in data:
        raise ArtifactMismatchError(f"{path} has no 'prompt_config' object; expected "
                                    "{\"prompt_config\": {...}, \"selection\": {...}}.")
    selection = data.get("selection", {})
    if not isinstance(selection, dict):
        raise ArtifactMismatchError(f"{path}: 'selection' must be a JSON object, got {type(selection).__name__}.")
    return prompt_config_from_mapping(data["prompt_config"], str(path)), selection


def prompt_defaults_json(config: PromptConfig, selection: Mapping[str, Any]) -> str:
    """The text of ``prompt_config.json`` for ``config`` (every field) and its ``selection`` record."""
    return json.dumps({"prompt_config": dataclasses.asdict(config), "selection": dict(selection)}, indent=2)
