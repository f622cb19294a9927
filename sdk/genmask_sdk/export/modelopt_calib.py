"""Calibrate Linear and Conv2d layers in PyTorch with NVIDIA Model Optimizer (``nvidia-modelopt``).

``calibrate`` is the general step (any float32 module, any ``module_config``); ``calibrate_dit``
is GenMask's DiT recipe below; gen2seg's UNet/ViT recipe is in ``families/gen2seg/export/quant.py``.

``calibrate_dit`` inserts Model Optimizer's quantizers into a *tensor-sharing copy* of the one-step
DiT (new module objects, the very same weight tensors: the caller's model is never modified and no
weight is duplicated), runs the calibration feeds through it one sample at a time with a progress
bar, and reads back what Model Optimizer calibrated:

* INT8: per-tensor activation ``amax`` and per-output-channel weight ``amax`` (``axis=0``), max
  calibration (``mtq`` ``algorithm="max"``), symmetric — TensorRT's explicit-quantization recipe;
* FP8 (E4M3): per-tensor activation and weight ``amax`` (Model Optimizer's ``FP8_DEFAULT_CFG``).

Which Linear layers are quantized: those inside the transformer blocks (q/k/v/out projections of
self- and cross-attention, the FFN), except the first and last ``keep_blocks`` blocks. Kept in
float32 everywhere: the patch embedding, the text and time embedders (``condition_embedder``),
``norm_out``/``proj_out`` and the attention score/value products (activation × activation).

Model Optimizer's own ONNX route cannot be used for this model: ``torch.onnx.export(dynamo=False)``
fails on Wan's ``aten::rms_norm``, and ``dynamo=True`` cannot trace Model Optimizer's quantizers
(data-dependent ``amax`` checks; both measured with torch 2.13 / modelopt 0.47). So the calibrated
numbers are written as Q/DQ nodes into our dynamo fp32 graph by ``qdq.py`` — the narrowest part
done outside Model Optimizer. ``fake_quant_forward`` runs Model Optimizer's simulated quantization
itself, so the Q/DQ graph can be checked against it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from genmask_sdk.errors import ConfigError

QUANT_MODES = ("int8", "fp8")
#: Modules never quantized (float32 in every quantized graph), matched as path fragments.
KEPT_MODULES = ("patch_embedding", "condition_embedder", "norm_out", "proj_out")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
#: Model Optimizer's names of the module classes whose quantizers are enabled (``parent_class``).
QUANTIZED_CLASSES = ("nn.Linear", "nn.Conv2d")
#: ``num_bits`` of Model Optimizer's quantizer config per mode (FP8 E4M3 = (exponent, mantissa) bits).
NUM_BITS = {"int8": 8, "fp8": (4, 3)}


@dataclass(frozen=True)
class LayerQuant:
    """What Model Optimizer calibrated for one ``nn.Linear`` or ``nn.Conv2d`` (``module`` is its
    path from the exported module's root, e.g. ``dit.transformer.blocks.3.attn1.to_q`` — the
    exporter's name scope).

    ``input_amax``: float, largest |activation| seen; ``weight_amax``: float32 (out_channels,)
    per output channel (INT8) or shape (1,) per tensor (FP8); ``weight``: float32, the layer's
    weight as quantized: Linear (out, in), Conv2d (out, in, kh, kw).
    """

    module: str
    input_amax: float
    weight_amax: np.ndarray
    weight: np.ndarray

    @property
    def kind(self) -> str:
        """``"linear"`` or ``"conv"`` (from the weight's rank)."""
        return "conv" if self.weight.ndim == 4 else "linear"


def modelopt_version() -> str:
    from importlib import metadata

    return metadata.version("nvidia-modelopt")


def import_mtq():
    """``modelopt.torch.quantization`` or a ConfigError saying how to install it."""
    try:
        import warnings

        with warnings.catch_warnings():  # import-time chatter: untested transformers version, torch.jit deprecation
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            import modelopt.torch.quantization as mtq
    except ImportError as exc:
        raise ConfigError(
            "INT8/FP8 engines are calibrated with NVIDIA Model Optimizer, which is not installed: "
            "pip install 'genmask-sdk[export]' (or pip install nvidia-modelopt)."
        ) from exc
    return mtq


def quantized_block_ids(num_layers: int, keep_blocks: int) -> list[int]:
    """Transformer blocks whose Linear layers are quantized (all but the first and last ``keep_blocks``)."""
    if keep_blocks < 0:
        raise ConfigError(f"keep_blocks must be >= 0, got {keep_blocks}.")
    kept = set(range(keep_blocks)) | set(range(num_layers - keep_blocks, num_layers))
    blocks = [i for i in range(num_layers) if i not in kept]
    if not blocks:
        raise ConfigError(
            f"no block is left to quantize: the DiT has {num_layers} blocks and the first and last {keep_blocks} "
            "stay in higher precision. Lower --int8-keep-blocks (0 quantizes every block) or skip int8/fp8."
        )
    return blocks


def quant_config(mode: str, blocks: Iterable[int]) -> dict:
    """Model Optimizer config of the DiT: the Linear layers of transformer ``blocks`` on, except
    ``KEPT_MODULES``."""
    return module_config(mode, [f"*.blocks.{block}.*" for block in blocks], KEPT_MODULES)


def module_config(mode: str, include: Iterable[str], exclude: Iterable[str] = ()) -> dict:
    """Model Optimizer config: every quantizer off, then the weight and input quantizers of the
    Linear and Conv2d modules (``QUANTIZED_CLASSES``) matching the ``include`` wildcards on (INT8 weights per output channel, ``axis=0``; FP8 per
    tensor), then those whose path contains an ``exclude`` fragment off again. Max calibration."""
    if mode not in QUANT_MODES:
        raise ConfigError(f"quantization mode must be one of {QUANT_MODES}, got {mode!r}.")
    bits = NUM_BITS[mode]
    weight_axis = 0 if mode == "int8" else None
    entries: list[dict] = [{"quantizer_name": "*", "enable": False}]
    for pattern in include:
        for parent in QUANTIZED_CLASSES:  # not the norms' input quantizers, which a wildcard alone would enable
            entries.append({"quantizer_name": f"{pattern}weight_quantizer", "parent_class": parent,
                            "cfg": {"num_bits": bits, "axis": weight_axis}})
            entries.append({"quantizer_name": f"{pattern}input_quantizer", "parent_class": parent,
                            "cfg": {"num_bits": bits, "axis": None}})
    for fragment in exclude:
        entries.append({"quantizer_name": f"*{fragment}*", "enable": False})
    return {"quant_cfg": entries, "algorithm": "max"}


def sharing_copy(module):
    """A deep copy of ``module`` whose parameters and buffers are the original tensors (no weight
    is copied; only module objects are new), so inserting quantizers leaves ``module`` untouched."""
    memo = {id(t): t for t in list(module.parameters()) + list(module.buffers())}
    return copy.deepcopy(module, memo)


def calibrate_dit(dit_graph, feeds: Sequence[dict[str, np.ndarray]], *, mode: str, num_layers: int,
                  keep_blocks: int = 1, progress: bool = True) -> tuple[list[LayerQuant], object]:
    """Calibrate ``dit_graph`` (a float32 ``DitGraph``, eval mode) on ``feeds``.

    ``feeds``: ``{"z_img": (1, 16, h, w) f32, "context": (1, L, D) f32, "context_mask": (1, L) bool}``
    per sample. Returns ``(quantized layers, the fake-quantized copy)``; the copy runs Model
    Optimizer's simulated quantization (``fake_quant_forward``). Raises ConfigError (no feeds,
    nothing to quantize, Model Optimizer missing).
    """
    config = quant_config(mode, quantized_block_ids(num_layers, keep_blocks))
    inputs = [tuple(feed[k] for k in DIT_INPUTS) for feed in feeds]
    return calibrate(dit_graph, inputs, config, mode=mode, progress=progress)


#: The DiT graph's inputs, in ``DitGraph.forward`` order.
DIT_INPUTS = ("z_img", "context", "context_mask")


def calibrate(module, inputs: Sequence[tuple[np.ndarray, ...]], config: dict, *, mode: str,
              progress: bool = True) -> tuple[list[LayerQuant], object]:
    """Max-calibrate ``module`` (float32, eval mode; left unmodified) with Model Optimizer's
    ``config`` (``module_config``), running ``module(*sample)`` for each sample of ``inputs``
    (numpy arrays, one sample at a time, with a progress bar). Returns ``(calibrated layers, the
    fake-quantized tensor-sharing copy)``. Raises ConfigError (no inputs, nothing calibrated, Model
    Optimizer missing, a quantized module that is neither Linear nor Conv2d)."""
    import torch
    from tqdm.auto import tqdm

    if not inputs:
        raise ConfigError(f"{mode.upper()} calibration needs at least one sample.")
    mtq = import_mtq()
    quantized = sharing_copy(module).eval()

    def forward_loop(model) -> None:
        with torch.no_grad():
            for sample in tqdm(inputs, desc=f"{mode} calibration (Model Optimizer)", unit="sample", disable=not progress):
                model(*(torch.from_numpy(np.ascontiguousarray(x)) for x in sample))

    with _quiet_modelopt():
        quantized = mtq.quantize(quantized, config, forward_loop)
    return layer_quants(quantized, mode), quantized


def layer_quants(quantized, mode: str) -> list[LayerQuant]:
    """The calibrated Linear and Conv2d layers of a Model Optimizer-quantized module, in module order."""
    out = []
    for name, module in quantized.named_modules():
        wq, iq = getattr(module, "weight_quantizer", None), getattr(module, "input_quantizer", None)
        if wq is None or iq is None or not (wq.is_enabled and iq.is_enabled):
            continue
        if module.weight.dim() not in (2, 4):
            raise ConfigError(f"{name}: only Linear and Conv2d layers are quantized, got a weight of shape "
                              f"{tuple(module.weight.shape)}.")
        if iq.amax is None or wq.amax is None:
            continue  # never ran during calibration (not part of the one-step graph)
        out.append(LayerQuant(
            module=name, input_amax=float(iq.amax.detach().float().max()),
            weight_amax=wq.amax.detach().float().reshape(-1).cpu().numpy().astype(np.float32),
            weight=module.weight.detach().float().cpu().numpy()))
    if not out:
        raise ConfigError(f"Model Optimizer calibrated no Linear or Conv2d layer for {mode}; nothing to quantize.")
    return out


def fake_quant_forward(quantized, feed: dict[str, np.ndarray] | Sequence[np.ndarray]) -> np.ndarray:
    """Model Optimizer's simulated-quantization output (float32) for one feed: a DiT feed dict
    (``DIT_INPUTS``) or the module's positional inputs."""
    import torch

    arrays = [feed[k] for k in DIT_INPUTS] if isinstance(feed, dict) else list(feed)
    with torch.no_grad():
        out = quantized(*(torch.from_numpy(np.ascontiguousarray(x)) for x in arrays))
    return out.float().numpy()


def _quiet_modelopt() -> contextlib.AbstractContextManager:
    """Silence Model Optimizer's prints ("Inserted N quantizers") for the duration."""
    return contextlib.redirect_stdout(io.StringIO())


def module_of(scopes: Sequence[str], names: set[str]) -> str | None:
    """The quantized module a node belongs to, from the exporter's name scopes (longest match)."""
    matches = [s for s in scopes if s in names]
    return max(matches, key=len) if matches else None


def block_of(module: str) -> int | None:
    """The transformer block index in a module or quantizer path (``...blocks.3.attn1...`` -> 3), else None."""
    match = _BLOCK.search(module + ".")
    return int(match.group(1)) if match else None


__all__ = ["DIT_INPUTS", "KEPT_MODULES", "LayerQuant", "QUANT_MODES", "block_of", "calibrate", "calibrate_dit",
           "fake_quant_forward", "import_mtq", "layer_quants", "modelopt_version", "module_config", "quant_config",
           "quantized_block_ids", "sharing_copy"]
