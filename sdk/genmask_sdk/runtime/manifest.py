"""Reading ``engines/<name>/manifest.json`` safely: schema, containment, checksums. numpy-free, torch-free.

The format is the exporter's (``genmask_sdk.export.manifest`` writes it; its docstring shows an
example). Rules enforced here, before any file the manifest names is opened:

* every file entry (artefacts, their external data, sets, the text embedder) is a plain relative
  path inside the engines directory: no ``..``, no absolute path, no NUL, and it does not resolve
  (through symlinks) outside the directory; nor does any link in the directory;
* the whole manifest matches the schema (types, ranges, cross-references), and every problem is
  listed in one ArtifactMismatchError.

Two model families share the format: GenMask (no ``family`` key, or ``"genmask"``) and gen2seg
(``"family": "gen2seg"``, written by ``families/gen2seg/export/build.py``: a Gen2SegConfig as ``config``, the
host-side ``processing``, stages ``vae_encoder``/``unet``/``vae_decoder`` (SD) or ``mae`` (MAE)).
The gen2seg checks are added to, never replace, the common ones (containment, checksums).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from genmask_sdk import __version__
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError
from genmask_sdk.io import sha256_file
from genmask_sdk.runtime.base import TensorSpec

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
RUNTIMES = ("onnx", "tensorrt")  # the runtimes of stage sets
ARTIFACT_RUNTIMES = (*RUNTIMES, "tokenizers")  # + the text embedder's tokenizer.json
_SHA256 = re.compile(r"[0-9a-f]{64}")
FAMILIES = ("genmask", "gen2seg")
#: gen2seg variant -> the stages of each of its precision sets.
GEN2SEG_STAGES = {"sd": ("vae_encoder", "unet", "vae_decoder"), "mae": ("mae",)}


def manifest_family(data: dict[str, Any]) -> Any:
    """The model family a manifest's JSON declares (``"genmask"`` when it has no ``family`` key)."""
    return data.get("family", "genmask")


def rebuild_hint(data: dict | None, directory: Path) -> str:
    source = ((data or {}).get("checkpoint") or {}).get("source", "<checkpoint>")
    return f"Re-run `python export/build_engines.py --checkpoint {source} --out {directory}` (add --force to rebuild all)."


def contained(directory: Path, name: Any) -> Path | None:
    """``directory / name`` if ``name`` is a relative path that stays inside ``directory`` (symlinks
    resolved, nothing opened), else None."""
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        return None
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        return None
    path = directory / pure
    root = directory.resolve()
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):  # outside, or a symlink loop
        return None
    return path


