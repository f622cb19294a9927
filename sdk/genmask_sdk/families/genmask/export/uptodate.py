"""Is a rebuild a no-op? Decided without importing torch, diffusers, transformers or onnx.

``python export/build_engines.py`` and ``genmask build`` ask ``up_to_date`` before importing the
exporter (``pipeline.py``, whose imports alone take seconds), and ``build_engines`` asks it too.
It answers with a ``BuildResult`` (nothing built, every file reused, the manifest left untouched)
only when the full build would reuse every file and write the same manifest but for its
``created`` time:

* not ``force``; the checkpoint is ``"demo"`` or a local directory (a hub id: the full build);
* it holds the build lock (``staging.BuildLock``) and no other build's staging or set-aside
  folder is there (the full build repairs those);
* the manifest is valid, of this format and SDK, and its ``build_inputs`` equal this run's
  (``options.build_inputs``: checkpoint hash, config, export options, tool versions);
* it has the requested sets in the requested order, no more and no fewer files, the same
  ``max_batch``, ``max_prompt_tokens`` and shape profiles, the same checkpoint source and tool
  versions, and the text embedder exactly where the build would write it;
* no TensorRT plan to build or reuse: ``--tensorrt off``, or ``auto`` where the ``tensorrt``
  module is not installed, and the manifest says the same (reason and trtexec commands);
* every file the manifest lists verifies (size and sha256).

Anything else, or any doubt (an unreadable file, a user error), answers None and the full build
(``pipeline.py``) runs, which decides file by file and reports user errors.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Callable

from genmask_sdk.families.genmask.checkpoints import local_checkpoint
from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import GenMaskError
from genmask_sdk.families.genmask.export import signatures
from genmask_sdk.export.manifest import (
    MANIFEST_NAME,
    Manifest,
    checkpoint_sha256,
    load_manifest,
    tool_versions,
    verify_files,
)
from genmask_sdk.families.genmask.export.options import (
    CPU_SETS,
    CPU_TIMED_SETS,
    EMBEDDER_PRECISION,
    SETS,
    STAGES,
    BuildOptions,
    BuildResult,
    build_inputs,
    changed_inputs,
    checkpoint_entry,
    default_out,
    onnx_set,
)
from genmask_sdk.export.staging import BuildLock, BuildLockedError, build_leftovers
from genmask_sdk.export.tensorrt_steps import availability, log_skipped, skipped_summary


def print_line(line: str) -> None:
    """Where build progress goes by default."""
    print(f"[build_engines] {line}", flush=True)


def up_to_date(checkpoint: str | Path, out: str | Path | None, opts: BuildOptions, *,
               log: Callable[[str], None] | None = None, started: float | None = None) -> BuildResult | None:
    """The result of a rebuild that would change nothing (see the module docstring), logged like the
    full build's reuse; None when the full build must run.

    ``out`` defaults to ``engines/<checkpoint name>``; ``started`` is the ``time.perf_counter()``
    the reported time counts from (default: now). Raises BuildLockedError when another build into
    ``out`` is running (as the full build would).
    """
    start = time.perf_counter() if started is None else started
    log = log or print_line
    directory = local_checkpoint(checkpoint)
    out = Path(out) if out is not None else default_out(checkpoint)
    if opts.force or directory is None or not (out / MANIFEST_NAME).is_file():
        return None
    try:
        with BuildLock(out):
            manifest = None if build_leftovers(out) else _unchanged_build(str(checkpoint), directory, out, opts)
    except BuildLockedError:
        raise
    except (GenMaskError, OSError, ValueError, KeyError, TypeError):  # doubt: the full build decides and reports
        return None
    if manifest is None:
        return None
    reused = [a["file"] for a in manifest.artifacts if a["runtime"] != "tokenizers"]  # as the full build counts
    for name in reused:
        log(f"reused {name} (same checkpoint, config and options; sha256 verified)")
    log_skipped(manifest.data["tensorrt"], out, log)
    seconds = time.perf_counter() - start
    log(f"done in {seconds:.1f} s: {out / MANIFEST_NAME} (built 0, reused {len(reused)}; manifest unchanged)")
    return BuildResult(out, manifest, [], reused, seconds)


def _unchanged_build(source: str, directory: Path, out: Path, opts: BuildOptions) -> Manifest | None:
    """The verified manifest in ``out`` if the full build would rewrite it unchanged, else None.
    Cheap checks first; the checkpoint and the engine files are hashed last."""
    manifest = load_manifest(out, verify=False)  # schema, containment, format and SDK major version
    data = manifest.data
    config = opts.engine_config(GenMaskConfig.load(directory))
    recorded = data.get("build_inputs")
    if not isinstance(recorded, dict) or not _same_layout(data, config, opts) or not _same_tools_no_plans(data, opts):
        return None
    if changed_inputs(recorded, build_inputs(str(recorded.get("checkpoint_sha256")), config, opts)):
        return None  # decided before hashing the checkpoint
    sha256 = checkpoint_sha256(directory)
    if data["checkpoint"] != checkpoint_entry(source, directory, sha256) \
            or changed_inputs(recorded, build_inputs(sha256, config, opts)):
        return None
    verify_files(manifest)  # raises on a missing or changed file
    return manifest


def _same_layout(data: dict[str, Any], config: GenMaskConfig, opts: BuildOptions) -> bool:
    """Sets, files, shapes and text embedder are the ones this build would record."""
    prompt_tokens = opts.prompt_tokens(config)
    sets = {p: {"onnx": onnx_set(p), "tensorrt": None} for p in opts.precisions}
    if list(data["sets"]) != list(sets) or data["sets"] != sets \
            or data["max_batch"] != opts.max_batch or data.get("max_prompt_tokens") != prompt_tokens:
        return False
    artifacts = sorted((a["stage"], a["precision"], a["runtime"]) for a in data["artifacts"])
    if artifacts != _expected_artifacts(config, opts):
        return False
    timed = opts.cpu_timing and any(p in CPU_TIMED_SETS for p in opts.precisions)
    if timed != bool(data.get("cpu_timing")):  # CPU timing asked for and missing, or the reverse
        return False
    if any(a.get("profiles") != signatures.profiles(a["stage"], config, opts.max_batch, prompt_tokens)
           for a in _graphs(data)):
        return False
    return _same_text_embedder(data, config, opts)


def _graphs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the stage graphs (not the text embedder's files)."""
    return [a for a in data["artifacts"] if a["stage"] in STAGES]


