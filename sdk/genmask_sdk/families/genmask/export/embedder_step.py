"""The build step that writes the text embedder as engines (MiniLM only): ``embedder.fp32.onnx``,
``embedder.fp16.onnx`` and ``tokenizer.json``, with manifest records and fidelity.

Each set uses the embedder of its precision (fp16 set -> fp16 embedder; fp32 and int8 sets -> fp32).
Qwen2.5-VL-conditioned engines have no embedder graph yet: that stage stays in PyTorch (the manifest
says so in ``embedder_runtime``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from genmask_sdk.families.genmask.export.embedder import (
    TOKENIZER_FILE,
    check_embedder,
    convert_embedder_fp16,
    copy_tokenizer,
    embedder_file,
    export_embedder_fp32,
)
from genmask_sdk.export.manifest import file_record
from genmask_sdk.export.onnx_io import io_specs, op_counts
from genmask_sdk.families.genmask.export.options import EMBEDDER_PRECISION


class EmbedderStep:
    """Export, check and record the embedder engines of one build (``_Build`` calls ``run``)."""

    def __init__(self, build) -> None:
        self.build = build
        self.records: dict[str, dict[str, Any]] = {}  # precision -> record; "tokenizer" -> record

    @property
    def applies(self) -> bool:
        return self.build.opts.exports_text_embedder(self.build.config)

    def precisions(self) -> list[str]:
        return self.build.opts.embedder_precisions()  # fp32 first: the fp16 graph is converted from it

    def run(self, previous) -> None:
        if not self.applies:
            return
        build = self.build
        embedder = build.model.embedder
        tokenizer = self._tokenizer(previous, embedder)
        for precision in self.precisions():
            name = embedder_file(precision)
            old = build.reusable(previous, "embedder", precision, "onnx")
            if old is not None:
                build.log(f"reused {name} (same checkpoint, config and options; sha256 verified)")
                self.records[precision] = old
                build.reused.append(name)
                continue
            build.log(f"exporting {name}")
            start = time.perf_counter()
            path = build.staging.path(name)
            if precision == "fp32":
                details = export_embedder_fp32(embedder, path, build.opts.opset)
            else:
                details = convert_embedder_fp16(self._fp32_source(embedder), path)
            seconds = time.perf_counter() - start
            fidelity = self._fidelity(path, tokenizer, embedder, precision)
            inputs, outputs = io_specs(path)
            self.records[precision] = {
                "stage": "embedder", "precision": precision, "runtime": "onnx", **file_record(path),
                "external_data": [], "inputs": [s.to_json() for s in inputs], "outputs": [s.to_json() for s in outputs],
                "opset": build.opts.opset, "export_seconds": round(seconds, 2), "details": details,
                "graph": {"ops": op_counts(path)}, "fidelity": fidelity}
            build.staged.append(name)
            build.built.append(name)
            build.log(f"{name}: {seconds:.1f} s, max |states - torch| {fidelity['max_abs_error']:.3g}, "
                      f"mask IoU pooled {fidelity['mask_iou_pooled']:.4f}")

    def _fp32_source(self, embedder):
        """The fp32 graph the fp16 one is converted from: this build's (built into the staging folder,
        or reused and verified in the engines directory), else exported now as an intermediate that
        is not kept. ``precisions()`` puts fp32 first, so it is in ``records`` whenever it is wanted."""
        build = self.build
        name = embedder_file("fp32")
        if "fp32" in self.records:
            staged = build.staging.path(name)
            return staged if staged.is_file() else build.out / name
        source = build.staging.path(name)
        export_embedder_fp32(embedder, source, build.opts.opset)
        return source

    def _tokenizer(self, previous, embedder):
        build = self.build
        old = build.reusable(previous, "tokenizer", "all", "tokenizers")
        if old is not None:
            self.records["tokenizer"] = old
            return build.out / TOKENIZER_FILE
        path = copy_tokenizer(embedder, build.staging.root)
        self.records["tokenizer"] = {"stage": "tokenizer", "precision": "all", "runtime": "tokenizers",
                                     **file_record(path), "external_data": [],
                                     "fidelity": {"checked": "token ids equal the PyTorch tokenizer's on the check "
                                                             "prompts (see the embedder records)"}}
        build.staged.append(TOKENIZER_FILE)
        return path

    def _fidelity(self, path, tokenizer, embedder, precision: str) -> dict:
        """States vs the PyTorch embedder, and the masks they give through the PyTorch DiT and mask
        decoder against the reference masks (which used the PyTorch embedder's states)."""
        from genmask_sdk.export.fidelity import mask_iou

        build = self.build
        ref = build.reference()
        record, ours = check_embedder(path, tokenizer, embedder, ref.feeds.prompts, precision)
        with torch.no_grad():
            x0 = build.model.one_step_dit()(ref.feeds.z_img, torch.from_numpy(ours.states), torch.from_numpy(ours.mask))
            logits = build.model.decode_mask(x0).float().numpy()
        reference = ref.logits.numpy()
        record.update(mask_iou_pooled=mask_iou(logits > 0, reference > 0),
                      mask_iou_mean=float(np.mean([mask_iou(a > 0, b > 0) for a, b in zip(logits, reference)])),
                      logits_max_abs_error=float(np.abs(logits - reference).max()))
        return record

    def manifest_entry(self) -> dict[str, Any] | None:
        """The manifest's ``text_embedder``: tokenizer file, graph per precision, and which graph
        each precision set uses (None when no embedder engine was built)."""
        graphs = {p: r["file"] for p, r in self.records.items() if p != "tokenizer"}
        if not graphs:
            return None
        return {"kind": "minilm", "runtime": "onnx", "tokenizer": TOKENIZER_FILE, "graphs": graphs,
                "for_sets": {p: EMBEDDER_PRECISION[p] for p in self.build.opts.precisions}}

    def artifacts(self) -> list[dict[str, Any]]:
        return list(self.records.values())
