"""``build_gen2seg_engines``: a gen2seg checkpoint -> ``engines/<name>/`` with ONNX graphs in FP32,
FP16 and INT8 (and TensorRT plans where TensorRT runs), each checked against PyTorch, and a
``manifest.json`` with ``"family": "gen2seg"``.

Graphs (S = the processing size, c = the VAE's latent channels, 4 for SD 2; batch B dynamic, every
other axis static)::

    variant  stage        input                                     output
    sd       vae_encoder  pixels (B, 3, S, S) f32 in [-1, 1]        latent (B, c, S/8, S/8) = mean × scaling
    sd       unet         latent (B, c, S/8, S/8) f32               x0 (same) = √ᾱ·z − √(1−ᾱ)·v at t = 999
    sd       vae_decoder  x0 (B, c, S/8, S/8) f32                   image (B, 3, S, S) f32, ≈ [-1, 1]
    mae      mae          pixels (B, 3, S, S) f32, ImageNet-normed  image (B, 3, S, S) f32, raw unpatchified

Folded into the UNet graph as constants: the timestep (999 by default, ``config.timestep``), its
sinusoidal projection (``time_proj`` is replaced while tracing by its precomputed output, so the
graph has no Sin/Cos of t) and the empty-prompt CLIP embedding c∅ — no text encoder at run time.
The MAE graph has no masking (no rand/argsort/gather) and no loss (``Gen2SegMAE.forward``).

**Fixed shape.** The SD graphs take one S×S shape (default ``config.processing_size``; ``size=``
overrides it; a multiple of 8). Upstream resizes the long side to S and replicate-pads right/bottom
to a multiple of 8 only, which gives a different shape per aspect ratio (and dynamic Resize ops in
the UNet). Here the image is resized the same way and replicate-padded right/bottom to S×S; the
padding is cropped off the decoded image and the min–max is taken over the crop. Square images
therefore give upstream's result exactly; non-square ones differ by the network's response to the
extra padding (the receptive field and the attention blocks see it). MAE is square (S×S) upstream.
The host-side steps (``families/gen2seg/pipeline.py``) are recorded in the manifest's ``processing``.

**FP16.** Each fp32 graph is converted by ONNX Runtime's ``convert_float_to_float16``
(``keep_io_types=True``: I/O stays float32) with these kept in float32 (``FP16_KEEP_FP32``):
InstanceNormalization (diffusers' GroupNorm exports as Reshape → InstanceNormalization → affine: its
mean/variance statistics over up to (S/8)²·C/32 … S²·C/32 elements), LayerNormalization (the UNet's
transformer blocks, the ViT), Softmax (attention statistics), the converter's defaults, and every
residual ``Add`` of two activations (DESIGN.md §3: residual accumulation in FP32; bias Adds with a
constant operand stay float16).

What was measured (``FP16_MEASURED``; random tiny SD, 6 synthetic images, ONNX Runtime CPU — no GPU
was available): the all-fp16 conversion (converter defaults only: 2–3 Casts per graph) had the
*smallest* error on CPU, the mixed graphs about twice as much (end to end 1.8 vs 3.5–4.1 colour
units). That is an artefact of the CPU: ONNX Runtime's CPU provider has no float16 kernels for most
of these ops and runs them in float32 behind casts it inserts and then merges, so an all-fp16 graph
is mostly computed in float32 there, while every explicit fp32 island adds real rounding points.
TensorRT (strongly typed) and the CUDA provider do compute in float16 what the graph says is
float16, where the norms' statistics (sums of squares over up to S²·C/32 elements at S = 768) and
softmax sums are the known overflow/precision hazards; so the rule follows DESIGN.md §3, not the
CPU numbers, and its effect on a GPU is still to be measured on the real checkpoints.

**Checks.** Every graph is run with ONNX Runtime on CPU right after export on ``check_samples``
deterministic synthetic images and compared with the float32 PyTorch stage on the same inputs
(max abs error ≤ atol + rtol·max|ref|, ``fidelity.TOLERANCES``); then each precision set end to end
through the torch-free runtime (``families/gen2seg/pipeline.py``) against the PyTorch reference with the same
host processing (``reference_color``): colour-map max error in 0..255 units (float, before
truncation, and uint8 at the input size) and the IoU of point-prompt masks
(``genmask_sdk.families.gen2seg.point_prompt_mask``, ``PromptConfig(refine=False, connected=False)``) at the synthetic
objects' centres. Anything past ``END_TO_END_TOLERANCES`` (or a graph past its tolerance) raises
``FidelityError`` and nothing is committed. These build-time bounds catch broken graphs; the tests
hold tighter ones.

**INT8.** ``quant.py``: the UNet (SD) or the ViT layers (MAE) calibrated by NVIDIA Model
Optimizer in PyTorch on ``calib`` images and written as explicit Q/DQ into the fp32 graph (Conv and
MatMul); the SD int8 set runs the VAE graphs in float32 (``quant.SETS``).

**TensorRT.** ``gen2seg_tensorrt.py``: with TensorRT (``tensorrt="auto"`` or ``"on"``), one
strongly typed plan per kept graph, checked against PyTorch, and each plan set end to end through
the runtime; without it the manifest records why and the trtexec command per graph.

**Files.** Staged and committed atomically (``staging.py``: BuildLock, Staging, commit); the
manifest (``export/manifest.py``'s writer) has ``family``, ``config`` (the Gen2SegConfig at the
engine size), ``checkpoint``, ``processing``, ``build_inputs``, per-file records, ``sets``
``{precision: {"onnx": {stage: file}, "tensorrt": {stage: plan} | null}}``, ``end_to_end``
fidelity per set, and ``tensorrt``. A run whose ``build_inputs`` and sets equal the directory's
(every file's sha256 verified, plans from this TensorRT and GPU) returns at once (``up_to_date``);
anything else, or ``force``, rebuilds every file (no per-file reuse yet).
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from genmask_sdk.export.uptodate import reusable_files
from genmask_sdk.export.manifest import state_sha256
from genmask_sdk import __version__
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError
from genmask_sdk.runtime.base import TensorSpec
from genmask_sdk.families.gen2seg.pipeline import FAMILY, GRAPH_IO, STAGES, EngineColorizer
from genmask_sdk.families.gen2seg.modeling.processing import reference_inputs
from genmask_sdk.runtime.manifest import FORMAT_VERSION, read_manifest
from genmask_sdk.export.fidelity import TOLERANCES, FidelityError, mask_iou, run_onnx
from genmask_sdk.export.fp16 import convert_to_fp16 as convert_graph_to_fp16
from genmask_sdk.errors import ExportError
from genmask_sdk.export.manifest import BuildResult, checkpoint_entry, checkpoint_sha256, default_out, file_record, tool_versions
from genmask_sdk.export.onnx_io import (
    DEFAULT_OPSET,
    EXTERNAL_DATA_THRESHOLD,
    SUPPORTED_OPSETS,
    GraphSignature,
    check_onnx,
    check_signature,
    external_data_files,
    io_specs,
    module_bytes,
    op_counts,
)
from genmask_sdk.export.quiet import quiet_exporter_logs
from genmask_sdk.export.staging import BuildLock, Staging, check_out, commit, listed_files, remove_stale_staging
from genmask_sdk.export.tensorrt_steps import skipped_summary

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 4
#: INT8 calibration images by default (each one PyTorch forward of the quantized stage).
DEFAULT_CALIB_SIZE = 32
#: Op types kept float32 in the fp16 graphs, besides the converter's defaults and residual Adds.
FP16_KEEP_FP32 = ("InstanceNormalization", "LayerNormalization", "GroupNormalization", "Softmax")
#: Measured on the random tiny SD (configs.tiny_sd_components(0), S = 64, 6 images, ONNX Runtime CPU):
#: per variant, max |onnx − torch| / max|torch| per graph, the Casts per graph, and the end-to-end
#: colour max error (float, 0..255 units). See the module docstring for why the CPU favours "all fp16".
FP16_MEASURED = {
    "all fp16 (converter defaults)": {"relative_error": {"vae_encoder": 8.1e-4, "unet": 1.7e-3, "vae_decoder": 1.6e-3},
                                      "casts": {"vae_encoder": 2, "unet": 3, "vae_decoder": 3}, "colour_error": 1.76},
    "norms + softmax fp32": {"relative_error": {"vae_encoder": 2.1e-3, "unet": 2.8e-3, "vae_decoder": 2.6e-3},
                             "casts": {"vae_encoder": 34, "unet": 89, "vae_decoder": 51}, "colour_error": 3.46},
    "norms + softmax + residual adds fp32 (chosen)": {
        "relative_error": {"vae_encoder": 1.8e-3, "unet": 2.7e-3, "vae_decoder": 2.6e-3},
        "casts": {"vae_encoder": 55, "unet": 176, "vae_decoder": 84}, "colour_error": 4.10},
}
#: precision -> bounds of the end-to-end check: (max colour error, float, 0..255 units; min mask IoU or
#: None = recorded, not enforced). Point-prompt masks of untrained maps (smooth noise, no flat
#: objects) move with any perturbation: on the random tiny SD a 1e-3 relative perturbation of the
#: fp32 latent alone gives per-point IoUs down to 0.77, a 3e-3 one down to 0.05. So fp16 IoU is
#: enforced by the tests, on a tiny model whose maps keep flat objects, not here.
END_TO_END_TOLERANCES: dict[str, tuple[float, float | None]] = {"fp32": (1.0, 0.9), "fp16": (24.0, None),
                                                                 "int8": (48.0, None)}
_TRACE_BATCH = 2


# ------------------------------------------------------------------------------------- graphs
class MAEGraph(nn.Module):
    """Normalised pixels (B, 3, S, S) -> the raw MAE output (B, 3, S, S) (unpatchified, pixel head
    applied when the model has one)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.raw_image(pixels)