def _expected_artifacts(config: GenMaskConfig, opts: BuildOptions) -> list[tuple[str, str, str]]:
    """(stage, precision, runtime) of every file the build would list."""
    keys = {(stage, p, "onnx") for q in opts.precisions for stage, p in SETS[q].items()}
    if opts.exports_text_embedder(config):
        keys |= {("embedder", p, "onnx") for p in opts.embedder_precisions()} | {("tokenizer", "all", "tokenizers")}
    return sorted(keys)


def _same_text_embedder(data: dict[str, Any], config: GenMaskConfig, opts: BuildOptions) -> bool:
    entry = data.get("text_embedder")
    if not opts.exports_text_embedder(config):
        return entry is None and data.get("embedder_runtime") == "torch"
    return (data.get("embedder_runtime") == "onnx" and isinstance(entry, dict)
            and list(entry.get("graphs") or {}) == opts.embedder_precisions()
            and entry.get("for_sets") == {p: EMBEDDER_PRECISION[p] for p in opts.precisions})


def _same_tools_no_plans(data: dict[str, Any], opts: BuildOptions) -> bool:
    """Same tool versions, and no TensorRT plan to build or reuse: the manifest's ``tensorrt`` entry
    is the one this build would write (why plans were skipped, the trtexec commands)."""
    if opts.tensorrt == "on" or (opts.tensorrt == "auto" and _tensorrt_installed()):
        return False  # plans may be built or reused: the full build decides
    _, reason = availability(opts.tensorrt)
    # the graphs TensorRT would get: the CPU sets (int8-dynamic) never have plans (tensorrt_step.py)
    planned = [a for a in _graphs(data) if a["precision"] not in CPU_SETS]
    summary = skipped_summary(reason, planned, opts.workspace_gib)
    return data["tools"] == tool_versions() and data.get("tensorrt") == summary


def _tensorrt_installed() -> bool:
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):  # a broken or odd installation: let the full build look
        return True