def escaping_links(directory: Path) -> list[str]:
    """Symlinks under ``directory`` (not followed) whose targets lie outside it."""
    root = directory.resolve()
    found = []
    for top, dirs, files in os.walk(directory, followlinks=False):
        for name in dirs + files:
            path = Path(top) / name
            if path.is_symlink():
                try:
                    path.resolve().relative_to(root)
                except (ValueError, OSError, RuntimeError):
                    found.append(path.relative_to(directory).as_posix())
    return sorted(found)


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated manifest: ``data`` is the JSON object, ``directory`` the engines directory."""

    directory: Path
    data: dict[str, Any]

    @property
    def family(self) -> str:
        """``"genmask"`` or ``"gen2seg"``."""
        return manifest_family(self.data)

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        return self.data["artifacts"]

    @property
    def precisions(self) -> list[str]:
        return list(self.data["sets"])

    def artifact(self, stage: str, precision: str, runtime: str = "onnx") -> dict[str, Any]:
        """The record of the file serving ``stage`` in the ``precision`` set on ``runtime``."""
        files = self.files(precision, runtime)
        if stage not in files:
            raise ArtifactNotFoundError(f"{self.directory}: no {stage} in the {precision} set. "
                                        + rebuild_hint(self.data, self.directory))
        name = self.data["sets"][precision][runtime][stage]
        for record in self.artifacts:
            if record["file"] == name and record["runtime"] == runtime:
                return record
        raise ArtifactMismatchError(f"{self.directory}/{MANIFEST_NAME}: the {precision} set names {name!r}, which no "
                                    "artifact records. " + rebuild_hint(self.data, self.directory))

    def files(self, precision: str, runtime: str = "onnx") -> dict[str, Path]:
        """Stage -> path (inside the directory) of the ``precision`` set on ``runtime``."""
        entry = self.data["sets"].get(precision)
        if entry is None or not entry.get(runtime):
            built = {p: [r for r, f in e.items() if f] for p, e in self.data["sets"].items()}
            raise ArtifactNotFoundError(f"{self.directory} has no {precision} set for {runtime} (built: {built}). "
                                        f"Build it with --precisions {precision}"
                                        + (" on a machine with TensorRT and a GPU" if runtime == "tensorrt" else "")
                                        + ". " + rebuild_hint(self.data, self.directory))
        return {stage: self.path(name) for stage, name in entry[runtime].items()}

    def path(self, name: str) -> Path:
        """A file the manifest names, inside the directory (validated on load; checked again here)."""
        path = contained(self.directory, name)
        if path is None:
            raise ArtifactMismatchError(f"{self.directory}/{MANIFEST_NAME} names {name!r}, which is not a file "
                                        "inside the engines directory; nothing outside it is opened.")
        return path

    def specs(self, stage: str, precision: str, runtime: str = "onnx") -> tuple[list[TensorSpec], list[TensorSpec]]:
        record = self.artifact(stage, precision, runtime)
        return ([TensorSpec.from_json(s) for s in record["inputs"]], [TensorSpec.from_json(s) for s in record["outputs"]])


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest's JSON, unchecked beyond parsing (ArtifactNotFoundError / ArtifactMismatchError)."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactNotFoundError(f"{path} does not exist: {directory} holds no complete engine build. "
                                    + rebuild_hint(None, directory))
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactMismatchError(f"{path} is not valid JSON ({exc}). " + rebuild_hint(None, directory)) from exc
    except RecursionError:
        raise ArtifactMismatchError(f"{path} nests too deeply to be a manifest. " + rebuild_hint(None, directory)) from None
    if not isinstance(data, dict):
        raise ArtifactMismatchError(f"{path} is not a manifest object. " + rebuild_hint(None, directory))
    return data


def load_manifest(directory: str | Path, verify: bool = True, family: str | None = None) -> Manifest:
    """Load and check ``<directory>/manifest.json``.

    Checks the format version and the SDK major version, the schema and the containment of every
    file (:func:`manifest_problems`), and with ``verify`` that every file (graphs, external data,
    plans, tokenizer) exists and has the recorded SHA-256. Raises ArtifactNotFoundError (missing
    manifest or file) or ArtifactMismatchError (other version, invalid manifest, corrupt or
    changed file), each with the command that rebuilds the directory. ``family``: if given, the
    manifest must declare this model family (``"genmask"`` or ``"gen2seg"``), checked before the rest.
    """
    directory = Path(directory)
    data = read_manifest(directory)
    if family is not None and manifest_family(data) != family:
        raise ArtifactMismatchError(f"{directory} holds {manifest_family(data)!r} engines, not {family!r} ones "
                                    f"({MANIFEST_NAME} family); point to a directory built for a {family} checkpoint.")
    hint = rebuild_hint(data if isinstance(data.get("checkpoint"), dict) else None, directory)
    if data.get("format_version") != FORMAT_VERSION:
        raise ArtifactMismatchError(f"{directory}/{MANIFEST_NAME} has format_version {data.get('format_version')!r}; "
                                    f"this SDK reads {FORMAT_VERSION}. {hint}")
    built_major = str(data.get("sdk_version", "")).split(".")[0]
    if built_major != __version__.split(".")[0]:
        raise ArtifactMismatchError(f"{directory} was built by genmask-sdk {data.get('sdk_version')!r}; this is "
                                    f"{__version__} (major versions differ). {hint}")
    problems = manifest_problems(data, directory)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ArtifactMismatchError(f"{directory}/{MANIFEST_NAME} is not a valid engines manifest:\n{listed}\n"
                                    f"Nothing was loaded. {hint}")
    manifest = Manifest(directory, data)
    if verify:
        verify_files(manifest)
    return manifest


def verify_files(manifest: Manifest) -> None:
    """Every recorded file exists and matches its size and SHA-256 (see ``load_manifest``)."""
    hint = rebuild_hint(manifest.data, manifest.directory)
    for artifact in manifest.artifacts:
        for record in [artifact] + list(artifact.get("external_data", [])):
            path = manifest.path(record["file"])
            if path.exists() and not path.is_file():
                what = "a directory" if path.is_dir() else "not a regular file (a pipe, socket or device)"
                raise ArtifactMismatchError(f"{path} is listed in the manifest as an engine file but is {what}. {hint}")
            if not path.is_file():
                raise ArtifactNotFoundError(f"{path} is listed in the manifest but missing. {hint}")
            if path.stat().st_size != record["bytes"] or sha256_file(path) != record["sha256"]:
                raise ArtifactMismatchError(f"{path} does not match its manifest checksum (corrupted, truncated or "
                                            f"replaced). {hint}")


# ---- schema -----------------------------------------------------------------------------------------


def manifest_problems(data: dict[str, Any], directory: Path) -> list[str]:
    """Everything wrong with a manifest's JSON (empty when it is valid). Opens no file it names."""
    problems: list[str] = []
    for key, kind in (("config", dict), ("checkpoint", dict), ("artifacts", list), ("sets", dict)):
        if not isinstance(data.get(key), kind):
            problems.append(f"{key!r} must be a JSON {'object' if kind is dict else 'array'}, got "
                            f"{_kind(data.get(key))}")
    for key, required in (("max_batch", True), ("max_prompt_tokens", False), ("resolution", False)):
        value = data.get(key)
        if value is None and not required:
            continue
        if not _positive_int(value):
            problems.append(f"{key!r} must be an integer >= 1, got {value!r}")
    checkpoint = data.get("checkpoint")
    if isinstance(checkpoint, dict):
        for key in ("source", "path", "sha256"):
            if checkpoint.get(key) is not None and not isinstance(checkpoint[key], str):
                problems.append(f"checkpoint.{key} must be a string, got {_kind(checkpoint[key])}")
    records = _artifact_problems(data.get("artifacts"), directory, problems)
    _set_problems(data.get("sets"), records, problems)
    _text_embedder_problems(data.get("text_embedder"), records, problems)
    _consistency_problems(data, problems)
    _family_problems(data, problems)
    links = escaping_links(directory)
    if links:
        problems.append(f"symlinks leave the engines directory: {links} (copy the files in instead)")
    return problems