class _FixedTimeProjection(nn.Module):
    """Stands in for a UNet's ``time_proj`` while tracing: the precomputed projection of the fixed t."""

    def __init__(self, embedding: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("embedding", embedding, persistent=False)

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.embedding.expand(timesteps.shape[0], -1)


@contextlib.contextmanager
def folded_time_projection(unet: nn.Module, timestep: int):
    """Replace ``unet.time_proj`` by its output at ``timestep`` (the same float32 values diffusers
    computes for ``torch.tensor([t])``) for the duration; restored afterwards."""
    original = unet.time_proj
    with torch.no_grad():
        embedding = original(torch.tensor([int(timestep)], dtype=torch.int64)).float()
    unet.time_proj = _FixedTimeProjection(embedding)
    try:
        yield
    finally:
        unet.time_proj = original


def signature(stage: str, size: int, latent_channels: int = 4) -> GraphSignature:
    """Inputs and outputs of a gen2seg graph (None = the dynamic batch axis)."""
    name_in, name_out = GRAPH_IO[stage]
    image, latent = (None, 3, size, size), (None, latent_channels, size // 8, size // 8)
    shapes = {"vae_encoder": (image, latent), "unet": (latent, latent), "vae_decoder": (latent, image),
              "mae": (image, image)}[stage]
    return GraphSignature((TensorSpec(name_in, "float32", shapes[0]),), (TensorSpec(name_out, "float32", shapes[1]),))


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The float32 modules of each graph of ``model`` (Gen2SegSD or Gen2SegMAE)."""
    if model.config.variant == "sd":
        return {"vae_encoder": model.encoder_stage(), "unet": model.unet_stage(), "vae_decoder": model.decoder_stage()}
    return {"mae": MAEGraph(model).eval()}


def export_stage(module: nn.Module, stage: str, sig: GraphSignature, path: Path, *, opset: int = DEFAULT_OPSET,
                 external_data: bool = False, timestep: int | None = None) -> float:
    """``torch.onnx.export(dynamo=True)`` of one stage with a dynamic batch axis; checks the file
    (``onnx.checker``, signature). Returns the seconds taken; raises ExportError."""
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is outside 17..20 (20 is the highest TensorRT 10.3 / JetPack 6 parses).")
    spec = sig.inputs[0]
    generator = torch.Generator().manual_seed(0)
    example = torch.randn((_TRACE_BATCH, *spec.shape[1:]), generator=generator).clamp(-1, 1)
    batch = torch.export.Dim("batch", min=1, max=4096)
    folding = folded_time_projection(module.unet, timestep) if stage == "unet" else contextlib.nullcontext()
    start = time.perf_counter()
    try:
        with torch.no_grad(), folding, warnings.catch_warnings(), quiet_exporter_logs():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            program = torch.onnx.export(module.eval(), (example,), dynamo=True, opset_version=opset,
                                        input_names=sig.input_names, output_names=sig.output_names,
                                        dynamic_shapes=({0: batch},), verbose=False)
        program.save(str(path), external_data=external_data)
    except Exception as exc:
        raise ExportError(f"torch.onnx.export(dynamo=True) of the gen2seg {stage} failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    check_onnx(path)
    check_signature(path, sig, stage)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------- fp16
def activation_adds(model: onnx.ModelProto) -> list[str]:
    """Names of the ``Add`` nodes whose operands are both activations (residual and skip
    connections, the time-embedding add), not a bias (an initializer or a Constant)."""
    constants = {t.name for t in model.graph.initializer}
    constants.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    return [n.name for n in model.graph.node if n.op_type == "Add" and not any(i in constants for i in n.input)]


def convert_to_fp16(src: Path, dst: Path, *, external_data: bool, keep_fp32: Sequence[str] = FP16_KEEP_FP32,
                    residual_fp32: bool = True) -> dict:
    """fp32 graph ``src`` -> mixed fp16 graph ``dst`` (float32 I/O); return details for the manifest."""
    model = onnx.load(str(src))
    blocked_nodes = activation_adds(model) if residual_fp32 else []
    # Shape inference serialises the fp32 model: impossible past protobuf's 2 GB, which a source with
    # external data may be even when its fp16 half fits inline (ViT-MAE-H: 2.6 GB -> 1.3 GB). Those
    # graphs keep the exporter's value_info instead.
    too_big = external_data or bool(external_data_files(src))
    converted = convert_graph_to_fp16(model, dst, external_data=external_data, keep_fp32_ops=keep_fp32,
                                      keep_fp32_nodes=blocked_nodes, shape_inference=not too_big)
    check_onnx(dst)
    present = {n.op_type for n in model.graph.node}
    casts = sum(1 for n in converted.graph.node if n.op_type == "Cast")
    return {"method": "onnxruntime convert_float_to_float16(keep_io_types=True) of the fp32 graph",
            "fp32_op_types": sorted(t for t in keep_fp32 if t in present),
            "fp32_residual_adds": len(blocked_nodes),
            "converter_default_block_list": "onnxruntime DEFAULT_OP_BLOCK_LIST",
            "casts": casts, "nodes": len(converted.graph.node)}


# --------------------------------------------------------------------------------- references
def check_images(count: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, list[tuple[int, int]]]]:
    """``count`` deterministic synthetic images and their prompt points: uint8 (H, W, 3) with odd,
    non-square sizes (landscape, then portrait, …; the long side ≈ 1.25·S), a flat dark
    background and three flat objects (rectangle, ellipse, rectangle) in ``PALETTE`` colours; points = the
    objects' centres and one background point, (x, y) in pixels."""
    images = []
    for index in range(count):
        rng = np.random.default_rng(seed + index)
        long_side, short_side = size + size // 4 + 1, (size * 3) // 4 + 1 + 2 * index
        height, width = (short_side, long_side) if index % 2 == 0 else (long_side, short_side)
        yy, xx = np.mgrid[0:height, 0:width]
        image = np.zeros((height, width, 3)) + rng.uniform(0, 40, size=3)
        palette = PALETTE[rng.permutation(len(PALETTE))[:3]]
        points = []
        for k in range(3):  # three cells along the long side
            along, across = (width, height) if width >= height else (height, width)
            c_along, c_across = int((k + 0.5) * along / 3), int(across / 2 + rng.uniform(-0.1, 0.1) * across)
            r_along, r_across = int(along / 9), int(across / 4)
            cx, cy = (c_along, c_across) if width >= height else (c_across, c_along)
            rx, ry = (r_along, r_across) if width >= height else (r_across, r_along)
            inside = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0) if k == 1 else \
                ((abs(xx - cx) <= rx) & (abs(yy - cy) <= ry))
            image[inside] = palette[k]
            points.append((cx, cy))
        points.append((max(1, width // 40), max(1, height // 40)))  # background, top-left corner
        images.append((np.clip(image, 0, 255).astype(np.uint8), points))
    return images


#: Object colours of the check images: saturated and far apart (≥ 140 RGB units pairwise).
PALETTE = np.array([(230, 40, 40), (40, 200, 60), (50, 80, 230), (240, 220, 50), (200, 60, 220), (60, 220, 220)],
                   dtype=np.float64)


@torch.no_grad()
@torch.no_grad()
def reference_stages(model: nn.Module, first_input: torch.Tensor) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stage -> (its input, its float32 PyTorch output), chaining the stages from ``first_input``."""
    out, value = {}, first_input.float()
    for stage, module in stage_modules(model).items():
        result = module(value).float()
        out[stage] = (value.numpy(), result.numpy())
        value = result
    return out


@torch.no_grad()
def reference_color(model: nn.Module, rgb: np.ndarray, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch reference of what the engines compute, with the same host processing:
    (colour before truncation: (3, h, w) float32 in [0, 255] at the processing size; the uint8
    (H, W, 3) colour map at the input size). MAE: exactly ``Gen2SegMAE.colorize``; SD: upstream's
    steps with the S×S padding of the engines (``Gen2SegSD.colorize`` for square images)."""
    from genmask_sdk.families.gen2seg.modeling.processing import long_side_size, resize_to_original

    size = size or model.config.processing_size
    first = reference_inputs(model, [rgb], size)
    if model.config.variant == "sd":
        h, w = long_side_size(rgb.shape[0], rgb.shape[1], size)
        image = model.decode(model.unet_x0(model.encode(first)))[:, :, :h, :w]
    else:
        image = model.raw_image(first)
    colour = model.color_map(image)[0].float()
    return colour.numpy(), resize_to_original(colour, tuple(rgb.shape[:2]))


# -------------------------------------------------------------------------------------- checks
def check_stage(path: Path, stage: str, precision: str, feeds: np.ndarray, expected: np.ndarray) -> dict:
    """Run the graph (ONNX Runtime CPU) on the reference input; the fidelity record, or FidelityError."""
    return compare_stage(run_onnx(path, {GRAPH_IO[stage][0]: feeds}), expected, path.name, precision)


def compare_stage(out: np.ndarray, expected: np.ndarray, name: str, precision: str, runtime: str = "onnx") -> dict:
    """A graph's (or plan's) output against the float32 PyTorch stage: the fidelity record, or
    FidelityError past ``fidelity.TOLERANCES[precision]`` or on a non-finite output."""
    atol, rtol = TOLERANCES[precision]
    ref_max = float(np.abs(expected).max())
    diff = np.abs(out.astype(np.float64) - expected.astype(np.float64))
    error = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    record = {"reference": "pytorch float32", "runtime": "tensorrt" if runtime == "tensorrt" else "onnxruntime cpu",
              "samples": int(expected.shape[0]), "max_abs_error": error, "mean_abs_error": float(diff.mean()),
              "reference_max_abs": ref_max, "tolerance": atol + rtol * ref_max}
    if not np.isfinite(out).all() or error > record["tolerance"]:
        raise FidelityError(
            f"{name}: max |output - torch| = {error:.4g} exceeds the {precision} tolerance "
            f"{record['tolerance']:.4g} "
            f"(atol {atol} + rtol {rtol} x max|ref| {ref_max:.4g}) on {record['samples']} check inputs; nothing was "
            "committed. Re-run; if it persists, report it with this message.")
    return record


def prompt_ious(ours: np.ndarray, reference: np.ndarray, points: Sequence[tuple[int, int]]) -> list[float]:
    """IoU of the single-point masks on two colour maps, per point, with the published prompt
    numerics and neither OpenCV step (``PromptConfig(refine=False, connected=False)``: a build
    needs only the ``export`` extra, and connected parts would make the check hinge on single
    pixels of random maps)."""
    from genmask_sdk.families.gen2seg import PromptConfig, point_prompt_mask

    config = PromptConfig(refine=False, connected=False)
    return [mask_iou(point_prompt_mask(ours, [p], config=config)[0],
                     point_prompt_mask(reference, [p], config=config)[0]) for p in points]


def end_to_end(colorizer: EngineColorizer, references: Sequence[tuple[np.ndarray, np.ndarray]],
               samples: Sequence[tuple[np.ndarray, list]], precision: str, *, enforce: bool = True) -> dict:
    """Compare the runtime's colour maps with the PyTorch reference's; FidelityError past the
    bounds (``enforce=False``: recorded, with ``"enforced": false``, never raised)."""
    float_errors, uint8_errors, ious = [], [], []
    for (rgb, points), (ref_float, ref_map) in zip(samples, references):
        ours_float = colorizer.color_float(rgb)
        ours_map = colorizer.color_map(rgb)
        float_errors.append(float(np.abs(ours_float.astype(np.float64) - ref_float).max()))
        uint8_errors.append(int(np.abs(ours_map.astype(np.int16) - ref_map.astype(np.int16)).max()))
        ious += prompt_ious(ours_map, ref_map, points)
    bound, min_iou = END_TO_END_TOLERANCES[precision]
    record = {"reference": "pytorch float32, same host processing", "runtime": "genmask_sdk.families.gen2seg.engines "
              "(numpy + onnxruntime cpu)", "samples": len(samples), "colour_max_abs_error": max(float_errors),
              "colour_uint8_max_abs_error": max(uint8_errors), "prompt_points": len(ious),
              "mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(np.min(ious)),
              "prompt_config": "PromptConfig(refine=False, connected=False)", "tolerance": {"colour_max_abs_error": bound,
                                                                            "mask_iou_min": min_iou},
              "enforced": bool(enforce), "runtime_kind": colorizer.runtime}
    if not enforce:
        return record
    if not record["colour_max_abs_error"] <= bound or (min_iou is not None and record["mask_iou_min"] < min_iou):
        raise FidelityError(
            f"the {precision} gen2seg engines are too far from PyTorch end to end: colour max error "
            f"{record['colour_max_abs_error']:.3g} (bound {bound}), point-prompt mask IoU min "
            f"{record['mask_iou_min']:.3f} "
            f"(bound {min_iou if min_iou is not None else 'none'}) on {len(samples)} check images; nothing was "
            "committed.")
    return record


# --------------------------------------------------------------------------------------- build
def processing_entry(model: nn.Module, size: int) -> dict[str, Any]:
    """The manifest's ``processing``: what the runtime does on the host around the graphs."""
    config = model.config
    if config.variant == "sd":
        return {"variant": "sd", "size": size, "gamma": float(config.gamma),
                "latent_channels": int(model.vae.config.latent_channels),
                "resize": "long side to size (floor division), bilinear with antialias, on x*2-1 (x = uint8/255)",
                "pad": "replicate, right and bottom, to size x size (fixed graph shape; upstream pads to a multiple "
                       "of 8 only)",
                "min_max": "per image over the unpadded crop: (x + |min|) / (|max| + |min|) * 255, then gamma",
                "output": "uint8 truncation, then PIL LANCZOS to the input size"}
    return {"variant": "mae", "size": size, "gamma": float(config.gamma), "eps": 1e-5,
            "mean": [float(v) for v in model.mean.flatten()], "std": [float(v) for v in model.std.flatten()],
            "resize": "PIL bicubic to size x size (aspect ratio not kept), /255, (x - mean) / std",
            "min_max": "per image: ((x + |min|) / (|max| + |min| + eps)) ** gamma * 255",
            "output": "uint8 truncation, then PIL LANCZOS to the input size"}


def _profiles(sig: GraphSignature, max_batch: int) -> dict[str, list[list[int]]]:
    spec = sig.inputs[0]
    return {spec.name: [[b, *spec.shape[1:]] for b in (1, 1, max_batch)]}


def _log_default(line: str) -> None:
    print(f"[build_engines] {line}", flush=True)


def build_gen2seg_engines(checkpoint: str | Path, out: str | Path | None, precisions: Sequence[str] = PRECISIONS, *,
                          size: int | None = None, log: Callable[[str], None] | None = None, progress: bool = True,
                          force: bool = False, check_samples: int = 2, max_batch: int = DEFAULT_MAX_BATCH,
                          opset: int = DEFAULT_OPSET, workspace_gib: float = 4.0, calib: str | Path | None = None,
                          calib_size: int = DEFAULT_CALIB_SIZE, tensorrt: str = "auto",
                          enforce_end_to_end: bool = True) -> BuildResult:
    """Export a gen2seg checkpoint (SD or MAE) to ONNX fp32/fp16/int8 graphs (and TensorRT plans
    where TensorRT runs) with a checked manifest.

    Args:
        checkpoint: a local directory (published gen2seg layout or ``save_pretrained``) or a hub id
            (``reachomk/gen2seg-sd``, ``reachomk/gen2seg-mae-h``), read by ``load_gen2seg``.
        out: engines directory (None: ``engines/<checkpoint name>``), replaced atomically.
        precisions: non-empty subset of ``("fp32", "fp16", "int8")`` (``SETS``: the int8 set of SD
            is the int8 UNet between the fp32 VAE graphs). The fp32 graphs are always exported
            (sources of the others) and kept when a requested set uses them.
        size: SD: the fixed processing size S (a multiple of 8; default ``config.processing_size``);
            MAE: must equal the ViT's image size. The manifest's config records it.
        log: where progress lines go (default: print). progress: tqdm bars (graphs, calibration).
        force: rebuild even when the directory already holds this build (``up_to_date``).
        check_samples: synthetic check images (``check_images``). max_batch: largest batch of the
            TensorRT profiles (the graphs' batch axis is dynamic). opset: 17..20.
        workspace_gib: TensorRT builder workspace.
        calib: INT8 calibration images: None / ``"demo"`` (procedural scenes), a folder of images,
            or ``"random"`` (noise; benchmarks of random weights only). calib_size: how many.
        tensorrt: ``"auto"`` (plans where TensorRT and a GPU exist, else the trtexec commands are
            recorded), ``"on"`` (BackendUnavailableError without TensorRT, before any export),
            ``"off"``.
        enforce_end_to_end: False records the end-to-end colour/mask checks without enforcing
            them (random-weight benchmarks: untrained maps are smooth noise whose masks move with
            any rounding; the per-graph checks are always enforced). The manifest says which.

    Returns a ``BuildResult``. Raises ConfigError (bad arguments), ArtifactNotFoundError /
    ArtifactMismatchError (checkpoint), BackendUnavailableError, ExportError, FidelityError.
    """
    start = time.perf_counter()
    log = log or _log_default
    wanted = tuple(dict.fromkeys(precisions))
    if not wanted or any(p not in PRECISIONS for p in wanted):
        raise ConfigError(f"gen2seg engines are built in {PRECISIONS}; got precisions {list(precisions)} "
                          "(fp8 is not built for gen2seg by this version).")
    for name, value in (("check_samples", check_samples), ("max_batch", max_batch), ("calib_size", calib_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an int >= 1, got {value!r}.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise ConfigError(f"size must be an int >= 8, got {size!r}.")
    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"opset must be in 17..20, got {opset!r}.")
    if tensorrt not in ("auto", "on", "off"):
        raise ConfigError(f"tensorrt must be 'auto', 'on' or 'off', got {tensorrt!r}.")
    from genmask_sdk.families.gen2seg.modeling.loading import (
        checkpoint_prompt_defaults,
        load_gen2seg,
        resolve_source,
    )
    from genmask_sdk.families.gen2seg.export.quant import describe_source
    from genmask_sdk.families.gen2seg.export.tensorrt import availability

    plans, plans_reason = availability(tensorrt)  # "on" without TensorRT raises here, before any work
    calibration = describe_source(calib) if "int8" in wanted else None
    source = resolve_source(checkpoint)  # ArtifactNotFoundError for a path that is not a directory
    out = Path(out) if out is not None else default_out(checkpoint)
    check_out(out)
    log(f"loading gen2seg checkpoint {checkpoint}")
    model = load_gen2seg(checkpoint, **({"processing_size": size} if size is not None else {})).float().eval()
    config = model.config
    size = int(config.processing_size)
    if config.variant == "sd" and size % 8:
        raise ConfigError(f"the SD processing size must be a multiple of 8 (the VAE downsamples by 8), got {size}.")
    directory = Path(source.root) if source.local else None
    digest = checkpoint_sha256(directory) if directory is not None else state_sha256(model)
    prompts = checkpoint_prompt_defaults(checkpoint)  # the checkpoint's own prompt defaults, for the manifest
    job = _Job(model=model, prompts=None if prompts is None else (asdict(prompts[0]), prompts[1]),
               source=str(checkpoint), directory=directory, digest=digest, out=out, wanted=wanted,
               size=size, log=log, progress=progress, check_samples=check_samples, max_batch=max_batch, opset=opset,
               workspace_gib=workspace_gib, calib=calib, calib_size=calib_size, calibration=calibration,
               plans=plans, plans_reason=plans_reason, enforce=enforce_end_to_end, start=start)
    with BuildLock(out):
        remove_stale_staging(out, log)
        if not force:
            reused = reusable_files(out, FAMILY, job.build_inputs(), wanted, plans)
            if reused is not None:
                seconds = time.perf_counter() - start
                log(f"up to date in {seconds:.1f} s: {out / 'manifest.json'} (built 0, reused {len(reused)}; "
                    "--force rebuilds)")
                from genmask_sdk.export.manifest import load_manifest

                return BuildResult(out, load_manifest(out, verify=True, family=FAMILY), [], reused, seconds)
        return _build(job)


@dataclass
class _Job:
    """One gen2seg build's inputs (``build_gen2seg_engines``'s arguments, resolved)."""

    model: Any
    prompts: tuple[dict, dict] | None  # (PromptConfig fields, selection) of prompt_config.json, or None
    source: str
    directory: Path | None
    digest: str
    out: Path
    wanted: tuple[str, ...]
    size: int
    log: Callable[[str], None]
    progress: bool
    check_samples: int
    max_batch: int
    opset: int
    workspace_gib: float
    calib: Any
    calib_size: int
    calibration: dict | None
    plans: bool
    plans_reason: str
    enforce: bool
    start: float

    @property
    def variant(self) -> str:
        return self.model.config.variant

    def build_inputs(self) -> dict[str, Any]:
        """What the files depend on (equal inputs + verified files = nothing to rebuild)."""
        tools = tool_versions()
        return json.loads(json.dumps({
            "sdk_version": __version__, "family": FAMILY, "checkpoint_sha256": self.digest,
            "config": json.loads(self.model.config.to_json()), "opset": self.opset,
            "check_samples": self.check_samples, "max_batch": self.max_batch,
            "fp16_keep_fp32": list(FP16_KEEP_FP32), "fp16_residual_adds_fp32": True,
            "calibration": None if self.calibration is None else {**self.calibration, "count": self.calib_size},
            "enforce_end_to_end": self.enforce, "workspace_gib": self.workspace_gib,
            "prompt_config": None if self.prompts is None else self.prompts[0],
            "tools": {k: v for k, v in tools.items() if k != "tensorrt"}}))


def _build(job: _Job) -> BuildResult:
    from tqdm.auto import tqdm

    from genmask_sdk.families.gen2seg.export.quant import SETS, calibration_images, quantize_stage, stage_inputs

    model, config, log, size = job.model, job.model.config, job.log, job.size
    stages = STAGES[config.variant]
    latent = int(model.vae.config.latent_channels) if config.variant == "sd" else 4
    sets = {p: dict(SETS[config.variant][p]) for p in job.wanted}
    needed = {(stage, p) for files in sets.values() for stage, p in files.items()}
    samples = check_images(job.check_samples, size)
    log(f"computing the PyTorch reference on {job.check_samples} synthetic check images at {size}x{size}")
    refs = reference_stages(model, reference_inputs(model, [s[0] for s in samples], size))
    colour_refs = [reference_color(model, rgb, size) for rgb, _ in samples]
    calibration_inputs = None
    if "int8" in job.wanted:
        log(f"encoding {job.calib_size} INT8 calibration images ({job.calibration['kind']}) at {size}x{size}")
        if job.calibration["kind"] == "random":
            log("WARNING: INT8 calibrated on random noise is meaningless for a trained model; use it only for "
                "random-weight benchmarks (--calib demo or a folder of your images otherwise)")
        calibration_inputs = stage_inputs(model, calibration_images(job.calib, job.calib_size, size), size)
    processing = processing_entry(model, size)
    modules = stage_modules(model)
    records: dict[tuple[str, str], dict] = {}
    steps = [(stage, "fp32") for stage in stages] + [(stage, p) for p in ("fp16", "int8") for stage in stages
                                                     if (stage, p) in needed]
    with Staging(job.out) as staging:
        for stage, precision in tqdm(steps, desc="gen2seg graphs", disable=not job.progress):
            path = staging.path(f"{stage}.{precision}.onnx")
            sig = signature(stage, size, latent)
            log(f"exporting {path.name}")
            began = time.perf_counter()
            big = module_bytes(modules[stage]) // (2 if precision == "fp16" else 1) > EXTERNAL_DATA_THRESHOLD
            if precision == "fp32":
                seconds = export_stage(modules[stage], stage, sig, path, opset=job.opset, external_data=big,
                                       timestep=config.timestep)
                details = {"method": "torch.onnx.export(dynamo=True), float32", "trace_seconds": round(seconds, 2)}
                if stage == "unet":
                    details["folded"] = [f"timestep t = {config.timestep} and its sinusoidal projection",
                                         f"empty-prompt embedding c∅ {list(model.empty_prompt_embedding.shape)} "
                                         f"({config.empty_prompt_padding})",
                                         "x0 = a*z + b*UNet(z) with (a, b) = " + str(list(model.coefficients))]
            elif precision == "fp16":
                details = convert_to_fp16(staging.path(f"{stage}.fp32.onnx"), path, external_data=big)
            else:
                details = quantize_stage(modules[stage], config.variant, staging.path(f"{stage}.fp32.onnx"), path,
                                         calibration_inputs, external_data=big, progress=job.progress)
                details["calibration"] = job.calibration
            check_signature(path, sig, stage)
            export_seconds = time.perf_counter() - began
            fidelity = check_stage(path, stage, precision, *refs[stage])
            log(f"{path.name}: {export_seconds:.1f} s, max |onnx - torch| {fidelity['max_abs_error']:.3g} "
                f"(tolerance {fidelity['tolerance']:.3g})")
            records[(stage, precision)] = _graph_record(path, stage, precision, sig, job, export_seconds, details,
                                                        fidelity)
        end = {p: _check_set(staging, processing, files, p, colour_refs, samples, job, "onnx")
               for p, files in sets.items()}
        kept = [records[key] for key in records if key in needed]
        plan_records, summary, plan_sets = _tensorrt(job, staging, kept, refs, sets, processing, colour_refs, samples)
        data = _manifest_data(job, processing, kept + plan_records, summary, end, sets, plan_sets)
        old = _old_files(job.out)
        files = kept + plan_records
        staged = [r["file"] for r in files] + [e["file"] for r in files for e in r["external_data"]]
        commit(staging, staged, data, old, log)
    from genmask_sdk.export.manifest import load_manifest

    manifest = load_manifest(job.out, verify=True, family=FAMILY)
    seconds = time.perf_counter() - job.start
    built = [r["file"] for r in files]
    log(f"done in {seconds:.1f} s: {job.out / 'manifest.json'} (built {len(built)}, reused 0)")
    return BuildResult(job.out, manifest, built, [], seconds)


def _graph_record(path: Path, stage: str, precision: str, sig: GraphSignature, job: _Job, export_seconds: float,
                  details: dict, fidelity: dict) -> dict:
    """The manifest record of one ONNX graph."""
    inputs, outputs = io_specs(path)
    ops = op_counts(path)
    return {"stage": stage, "precision": precision, "runtime": "onnx", **file_record(path),
            "external_data": [file_record(path.parent / f) for f in external_data_files(path)],
            "inputs": [s.to_json() for s in inputs], "outputs": [s.to_json() for s in outputs],
            "profiles": _profiles(sig, job.max_batch), "opset": details.get("opset", job.opset),
            "export_seconds": round(export_seconds, 2), "details": details,
            "graph": {"ops": ops, "sin_cos_nodes": ops.get("Sin", 0) + ops.get("Cos", 0)}, "fidelity": fidelity}


def _check_set(staging: Staging, processing: dict, files: dict[str, str], precision: str, colour_refs, samples,
               job: _Job, runtime: str) -> dict:
    """End-to-end check of one set through the runtime (``end_to_end``), logged."""
    suffix = "onnx" if runtime == "onnx" else "plan"
    paths = {stage: staging.path(f"{stage}.{p}.{suffix}") for stage, p in files.items()}
    with EngineColorizer.from_files(processing, paths, precision=precision, runtime=runtime,
                                     provider="cpu" if runtime == "onnx" else "tensorrt") as colorizer:
        record = end_to_end(colorizer, colour_refs, samples, precision, enforce=job.enforce)
    label = precision if runtime == "onnx" else f"{precision} TensorRT"
    job.log(f"{label} end to end: colour max error {record['colour_max_abs_error']:.3g} (float), "
            f"{record['colour_uint8_max_abs_error']} (uint8); point-prompt mask IoU min {record['mask_iou_min']:.4f}"
            + ("" if job.enforce else " (recorded, not enforced)"))
    return record


def _tensorrt(job: _Job, staging: Staging, kept: list[dict], refs, sets: dict, processing: dict, colour_refs,
              samples) -> tuple[list[dict], dict, dict]:
    """Plans of every kept graph when TensorRT is available: (plan records, the manifest's
    ``tensorrt`` entry, precision -> {stage: plan file}); else ([], the skipped summary, {})."""
    from genmask_sdk.families.gen2seg.export.tensorrt import (
        TIMING_CACHE,
        build_gen2seg_plan,
        plan_file,
        plan_output,
        summary_built,
    )

    if not job.plans:
        summary = skipped_summary(job.plans_reason, kept, job.workspace_gib)
        job.log(f"TensorRT plans skipped: {job.plans_reason}")
        return [], summary, {}
    plan_records = []
    for source in kept:
        stage, precision = source["stage"], source["precision"]
        name = plan_file(source["file"])
        job.log(f"building TensorRT plan {name}")
        feeds, expected = refs[stage]

        def check(plan_path: Path, stage=stage, precision=precision, feeds=feeds, expected=expected) -> dict:
            out = plan_output(plan_path, {GRAPH_IO[stage][0]: feeds})
            return compare_stage(out, expected, plan_path.name, "fp16" if precision == "fp32" else precision,
                                 runtime="tensorrt")

        record = build_gen2seg_plan(source, staging.path(source["file"]), staging.path(name), job.workspace_gib,
                                    job.out / TIMING_CACHE, check, progress=job.progress)
        plan_records.append(record)
        job.log(f"{name}: {record['build_seconds']:.1f} s, max |plan - torch| {record['fidelity']['max_abs_error']:.3g}")
    plan_sets = {p: {stage: plan_file(f"{stage}.{q}.onnx") for stage, q in files.items()} for p, files in sets.items()}
    for p, files in sets.items():
        _check_set(staging, processing, files, p, colour_refs, samples, job, "tensorrt")
    return plan_records, summary_built(job.plans_reason), plan_sets


def _manifest_data(job: _Job, processing: dict, artifacts: list[dict], summary: dict, end: dict, sets: dict,
                   plan_sets: dict) -> dict:
    config_json = json.loads(job.model.config.to_json())
    return {
        "format_version": FORMAT_VERSION, "sdk_version": __version__, "family": FAMILY,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config_json, "checkpoint": checkpoint_entry(job.source, job.directory, job.digest),
        "processing": processing, "max_batch": job.max_batch, "build_inputs": job.build_inputs(),
        "tools": tool_versions(), "tensorrt": summary, "artifacts": artifacts, "end_to_end": end,
        "sets": {p: {"onnx": {stage: f"{stage}.{q}.onnx" for stage, q in files.items()},
                     "tensorrt": plan_sets.get(p)} for p, files in sets.items()},
        "set_precisions": sets,
        "prompt_config": None if job.prompts is None else job.prompts[0],
        "prompt_config_selection": None if job.prompts is None else job.prompts[1],
    }


def _old_files(out: Path) -> set[str]:
    """Files the previous manifest in ``out`` listed (dropped by the commit), whatever its family."""
    try:
        return listed_files(read_manifest(out))
    except (ArtifactNotFoundError, ArtifactMismatchError):
        return set()
    except (TypeError, KeyError, AttributeError):  # a malformed previous manifest: nothing to carry over
        return set()
