"""Is a previous build still the one asked for? The family-agnostic parts of the no-op rebuild:
comparing recorded build inputs, checking TensorRT plans against this GPU, and the whole decision for
a manifest whose family records everything in ``build_inputs`` (gen2seg). GenMask's torch-free
pre-check, which decides before even hashing the checkpoint, is ``families/genmask/export/uptodate.py``
and uses the same comparisons. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from genmask_sdk.errors import GenMaskError


def changed_inputs(recorded: Any, inputs: dict[str, Any]) -> list[str]:
    """Keys whose value differs between a manifest's ``build_inputs`` and ``inputs`` (compared as
    JSON, as the manifest stores them); empty when the previous files may be reused."""
    recorded = recorded if isinstance(recorded, dict) else {}
    current = json.loads(json.dumps(inputs))
    return sorted(k for k in set(recorded) | set(current) if recorded.get(k, ...) != current.get(k, ...))


def plans_match_this_gpu(data: dict) -> bool:
    """Whether the recorded plans were built by this TensorRT version on this GPU architecture."""
    from genmask_sdk.export.tensorrt_steps import current_target, plan_target

    current = current_target()
    return all(plan_target(r) == current for r in data["artifacts"] if r.get("runtime") == "tensorrt")


def reusable_files(out: Path, family: str, inputs: dict[str, Any], wanted: Sequence[str], plans: bool) -> list[str] | None:
    """The files of ``out``'s build when it is exactly the one asked for (same ``build_inputs``,
    the same sets, TensorRT plans present iff they would be built now and made on this GPU, every
    file's sha256 verified), else None."""
    from genmask_sdk.runtime.manifest import load_manifest

    try:
        manifest = load_manifest(out, verify=True, family=family)
    except GenMaskError:
        return None
    data = manifest.data
    if changed_inputs(data.get("build_inputs"), inputs) or sorted(data.get("sets", {})) != sorted(wanted):
        return None
    if bool((data.get("tensorrt") or {}).get("built")) != plans:
        return None
    if plans and not plans_match_this_gpu(data):
        return None
    return [r["file"] for r in data["artifacts"]]