def _artifact_problems(artifacts: Any, directory: Path, problems: list[str]) -> dict[tuple[str, str], dict]:
    """Check each artifact record; return the valid ones by (file, runtime)."""
    records: dict[tuple[str, str], dict] = {}
    if not isinstance(artifacts, list):
        return records
    for index, record in enumerate(artifacts):
        where = f"artifacts[{index}]"
        if not isinstance(record, dict):
            problems.append(f"{where} must be an object, got {_kind(record)}")
            continue
        before = len(problems)
        for key in ("stage", "precision"):
            if not isinstance(record.get(key), str) or not record.get(key):
                problems.append(f"{where}.{key} must be a non-empty string, got {record.get(key)!r}")
        if record.get("runtime") not in ARTIFACT_RUNTIMES:
            problems.append(f"{where}.runtime must be one of {list(ARTIFACT_RUNTIMES)}, got {record.get('runtime')!r}")
        _file_problems(record, where, directory, problems)
        extra = record.get("external_data", [])
        if not isinstance(extra, list):
            problems.append(f"{where}.external_data must be an array, got {_kind(extra)}")
        else:
            for j, item in enumerate(extra):
                if not isinstance(item, dict):
                    problems.append(f"{where}.external_data[{j}] must be an object, got {_kind(item)}")
                else:
                    _file_problems(item, f"{where}.external_data[{j}]", directory, problems)
        for key in ("inputs", "outputs"):
            if key in record:
                _spec_problems(record[key], f"{where}.{key}", problems)
        if len(problems) == before:
            key = (record["file"], record["runtime"])
            if key in records:
                problems.append(f"{where} repeats the record of {record['file']!r}")
            records[key] = record
    return records


