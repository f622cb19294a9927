"""Inputs and outputs of the three exported graphs, and the shape profiles a build records for
them: torch-free (``graphs.py`` exports the graphs; ``uptodate.py`` checks a previous build's
profiles without importing torch). The table of signatures is in ``graphs.py``'s docstring.
"""

from __future__ import annotations


from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.export.graph_specs import GraphSignature  # noqa: F401  (re-exported)
from genmask_sdk.runtime.base import TensorSpec
from genmask_sdk.families.genmask.export.options import STAGES


def signature(stage: str, config: GenMaskConfig) -> GraphSignature:
    """The graph signature of ``stage`` for ``config`` (its resolution and embedder width)."""
    r, h = config.resolution, config.latent_size
    z = config.vae.get("z_dim", 16)
    if stage == "vae_encoder":
        return GraphSignature((TensorSpec("pixels", "float32", (None, 3, r, r)),),
                              (TensorSpec("z_img", "float32", (None, z, h, h)),))
    if stage == "dit":
        d = config.embedder.hidden_size
        return GraphSignature(
            (TensorSpec("z_img", "float32", (None, z, h, h)),
             TensorSpec("context", "float32", (None, None, d)),
             TensorSpec("context_mask", "bool", (None, None))),
            (TensorSpec("x0", "float32", (None, z, h, h)),),
        )
    if stage == "mask_head":
        return GraphSignature((TensorSpec("latent", "float32", (None, z, h, h)),),
                              (TensorSpec("logits", "float32", (None, 1, r, r)),))
    raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")


def profiles(stage: str, config: GenMaskConfig, max_batch: int, max_prompt_tokens: int) -> dict[str, list[list[int]]]:
    """(min, opt, max) shapes for each input of ``stage``'s graph: batch 1..max_batch (opt 1),
    prompt length 1..max_prompt_tokens (opt half of it)."""
    ranges = {}
    for spec in signature(stage, config).inputs:
        shapes = []
        for batch, length in ((1, 1), (1, max(1, max_prompt_tokens // 2)), (max_batch, max_prompt_tokens)):
            dims = [batch] + [length if d is None else d for d in spec.shape[1:]]
            shapes.append(dims)
        ranges[spec.name] = shapes
    return ranges
