"""``engines/<name>/manifest.json``: what was built, from what, with which tools, and how faithful.

Schema (format_version 1; every path is relative to the engines directory)::

    {
      "format_version": 1,
      "sdk_version": "0.2.0",
      "created": "2026-11-22T10:00:00Z",
      "config": {...GenMaskConfig.to_dict() as exported, resolution included...},
      "checkpoint": {"source": "demo", "path": "/abs/checkpoint/dir", "sha256": "<hex>"},
      "resolution": 128, "max_batch": 8, "max_prompt_tokens": 32,
      "build_inputs": {...everything the ONNX files depend on; equal -> files are reused...},
      "tools": {"torch": "2.13.0", "diffusers": "0.42.1", "onnx": "1.23.2", "onnxruntime": "1.31.1",
                "onnxscript": "0.5.0", "tensorrt": null},
      "tensorrt": {"built": false, "reason": "...", "trtexec": {"dit.fp16.onnx": "trtexec ..."}},
      "artifacts": [
        {"stage": "dit", "precision": "fp16", "runtime": "onnx", "file": "dit.fp16.onnx",
         "sha256": "<hex>", "bytes": 123, "external_data": [{"file": "dit.fp16.onnx.data", "sha256": ..., "bytes": ...}],
         "inputs": [{"name": "z_img", "dtype": "float32", "shape": [null, 16, 16, 16]}, ...],
         "outputs": [{"name": "x0", "dtype": "float32", "shape": [null, 16, 16, 16]}],
         "profiles": {"z_img": [[1, 16, 16, 16], [1, 16, 16, 16], [8, 16, 16, 16]], ...},
         "opset": 18, "export_seconds": 11.2, "details": {...precision method...},
         "graph": {"ops": {"MatMul": 31, ...}, "folded": [...]},
         "fidelity": {"max_abs_error": 7e-4, "mask_iou_mean": 0.998, ...}},
        {"stage": "dit", "precision": "fp16", "runtime": "tensorrt", "file": "dit.fp16.plan",
         "source": "dit.fp16.onnx", "tensorrt_version": "10.13.3.9", "compute_capability": [8, 7], ...}
      ],
      "sets": {"fp16": {"onnx": {"vae_encoder": "vae_encoder.fp16.onnx", "dit": "dit.fp16.onnx",
                                 "mask_head": "mask_head.fp32.onnx"},
                        "tensorrt": null}}
    }
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from dataclasses import dataclass, field
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError
from genmask_sdk.io import atomic_write_text, sha256_file

# Reading (schema, containment, checksums) lives in the runtime, which serves engines without this package.
from genmask_sdk.runtime.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    check_manifest,
    load_manifest,
    read_manifest,
    rebuild_hint,
    verify_files,
)


def checkpoint_sha256(directory: str | Path) -> str:
    """SHA-256 over a checkpoint directory: for each file (sorted by relative POSIX path, hidden
    files and folders skipped, symlinks followed) its path, size and content."""
    root = Path(directory)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ArtifactNotFoundError(f"checkpoint directory {root} holds no files.")
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def state_sha256(model) -> str:
    """SHA-256 of an in-memory model (any family): its ``config.to_json()``, its ``scheduler_config``
    when it has one, and every tensor of its state dict (plus ``empty_prompt_embedding`` when it has
    one) by name, dtype, shape and bytes. What the manifest records for a model given as an object."""
    import torch  # only for in-memory models, which are torch modules

    digest = hashlib.sha256(model.config.to_json().encode())
    if hasattr(model, "scheduler_config"):
        digest.update(json.dumps(model.scheduler_config, sort_keys=True).encode())
    tensors = dict(model.state_dict())
    if hasattr(model, "empty_prompt_embedding"):
        tensors["empty_prompt_embedding"] = model.empty_prompt_embedding
    for name, tensor in sorted(tensors.items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def tool_versions() -> dict[str, str | None]:
    """Versions of the tools that shape the artefacts (``tensorrt`` is None when not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in ("torch", "diffusers", "onnx", "onnxruntime", "onnxscript", "nvidia-modelopt", "tensorrt"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions["onnxruntime"] is None:  # the GPU wheel has another distribution name
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def file_record(path: Path) -> dict[str, Any]:
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_manifest(directory: Path, data: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (temp file, then rename)."""
    path = Path(directory) / MANIFEST_NAME
    atomic_write_text(path, _dumps(data) + "\n")
    return path


_FLAT_LIST = re.compile(r"\[\n\s*((?:-?[0-9.eE+-]+|null|true|false)(?:,\s*(?:-?[0-9.eE+-]+|null|true|false))*)\s*\]")


def _dumps(data: dict[str, Any]) -> str:
    """Indented JSON with lists of numbers (shapes) kept on one line."""
    text = json.dumps(data, indent=2)
    return _FLAT_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


@dataclass
class BuildResult:
    """What ``build_engines`` did: the loaded manifest and which files were built or reused."""

    directory: Path
    manifest: Manifest
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0


def checkpoint_entry(source: str, directory: Path | None, sha256: str) -> dict[str, Any]:
    """The manifest's ``checkpoint``: what was asked for, the directory read (None: in memory), its hash."""
    return {"source": source, "path": str(directory) if directory else None, "sha256": sha256}


def default_out(checkpoint: str | Path) -> Path:
    """``engines/<checkpoint name>`` under the working directory."""
    name = Path(str(checkpoint).rstrip("/")).name or "model"
    return Path("engines") / name
