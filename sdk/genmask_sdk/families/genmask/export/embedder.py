"""The MiniLM text embedder as ONNX graphs (fp32, fp16) plus its ``tokenizer.json``.

``embedder.fp32.onnx``: ``torch.onnx.export(dynamo=True)`` of the BERT encoder (what
``MiniLMEmbedder`` runs), inputs ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (B, L)
int64, output ``states`` (B, L, 384) float32 (= ``last_hidden_state``).
``embedder.fp16.onnx``: ONNX Runtime's float16 converter over the fp32 graph with LayerNorm,
Softmax and residual Adds kept in float32, float32 I/O.
Both are checked against the PyTorch embedder on the build's check prompts (states max |Δ|).
(optimum-onnx 0.1.0 pins transformers < 4.58, so the export uses torch.onnx like the other stages.)
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import torch
from torch import nn

from genmask_sdk.families.genmask.export.graphs import ExportError
from genmask_sdk.export.onnx_io import save_onnx
from genmask_sdk.export.quiet import quiet_exporter_logs

#: precision -> (atol, rtol) of the states check.
EMBEDDER_TOLERANCES = {"fp32": (1e-4, 1e-4), "fp16": (2e-2, 2e-2)}
EMBEDDER_FP32_OPS = ("LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Div", "Add", "Sub", "Softmax", "Erf")
TOKENIZER_FILE = "tokenizer.json"


class _StatesGraph(nn.Module):
    """BERT encoder -> last_hidden_state as float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state.float()


def embedder_file(precision: str) -> str:
    return f"embedder.{precision}.onnx"


def tokenizer_source(embedder) -> Path:
    """The ``tokenizer.json`` of a ``MiniLMEmbedder``'s checkpoint directory."""
    path = Path(getattr(embedder.tokenizer, "name_or_path", "")) / TOKENIZER_FILE
    if not path.is_file():
        raise ExportError(f"the MiniLM tokenizer has no {TOKENIZER_FILE} at {path}; the engines' text embedder needs "
                          "the fast tokenizer's JSON file (sentence-transformers checkpoints ship it).")
    return path


def copy_tokenizer(embedder, directory: Path) -> Path:
    target = Path(directory) / TOKENIZER_FILE
    shutil.copyfile(tokenizer_source(embedder), target)
    return target


def export_embedder_fp32(embedder, path: Path, opset: int) -> dict:
    """Trace the MiniLM encoder to ``path`` with dynamic batch and length; return details."""
    import warnings

    model = _StatesGraph(embedder.model.float().eval())
    ids = torch.tensor([[101, 2003, 2417, 102, 0], [101, 7592, 2417, 3392, 102]], dtype=torch.long)
    mask = (ids != 0).long()
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("tokens", min=2, max=512)
    dims = {"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length},
            "token_type_ids": {0: batch, 1: length}}
    start = time.perf_counter()
    with warnings.catch_warnings(), quiet_exporter_logs():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (ids, mask, torch.zeros_like(ids)), dynamo=True, opset_version=opset,
                                    input_names=["input_ids", "attention_mask", "token_type_ids"],
                                    output_names=["states"], dynamic_shapes=dims, verbose=False)
    if program is None:
        raise ExportError("torch.onnx.export returned no program for the MiniLM embedder.")
    program.save(str(path), external_data=False)
    return {"method": "torch.onnx.export(dynamo=True) of the MiniLM encoder, float32",
            "trace_seconds": round(time.perf_counter() - start, 2)}


def convert_embedder_fp16(src: Path, dst: Path) -> dict:
    """fp32 embedder graph -> mixed fp16 (norms, softmax, residual adds and GELU in fp32; fp32 I/O)."""
    from genmask_sdk.export.fp16 import convert_to_fp16

    convert_to_fp16(onnx.load(str(src)), dst, external_data=False, keep_fp32_ops=EMBEDDER_FP32_OPS)
    return {"method": "onnxruntime convert_float_to_float16(keep_io_types=True), MatMuls in fp16, "
                      "LayerNorm/Softmax/residual Add/GELU kept fp32", "fp32_op_types": list(EMBEDDER_FP32_OPS)}


def check_embedder(path: Path, tokenizer_file: Path, embedder, prompts: Sequence[str], precision: str):
    """States of the ONNX embedder (ONNX Runtime CPU + ``tokenizers``) vs the PyTorch embedder on
    ``prompts``; raise FidelityError past the tolerance. Returns (the fidelity record, the ONNX
    embedder's ``HostEmbedding`` of ``prompts``)."""
    from genmask_sdk.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from genmask_sdk.families.genmask.text_embedder import OnnxTextEmbedder
    from genmask_sdk.export.fidelity import FidelityError

    with OnnxRuntimeRunner(path, provider="cpu") as runner:
        ours = OnnxTextEmbedder(runner, tokenizer_file, embedder.hidden_size, embedder.prompt_template,
                                embedder.max_prompt_tokens).encode_prompts(None, list(prompts))
    with torch.no_grad():
        reference = embedder(None, list(prompts))
    ref_states, ref_mask = reference.states.cpu().numpy(), reference.mask.cpu().numpy()
    if ours.states.shape != ref_states.shape or not np.array_equal(ours.mask, ref_mask):
        raise FidelityError(f"{path.name}: the tokenizer.json tokenisation differs from the PyTorch embedder's "
                            f"(shapes {ours.states.shape} vs {ref_states.shape}); the engines cannot be trusted.")
    error = float(np.abs(ours.states - ref_states).max())
    atol, rtol = EMBEDDER_TOLERANCES[precision]
    tolerance = atol + rtol * float(np.abs(ref_states).max())
    record = {"reference": "pytorch float32 MiniLMEmbedder", "runtime": "onnxruntime cpu + tokenizers",
              "samples": len(prompts), "max_abs_error": error, "tolerance": tolerance,
              "tokens_equal": True}
    if not np.isfinite(ours.states).all() or error > tolerance:
        raise FidelityError(f"{path.name}: max |states - torch| = {error:.4g} exceeds the {precision} tolerance "
                            f"{tolerance:.4g}; the file is not kept.")
    return record, ours