def _file_problems(record: dict, where: str, directory: Path, problems: list[str]) -> None:
    name = record.get("file")
    if not isinstance(name, str):
        problems.append(f"{where}.file must be a file name, got {_kind(name)}")
    elif contained(directory, name) is None:
        problems.append(f"{where}.file {name!r} is not inside the engines directory (no '..', absolute paths or "
                        "links leaving it)")
    sha = record.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        problems.append(f"{where}.sha256 must be 64 lowercase hex digits, got {sha!r}")
    size = record.get("bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.append(f"{where}.bytes must be an integer >= 0, got {size!r}")


def _spec_problems(specs: Any, where: str, problems: list[str]) -> None:
    if not isinstance(specs, list):
        problems.append(f"{where} must be an array, got {_kind(specs)}")
        return
    for j, spec in enumerate(specs):
        ok = (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("dtype"), str)
              and isinstance(spec.get("shape"), list)
              and all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in spec["shape"]))
        if not ok:
            problems.append(f"{where}[{j}] must be {{name: str, dtype: str, shape: [int >= 0 | null, ...]}}, got {spec!r}")


def _set_problems(sets: Any, records: dict, problems: list[str]) -> None:
    if not isinstance(sets, dict):
        return
    for precision, entry in sets.items():
        if not isinstance(entry, dict):
            problems.append(f"sets.{precision} must be an object {{onnx: ..., tensorrt: ...}}, got {_kind(entry)}")
            continue
        for runtime, files in entry.items():
            if runtime not in RUNTIMES:
                problems.append(f"sets.{precision} has an unknown runtime {runtime!r}")
            elif files is not None and not isinstance(files, dict):
                problems.append(f"sets.{precision}.{runtime} must be an object or null, got {_kind(files)}")
            elif files:
                for stage, name in files.items():
                    record = records.get((name, runtime)) if isinstance(name, str) else None
                    if record is None:
                        problems.append(f"sets.{precision}.{runtime}.{stage} = {name!r} is not a recorded {runtime} "
                                        "artifact")
                    elif record["stage"] != stage:
                        problems.append(f"sets.{precision}.{runtime}.{stage} = {name!r} is recorded as stage "
                                        f"{record['stage']!r}")


def _text_embedder_problems(entry: Any, records: dict, problems: list[str]) -> None:
    if entry is None:
        return
    if not isinstance(entry, dict) or not isinstance(entry.get("graphs"), dict) or not isinstance(
            entry.get("for_sets"), dict):
        problems.append(f"text_embedder must be {{graphs: {{...}}, for_sets: {{...}}, tokenizer: file}}, got {entry!r}")
        return
    names = [(name, "onnx") for name in entry["graphs"].values()] + [(entry.get("tokenizer"), "tokenizers")]
    for name, runtime in names:
        if not isinstance(name, str) or (name, runtime) not in records:
            problems.append(f"text_embedder names {name!r}, which is not a recorded {runtime} artifact")
    for precision, key in entry["for_sets"].items():
        if key not in entry["graphs"]:
            problems.append(f"text_embedder.for_sets.{precision} = {key!r} is not one of its graphs")


def _consistency_problems(data: dict[str, Any], problems: list[str]) -> None:
    """The config, checkpoint and resolution the graphs were built from (``build_inputs``) are the ones
    the manifest states: an edited manifest would otherwise describe graphs it does not hold."""
    built = data.get("build_inputs")
    config, checkpoint = data.get("config"), data.get("checkpoint")
    if not isinstance(built, dict) or not isinstance(config, dict) or not isinstance(checkpoint, dict):
        return
    if "config" in built and json.dumps(built["config"], sort_keys=True) != json.dumps(config, sort_keys=True):
        differing = sorted(k for k in set(built["config"]) | set(config) if built["config"].get(k) != config.get(k))
        problems.append(f"config differs from the one the graphs were built from (fields {differing})")
    if "checkpoint_sha256" in built and built["checkpoint_sha256"] != checkpoint.get("sha256"):
        problems.append("checkpoint.sha256 differs from the checkpoint the graphs were built from")
    resolution = data.get("resolution")
    if resolution is not None and resolution != config.get("resolution"):
        problems.append(f"resolution {resolution!r} differs from config.resolution {config.get('resolution')!r}")


