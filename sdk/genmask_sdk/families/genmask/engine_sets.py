"""The Segmenter's view of an engines directory (``engines/<name>/manifest.json``).

The manifest format and its checks belong to the exporter (``genmask_sdk.export.manifest``,
whose docstring is the schema). The parts used here::

    config (GenMaskConfig.to_dict(), resolution as exported), checkpoint {source, path, sha256},
    resolution, max_batch, max_prompt_tokens, sdk_version, format_version, tools,
    artifacts: [{stage, precision, runtime, file, sha256, inputs, outputs, ...}],
    sets: {precision: {"onnx": {stage: file} | null, "tensorrt": {stage: file} | null}}

``stage`` is ``vae_encoder`` | ``dit`` | ``mask_head``; ``runtime`` is ``onnx`` | ``tensorrt``.
Nothing here imports torch or onnxruntime, so ``genmask info`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError

STAGES = ("vae_encoder", "dit", "mask_head")
PRECISIONS = ("fp32", "fp16", "int8", "fp8", "int8-dynamic")


def open_manifest(directory: str | Path, verify: bool = True):
    """The exporter's ``Manifest`` (``.directory``, ``.data``) after its format/version checks
    and, with ``verify``, the sha256 of every file. Raises ArtifactNotFoundError /
    ArtifactMismatchError with the command that rebuilds the directory."""
    from genmask_sdk.runtime.manifest import load_manifest

    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactNotFoundError(
            f"engine directory {directory} does not exist; pass the folder that holds manifest.json "
            "(written by 'genmask build')."
        )
    return load_manifest(directory, verify=verify)


def manifest_config(manifest):
    """The ``GenMaskConfig`` the engines were exported with (its resolution is the engines')."""
    from genmask_sdk.families.genmask.config import GenMaskConfig

    if manifest.family != "genmask":
        raise ArtifactMismatchError(f"{manifest.directory} holds {manifest.family} engines (family "
                                    f"{manifest.family!r}), not GenMask ones; open them with genmask_sdk.InstanceSegmenter.")
    try:
        return GenMaskConfig.from_dict(manifest.data["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise ArtifactMismatchError(f"{manifest.directory}/manifest.json has an invalid config ({exc}); "
                                    "rebuild the engines.") from None


def select_artifacts(manifest, runtime: str, precision: str) -> dict[str, dict[str, Any]]:
    """``{stage: artifact record}`` of the ``precision`` set on ``runtime`` (``"onnx"`` |
    ``"tensorrt"``), or raise LookupError with the reason (the set was not built)."""
    try:
        files = manifest.files(precision, runtime)
    except ArtifactNotFoundError as exc:
        raise LookupError(str(exc)) from None
    missing = [stage for stage in STAGES if stage not in files]
    if missing:
        raise LookupError(f"the {precision} {runtime} set lacks the stages {missing}")
    return {stage: manifest.artifact(stage, precision, runtime) for stage in STAGES}


def describe_manifest(data: Mapping[str, Any]) -> dict[str, Any]:
    """A short summary of a manifest's JSON for ``genmask info`` and ``Segmenter.describe()``."""
    config = data.get("config", {})
    return {
        "format_version": data.get("format_version"),
        "sdk_version": data.get("sdk_version"),
        "created": data.get("created"),
        "model": config.get("name"),
        "embedder": config.get("embedder", {}),
        "resolution": data.get("resolution", config.get("resolution")),
        "max_batch": data.get("max_batch"),
        "max_prompt_tokens": data.get("max_prompt_tokens"),
        "checkpoint": data.get("checkpoint", {}),
        "tools": data.get("tools", {}),
        "sets": {p: sorted(r for r, files in entry.items() if files) for p, entry in data.get("sets", {}).items()},
        "cpu_timing": data.get("cpu_timing"),
        "artifacts": [{k: a.get(k) for k in ("stage", "precision", "runtime", "file", "sha256", "bytes")}
                      for a in data.get("artifacts", [])],
    }
