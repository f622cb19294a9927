"""Reading an engines directory (``engines/<name>/manifest.json``) and picking its artefacts.

The manifest is written by ``genmask_sdk.export``. Keys used here::

    format_version, sdk_version, config (GenMaskConfig.to_dict()), checkpoint {source, sha256},
    resolution, max_batch, max_prompt_tokens, tools,
    artifacts: [{stage, precision, runtime, file, sha256, inputs, outputs, ...}],
    sets: {precision: {stage: file}}

``stage`` is ``vae_encoder`` | ``dit`` | ``mask_head``; ``runtime`` is ``onnx`` | ``tensorrt``;
``file`` is relative to the engines directory. This module imports neither torch nor
onnxruntime, so ``genmask info`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from .errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError
from .io import sha256_file

MANIFEST_NAME = "manifest.json"
STAGES = ("vae_encoder", "dit", "mask_head")
PRECISIONS = ("fp32", "fp16", "int8")
RUNTIMES = ("onnx", "tensorrt")
SUPPORTED_FORMAT_MAJOR = 1
REQUIRED_KEYS = ("format_version", "config", "resolution", "max_batch", "max_prompt_tokens", "artifacts", "sets")
BUILD_HINT = "Rebuild the directory with 'genmask build ...'."


def read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """The manifest of ``directory`` as a plain dict, with every artefact checked when ``verify``.

    Uses the exporter's ``genmask_sdk.export.manifest.load_manifest`` when it is installed, else
    :func:`_read_manifest` (same contract). Raises ArtifactNotFoundError / ArtifactMismatchError.
    """
    try:
        from .export.manifest import load_manifest  # written by the exporter
    except ImportError:
        return _read_manifest(directory, verify)
    return _as_dict(load_manifest(directory, verify=verify))


def _as_dict(manifest: Any) -> dict[str, Any]:
    if isinstance(manifest, Mapping):
        return dict(manifest)
    if hasattr(manifest, "to_dict"):
        return dict(manifest.to_dict())
    if dataclasses.is_dataclass(manifest):
        return dataclasses.asdict(manifest)
    raise TypeError(f"load_manifest returned a {type(manifest).__name__}; expected a mapping")


def _read_manifest(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """Local stand-in for the exporter's ``load_manifest``: parse, check keys, check sha256s."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactNotFoundError(
            f"engine directory {directory} does not exist; pass the folder that holds {MANIFEST_NAME}. {BUILD_HINT}"
        )
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactNotFoundError(f"{path} does not exist; {directory} is not an engines directory. {BUILD_HINT}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactMismatchError(f"{path} is not valid JSON ({exc}); the file is corrupt. {BUILD_HINT}") from None
    if not isinstance(manifest, dict):
        raise ArtifactMismatchError(f"{path} holds a {type(manifest).__name__}, not a JSON object. {BUILD_HINT}")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ArtifactMismatchError(f"{path} lacks the keys {missing}; it was not written by genmask. {BUILD_HINT}")
    major = str(manifest["format_version"]).split(".")[0]
    if major != str(SUPPORTED_FORMAT_MAJOR):
        raise ArtifactMismatchError(
            f"{path} has format_version {manifest['format_version']!r}; this SDK reads version "
            f"{SUPPORTED_FORMAT_MAJOR}.x. Upgrade genmask-sdk or rebuild the engines with this version."
        )
    for artifact in manifest["artifacts"]:
        _check_artifact(directory, artifact, verify)
    return manifest


def _check_artifact(directory: Path, artifact: Mapping[str, Any], verify: bool) -> None:
    file = directory / str(artifact.get("file", ""))
    if not artifact.get("file") or not file.is_file():
        raise ArtifactNotFoundError(
            f"{artifact.get('stage')} artefact {file} listed in the manifest is missing. Copy the whole "
            f"engines directory, or {BUILD_HINT[0].lower() + BUILD_HINT[1:]}"
        )
    if verify and artifact.get("sha256"):
        actual = sha256_file(file)
        if actual != artifact["sha256"]:
            raise ArtifactMismatchError(
                f"{file} has sha256 {actual[:12]}…, but the manifest records {artifact['sha256'][:12]}…: the "
                f"file was modified, truncated or replaced. {BUILD_HINT}"
            )


def manifest_config(manifest: Mapping[str, Any]):
    """The ``GenMaskConfig`` recorded in a manifest."""
    from .config import GenMaskConfig

    try:
        return GenMaskConfig.from_dict(manifest["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ArtifactMismatchError(f"the manifest's config is invalid ({exc}). {BUILD_HINT}") from None


def select_artifacts(manifest: Mapping[str, Any], runtime: str, precision: str) -> dict[str, dict[str, Any]]:
    """``{stage: artifact}`` of one runtime for a precision set, or raise LookupError(reason).

    ``sets[precision]`` names a file per stage; a set may mix precisions (say an fp32 VAE encoder
    in the fp16 set). For each stage the set's file is used when it has the wanted runtime, else
    the artefact of that runtime with the same stage and precision as the set's file.
    """
    sets = manifest.get("sets", {})
    if precision not in sets:
        raise LookupError(f"the engines have no {precision!r} set (available: {sorted(sets)})")
    by_file = {a["file"]: a for a in manifest["artifacts"]}
    chosen: dict[str, dict[str, Any]] = {}
    for stage in STAGES:
        named = by_file.get(sets[precision].get(stage, ""))
        wanted = named["precision"] if named else precision
        if named and named["runtime"] == runtime:
            chosen[stage] = named
            continue
        match = [a for a in manifest["artifacts"]
                 if a["stage"] == stage and a["runtime"] == runtime and a["precision"] == wanted]
        if not match:
            have = sorted({(a["runtime"], a["precision"]) for a in manifest["artifacts"] if a["stage"] == stage})
            raise LookupError(f"no {runtime} {wanted} artefact for stage {stage!r} (have {have})")
        chosen[stage] = match[0]
    return chosen


def describe_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A short summary for ``genmask info`` and ``Segmenter.describe()``."""
    config = manifest.get("config", {})
    return {
        "format_version": manifest.get("format_version"),
        "sdk_version": manifest.get("sdk_version"),
        "model": config.get("name"),
        "embedder": config.get("embedder", {}),
        "resolution": manifest.get("resolution"),
        "max_batch": manifest.get("max_batch"),
        "max_prompt_tokens": manifest.get("max_prompt_tokens"),
        "checkpoint": manifest.get("checkpoint", {}),
        "tools": manifest.get("tools", {}),
        "sets": manifest.get("sets", {}),
        "artifacts": [
            {k: a.get(k) for k in ("stage", "precision", "runtime", "file", "sha256")} for a in manifest["artifacts"]
        ],
    }