def _family_problems(data: dict[str, Any], problems: list[str]) -> None:
    """An unknown ``family``; for gen2seg: its config, processing entry, stages and sets."""
    family = manifest_family(data)
    if family not in FAMILIES:
        problems.append(f"family must be one of {list(FAMILIES)} (or absent for GenMask), got {family!r}")
    if family != "gen2seg":
        return
    config, processing = data.get("config"), data.get("processing")
    if not isinstance(config, dict):
        return  # reported above
    variant = config.get("variant")
    if config.get("family") != "gen2seg" or variant not in GEN2SEG_STAGES:
        problems.append(f"config must be a gen2seg config (family 'gen2seg', variant one of {sorted(GEN2SEG_STAGES)}), "
                        f"got family {config.get('family')!r}, variant {variant!r}")
        return
    stages = GEN2SEG_STAGES[variant]
    if not isinstance(processing, dict) or processing.get("variant") != variant \
            or not _positive_int(processing.get("size")) or processing.get("size") != config.get("processing_size"):
        problems.append(f"processing must be an object with variant {variant!r} and size = config.processing_size "
                        f"({config.get('processing_size')!r}), got {processing!r}")
    for index, record in enumerate(data.get("artifacts") if isinstance(data.get("artifacts"), list) else []):
        if isinstance(record, dict) and record.get("stage") not in stages:
            problems.append(f"artifacts[{index}].stage {record.get('stage')!r} is not a gen2seg-{variant} stage "
                            f"{list(stages)}")
    for precision, entry in (data.get("sets") if isinstance(data.get("sets"), dict) else {}).items():
        files = entry.get("onnx") if isinstance(entry, dict) else None
        if not isinstance(files, dict) or sorted(files) != sorted(stages):
            problems.append(f"sets.{precision}.onnx must name the stages {list(stages)}, got "
                            f"{sorted(files) if isinstance(files, dict) else files!r}")
        plans = entry.get("tensorrt") if isinstance(entry, dict) else None
        if plans and (not isinstance(plans, dict) or sorted(plans) != sorted(stages)):
            problems.append(f"sets.{precision}.tensorrt must be null or name the stages {list(stages)}, got "
                            f"{sorted(plans) if isinstance(plans, dict) else plans!r}")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", type(None): "null (or missing)",
            bool: "a boolean", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def check_manifest(manifest: Manifest, config: Any = None, checkpoint_sha256: str | None = None,
                   *, check_resolution: bool = False) -> None:
    """Raise ArtifactMismatchError unless the engines were built from ``config`` / this checkpoint.

    The resolution is ignored unless ``check_resolution`` (engines may be exported at another
    resolution than the checkpoint's default, with ``--resolution``); every other config field
    (architecture, embedder, t*, noise seed, mask decoder) must be equal. ``config`` is the family's
    config object (its ``to_json()`` is compared with the manifest's ``config``).
    """
    hint = rebuild_hint(manifest.data, manifest.directory)
    problems = []
    if checkpoint_sha256 is not None and manifest.data["checkpoint"].get("sha256") != checkpoint_sha256:
        problems.append(f"checkpoint sha256 {manifest.data['checkpoint'].get('sha256', '')[:12]}... != "
                        f"{checkpoint_sha256[:12]}...")
    if config is not None:
        built = dict(manifest.data["config"])
        wanted = json.loads(config.to_json())
        if not check_resolution:
            built.pop("resolution", None)
            wanted.pop("resolution", None)
        built = json.loads(json.dumps(built, sort_keys=True))
        differing = sorted(k for k in set(built) | set(wanted) if built.get(k) != wanted.get(k))
        if differing:
            problems.append(f"config fields differ: {differing}")
    if problems:
        raise ArtifactMismatchError(f"engines in {manifest.directory} were built for another model ("
                                    + "; ".join(problems) + f"). {hint}")
