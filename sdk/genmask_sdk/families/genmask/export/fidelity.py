"""GenMask's fidelity checks: every stage fed the float32 PyTorch reference's own inputs (so errors do not
compound across stages): ``vae_encoder`` gets the check pixels, ``dit`` the reference z_img and (padded)
context, ``mask_head`` the reference x0; for the DiT the logits error and mask IoU of its x0 decoded by the
PyTorch mask head (mask = logits > 0) against the reference mask, per sample (mean, min) and pooled over all
samples (total intersection / total union). Tolerances and runners: ``genmask_sdk.export.fidelity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genmask_sdk.export.fidelity import TOLERANCES, FidelityError, _max_err, mask_iou, run_onnx, run_plan  # noqa: F401
from genmask_sdk.families.genmask.export.calibration import Feeds


@dataclass
class Reference:
    """Float32 PyTorch outputs on the check feeds: z_img (N, 16, h, w), x0 (N, 16, h, w),
    logits (N, 1, R, R); plus the feeds themselves."""

    feeds: Feeds
    x0: torch.Tensor
    logits: torch.Tensor


def reference(model, feeds: Feeds) -> Reference:
    """Run the float32 model's one-step DiT and mask decoder (``config.mask_decoder``) on ``feeds``."""
    with torch.no_grad():
        x0 = model.one_step_dit()(feeds.z_img, feeds.context, feeds.context_mask).float()
        logits = model.decode_mask(x0).float()
    return Reference(feeds, x0, logits)


def stage_io(stage: str, ref: Reference) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(ONNX feeds, expected output) of ``stage`` on the reference."""
    if stage == "vae_encoder":
        return {"pixels": ref.feeds.pixels.numpy()}, ref.feeds.z_img.numpy()
    if stage == "dit":
        return ref.feeds.dit_feeds(), ref.x0.numpy()
    if stage == "mask_head":
        return {"latent": ref.x0.numpy()}, ref.logits.numpy()
    raise ValueError(f"unknown stage {stage!r}")


def check_graph(path: Path, stage: str, precision: str, ref: Reference, mask_head, *, runtime: str = "onnx",
                tolerances: dict[str, tuple[float, float]] | None = None) -> dict:
    """Run ``path`` (ONNX Runtime CPU, or TensorRT for ``runtime="tensorrt"``) on the reference
    inputs; return the fidelity record. TensorRT fp32 plans are held to the fp16 tolerance (TF32).

    Raises FidelityError when the output is non-finite or beyond the precision's tolerance.
    """
    feeds, expected = stage_io(stage, ref)
    out = run_plan(path, feeds) if runtime == "tensorrt" else run_onnx(path, feeds)
    key = "fp16" if runtime == "tensorrt" and precision == "fp32" else precision
    atol, rtol = (tolerances or TOLERANCES)[key]
    ref_max = float(np.abs(expected).max())
    record = {"reference": "pytorch float32", "runtime": "tensorrt" if runtime == "tensorrt" else "onnxruntime cpu",
              "samples": int(expected.shape[0]), "max_abs_error": _max_err(out, expected),
              "mean_abs_error": float(np.abs(out - expected).mean()), "reference_max_abs": ref_max,
              "tolerance": atol + rtol * ref_max}
    if stage == "dit":
        record.update(mask_agreement(out, ref.logits.numpy(), mask_head))
    if not np.isfinite(out).all() or record["max_abs_error"] > record["tolerance"]:
        raise FidelityError(
            f"{path.name}: max |output - torch| = {record['max_abs_error']:.4g} exceeds the {precision} tolerance "
            f"{record['tolerance']:.4g} (atol {atol} + rtol {rtol} x max|ref| {ref_max:.4g}) on {record['samples']} "
            "check inputs; the file is not kept. Re-run with --force; if it persists, report it with this message."
        )
    return record


def mask_agreement(x0: np.ndarray, ref_logits: np.ndarray, mask_head) -> dict:
    """Decode ``x0`` (N, 16, h, w) with the PyTorch mask head; compare with the reference logits."""
    with torch.no_grad():
        logits = mask_head(torch.from_numpy(np.ascontiguousarray(x0, dtype=np.float32))).numpy()
    ious = [mask_iou(a > 0, b > 0) for a, b in zip(logits, ref_logits)]
    return {"logits_max_abs_error": _max_err(logits, ref_logits), "mask_iou_mean": float(np.mean(ious)),
            "mask_iou_min": float(np.min(ious)), "mask_iou_pooled": mask_iou(logits > 0, ref_logits > 0)}
