"""The three exported graphs, their signatures, and the dynamo ONNX export.

Graphs (R = engine resolution, h = w = R/8, D = embedder width; B and L are dynamic):

=============  ==========================================  =====================================
stage          inputs                                      outputs
=============  ==========================================  =====================================
vae_encoder    pixels (B, 3, R, R) float32 in [-1, 1]      z_img (B, 16, h, w) float32
dit            z_img (B, 16, h, w) float32,                x0 (B, 16, h, w) float32
               context (B, L, D) float32,
               context_mask (B, L) bool (True = real)
mask_head      latent (B, 16, h, w) float32                logits (B, 1, R, R) float32
=============  ==========================================  =====================================

The DiT graph is ``GenMaskModel.one_step_dit()``: t*, the fixed noise ε* (and x_t* = t*·ε* with
its patch tokens), both frames' time modulation and the RoPE tables are buffers, which the
exporter stores as initialisers — the graph has no timestep input and no Sin/Cos of it.
Export uses ``torch.onnx.export(dynamo=True)`` (the TorchScript exporter fails on
``aten::rms_norm``, DESIGN.md §7) at opset 18 by default (≤ 20 keeps the files loadable by
TensorRT 10.3 on JetPack 6).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from torch import nn

from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ExportError  # noqa: F401  (re-exported)
from genmask_sdk.export.onnx_io import SUPPORTED_OPSETS, check_onnx, check_signature, module_bytes  # noqa: F401
from genmask_sdk.families.genmask.export.options import DEFAULT_OPSET, PRECISIONS, STAGES  # noqa: F401  (re-exported)
from genmask_sdk.export.quiet import quiet_exporter_logs
from genmask_sdk.families.genmask.export.signatures import GraphSignature, signature

BATCH_AXIS, PROMPT_AXIS = "batch", "prompt_tokens"
# Example sizes used for tracing (not 0 or 1, so torch.export keeps the axes symbolic).
_TRACE_BATCH, _TRACE_PROMPT = 2, 5


class DitGraph(nn.Module):
    """Float32 I/O around a ``OneStepDiT`` (whose transformer may be float16: the inputs are cast
    to the weights' dtype inside, residual/norms/modulation stay float32, x0 is cast to float32).

    forward(z_img (B, 16, h, w) f32, context (B, L, D) f32, context_mask (B, L) bool) -> x0 f32.
    """

    def __init__(self, one_step_dit: nn.Module) -> None:
        super().__init__()
        self.dit = one_step_dit

    def forward(self, z_img: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        return self.dit(z_img.float(), context.float(), context_mask).float()


def example_inputs(stage: str, config: GenMaskConfig) -> tuple[torch.Tensor, ...]:
    """Tracing inputs with batch 2 and prompt length 5 (values are irrelevant to the graph)."""
    generator = torch.Generator().manual_seed(0)
    tensors = []
    for spec in signature(stage, config).inputs:
        shape = [_TRACE_BATCH if i == 0 else (_TRACE_PROMPT if d is None else d) for i, d in enumerate(spec.shape)]
        if spec.dtype == "bool":
            tensors.append(torch.ones(shape, dtype=torch.bool))
        else:
            tensors.append(torch.randn(shape, generator=generator).clamp(-1, 1))
    return tuple(tensors)


def _dynamic_shapes(stage: str, config: GenMaskConfig) -> dict[str, dict[int, torch.export.Dim]]:
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=4096)
    prompt = torch.export.Dim(PROMPT_AXIS, min=1, max=4096)
    shapes = {}
    for spec in signature(stage, config).inputs:
        axes = {0: batch}
        if len(spec.shape) > 1 and spec.shape[1] is None:
            axes[1] = prompt
        shapes[spec.name] = axes
    return shapes


def export_graph(module: nn.Module, stage: str, config: GenMaskConfig, path: str | Path, *,
                 opset: int = DEFAULT_OPSET, external_data: bool = False) -> float:
    """Export ``module`` (eval mode) as ``stage``'s graph to ``path``; return the seconds taken.

    Dynamic axes: batch on every input and output, prompt length on the DiT's context inputs.
    Weights go to ``<path>.data`` when ``external_data``. Runs ``onnx.checker`` and checks the
    graph's inputs/outputs against ``signature(stage, config)``; raises ExportError otherwise.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is outside 17..20 (20 is the highest TensorRT 10.3 / JetPack 6 parses).")
    path = Path(path)
    sig = signature(stage, config)
    start = time.perf_counter()
    try:
        with torch.no_grad(), warnings.catch_warnings(), quiet_exporter_logs():
            # Known-harmless exporter chatter: Dim names merged across inputs; torch-internal pytree deprecation.
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            program = torch.onnx.export(
                module.eval(), example_inputs(stage, config), dynamo=True, opset_version=opset,
                input_names=sig.input_names, output_names=sig.output_names,
                dynamic_shapes=_dynamic_shapes(stage, config), verbose=False,
            )
        program.save(str(path), external_data=external_data)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export(dynamo=True) of the {stage} failed: {type(exc).__name__}: {exc}") from exc
    check_onnx(path)
    check_signature(path, sig, stage)
    return time.perf_counter() - start


