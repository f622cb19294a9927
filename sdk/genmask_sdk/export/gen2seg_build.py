"""``build_gen2seg_engines``: a gen2seg checkpoint -> ``engines/<name>/`` with ONNX graphs in FP32
and FP16, each checked against PyTorch, and a ``manifest.json`` with ``"family": "gen2seg"``.

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
The host-side steps (``runtime/gen2seg.py``) are recorded in the manifest's ``processing``.

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
through the torch-free runtime (``runtime/gen2seg.py``) against the PyTorch reference with the same
host processing (``reference_colour``): colour-map max error in 0..255 units (float, before
truncation, and uint8 at the input size) and the IoU of point-prompt masks
(``genmask_sdk.instance.point_prompt_mask``, ``PromptConfig(refine=False)``) at the synthetic
objects' centres. Anything past ``END_TO_END_TOLERANCES`` (or a graph past its tolerance) raises
``FidelityError`` and nothing is committed. These build-time bounds catch broken graphs; the tests
hold tighter ones.

**Files.** Staged and committed atomically (``staging.py``: BuildLock, Staging, commit); the
manifest (``export/manifest.py``'s writer) has ``family``, ``config`` (the Gen2SegConfig at the
engine size), ``checkpoint``, ``processing``, ``build_inputs``, per-file records, ``sets``
``{precision: {"onnx": {stage: file}, "tensorrt": null}}``, ``end_to_end`` fidelity per set, and
``tensorrt`` (not built by this version; the trtexec command per graph). TensorRT plans, INT8 and
reuse of unchanged files are not part of this first version: every run rebuilds every graph
(``force`` is accepted for symmetry with the GenMask build and changes nothing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from .. import __version__
from ..errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError
from ..runtime.base import TensorSpec
from ..runtime.gen2seg import FAMILY, GRAPH_IO, STAGES, EngineColourizer
from ..runtime.manifest import FORMAT_VERSION, read_manifest
from .fidelity import TOLERANCES, FidelityError, mask_iou, run_onnx
from .fp16 import _drop_duplicate_nodes, _topological_sort
from .graphs import SUPPORTED_OPSETS, ExportError, check_signature, module_bytes
from .manifest import checkpoint_sha256, file_record, tool_versions
from .onnx_io import check_onnx, external_data_files, io_specs, op_counts, save_onnx
from .options import DEFAULT_OPSET, EXTERNAL_DATA_THRESHOLD, BuildResult, checkpoint_entry, default_out
from .quiet import quiet_exporter_logs
from .signatures import GraphSignature
from .staging import BuildLock, Staging, check_out, commit, listed_files, remove_stale_staging
from .tensorrt_steps import skipped_summary

PRECISIONS = ("fp32", "fp16")
DEFAULT_MAX_BATCH = 4
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
END_TO_END_TOLERANCES: dict[str, tuple[float, float | None]] = {"fp32": (1.0, 0.9), "fp16": (24.0, None)}
REASON = ("gen2seg TensorRT plans are not built by this version; trtexec commands: see tensorrt.trtexec (run them in "
          "the engines directory on the device)")
_TRACE_BATCH = 2


# ------------------------------------------------------------------------------------- graphs
class MAEGraph(nn.Module):
    """Normalised pixels (B, 3, S, S) -> the unpatchified raw MAE output (B, 3, S, S)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.unpatchify(self.model(pixels))


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
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    blocked_nodes = activation_adds(model) if residual_fp32 else []
    op_block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32))
    # Shape inference serialises the fp32 model: impossible past protobuf's 2 GB, which a source with
    # external data may be even when its fp16 half fits inline (ViT-MAE-H: 2.6 GB -> 1.3 GB). Those
    # graphs keep the exporter's value_info instead.
    too_big = external_data or bool(external_data_files(src))
    converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=op_block,
                                         node_block_list=blocked_nodes, disable_shape_infer=too_big)
    _drop_duplicate_nodes(converted)
    _topological_sort(converted)
    save_onnx(converted, dst, external_data)
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
def reference_inputs(model: nn.Module, images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """The first graph's input for each image, by the PyTorch processing: SD ``(N, 3, S, S)`` in
    [-1, 1] (resize long side, replicate pad to S×S), MAE normalised ``(N, 3, S, S)``."""
    from ..model.gen2seg.processing import as_batch, preprocess_mae, resize_long_side

    batch = []
    for rgb in images:
        if model.config.variant == "sd":
            pixels = resize_long_side(as_batch(rgb) * 2.0 - 1.0, size)
            pad = (0, size - pixels.shape[-1], 0, size - pixels.shape[-2])
            batch.append(torch.nn.functional.pad(pixels, pad, mode="replicate"))
        else:
            batch.append(model.normalise(preprocess_mae(rgb, size)))
    return torch.cat(batch)


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
def reference_colour(model: nn.Module, rgb: np.ndarray, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch reference of what the engines compute, with the same host processing:
    (colour before truncation: (3, h, w) float32 in [0, 255] at the processing size; the uint8
    (H, W, 3) colour map at the input size). MAE: exactly ``Gen2SegMAE.colorize``; SD: upstream's
    steps with the S×S padding of the engines (``Gen2SegSD.colorize`` for square images)."""
    from ..model.gen2seg.processing import long_side_size, resize_to_original

    size = size or model.config.processing_size
    first = reference_inputs(model, [rgb], size)
    if model.config.variant == "sd":
        h, w = long_side_size(rgb.shape[0], rgb.shape[1], size)
        image = model.decode(model.unet_x0(model.encode(first)))[:, :, :h, :w]
    else:
        image = model.unpatchify(model(first))
    colour = model.colour_map(image)[0].float()
    return colour.numpy(), resize_to_original(colour, tuple(rgb.shape[:2]))


# -------------------------------------------------------------------------------------- checks
def check_stage(path: Path, stage: str, precision: str, feeds: np.ndarray, expected: np.ndarray) -> dict:
    """Run the graph (ONNX Runtime CPU) on the reference input; the fidelity record, or FidelityError."""
    out = run_onnx(path, {GRAPH_IO[stage][0]: feeds})
    atol, rtol = TOLERANCES[precision]
    ref_max = float(np.abs(expected).max())
    diff = np.abs(out.astype(np.float64) - expected.astype(np.float64))
    error = float(diff.max()) if np.isfinite(diff).all() else float("inf")
    record = {"reference": "pytorch float32", "runtime": "onnxruntime cpu", "samples": int(expected.shape[0]),
              "max_abs_error": error, "mean_abs_error": float(diff.mean()), "reference_max_abs": ref_max,
              "tolerance": atol + rtol * ref_max}
    if not np.isfinite(out).all() or error > record["tolerance"]:
        raise FidelityError(
            f"{path.name}: max |output - torch| = {error:.4g} exceeds the {precision} tolerance "
            f"{record['tolerance']:.4g} "
            f"(atol {atol} + rtol {rtol} x max|ref| {ref_max:.4g}) on {record['samples']} check inputs; nothing was "
            "committed. Re-run; if it persists, report it with this message.")
    return record


def prompt_ious(ours: np.ndarray, reference: np.ndarray, points: Sequence[tuple[int, int]]) -> list[float]:
    """IoU of the single-point masks (``PromptConfig(refine=False)``) on two colour maps, per point."""
    from ..instance import PromptConfig, point_prompt_mask

    config = PromptConfig(refine=False)
    return [mask_iou(point_prompt_mask(ours, [p], config=config)[0],
                     point_prompt_mask(reference, [p], config=config)[0]) for p in points]


def end_to_end(colourizer: EngineColourizer, references: Sequence[tuple[np.ndarray, np.ndarray]],
               samples: Sequence[tuple[np.ndarray, list]], precision: str) -> dict:
    """Compare the runtime's colour maps with the PyTorch reference's; FidelityError past the bounds."""
    float_errors, uint8_errors, ious = [], [], []
    for (rgb, points), (ref_float, ref_map) in zip(samples, references):
        ours_float = colourizer.colour_float(rgb)
        ours_map = colourizer.colour_map(rgb)
        float_errors.append(float(np.abs(ours_float.astype(np.float64) - ref_float).max()))
        uint8_errors.append(int(np.abs(ours_map.astype(np.int16) - ref_map.astype(np.int16)).max()))
        ious += prompt_ious(ours_map, ref_map, points)
    bound, min_iou = END_TO_END_TOLERANCES[precision]
    record = {"reference": "pytorch float32, same host processing", "runtime": "genmask_sdk.runtime.gen2seg "
              "(numpy + onnxruntime cpu)", "samples": len(samples), "colour_max_abs_error": max(float_errors),
              "colour_uint8_max_abs_error": max(uint8_errors), "prompt_points": len(ious),
              "mask_iou_mean": float(np.mean(ious)), "mask_iou_min": float(np.min(ious)),
              "prompt_config": "PromptConfig(refine=False)", "tolerance": {"colour_max_abs_error": bound,
                                                                            "mask_iou_min": min_iou}}
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


def state_sha256(model: nn.Module) -> str:
    """A hash of a model's config, scheduler values and tensors (for hub ids, read file by file)."""
    digest = hashlib.sha256(model.config.to_json().encode())
    digest.update(json.dumps(getattr(model, "scheduler_config", {}), sort_keys=True).encode())
    tensors = dict(model.state_dict())
    if hasattr(model, "empty_prompt_embedding"):
        tensors["empty_prompt_embedding"] = model.empty_prompt_embedding
    for name, tensor in sorted(tensors.items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _profiles(sig: GraphSignature, max_batch: int) -> dict[str, list[list[int]]]:
    spec = sig.inputs[0]
    return {spec.name: [[b, *spec.shape[1:]] for b in (1, 1, max_batch)]}


def _log_default(line: str) -> None:
    print(f"[build_engines] {line}", flush=True)


def build_gen2seg_engines(checkpoint: str | Path, out: str | Path | None, precisions: Sequence[str] = PRECISIONS, *,
                          size: int | None = None, log: Callable[[str], None] | None = None, progress: bool = True,
                          force: bool = False, check_samples: int = 2, max_batch: int = DEFAULT_MAX_BATCH,
                          opset: int = DEFAULT_OPSET, workspace_gib: float = 4.0) -> BuildResult:
    """Export a gen2seg checkpoint (SD or MAE) to ONNX fp32/fp16 graphs with a checked manifest.

    Args:
        checkpoint: a local directory (published gen2seg layout or ``save_pretrained``) or a hub id
            (``reachomk/gen2seg-sd``, ``reachomk/gen2seg-mae-h``), read by ``load_gen2seg``.
        out: engines directory (None: ``engines/<checkpoint name>``), replaced atomically.
        precisions: non-empty subset of ``("fp32", "fp16")``; the fp32 graphs are always exported
            (sources of the fp16 ones) and kept only when ``"fp32"`` is asked for.
        size: SD: the fixed processing size S (a multiple of 8; default ``config.processing_size``);
            MAE: must equal the ViT's image size. The manifest's config records it.
        log: where progress lines go (default: print). progress: tqdm bar over the graphs.
        force: accepted for symmetry with ``build_engines``; every run rebuilds everything anyway.
        check_samples: synthetic check images (``check_images``). max_batch: largest batch of the
            recorded TensorRT profiles (the graphs' batch axis is dynamic). opset: 17..20.
        workspace_gib: TensorRT workspace in the recorded trtexec commands.

    Returns a ``BuildResult`` (``reused`` is always empty). Raises ConfigError (bad arguments),
    ArtifactNotFoundError / ArtifactMismatchError (checkpoint), ExportError, FidelityError.
    """
    start = time.perf_counter()
    log = log or _log_default
    wanted = tuple(dict.fromkeys(precisions))
    if not wanted or any(p not in PRECISIONS for p in wanted):
        raise ConfigError(f"gen2seg engines are built in {PRECISIONS}; got precisions {list(precisions)} "
                          "(int8/fp8 and TensorRT plans are not built for gen2seg by this version).")
    for name, value in (("check_samples", check_samples), ("max_batch", max_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an int >= 1, got {value!r}.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise ConfigError(f"size must be an int >= 8, got {size!r}.")
    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(f"opset must be in 17..20, got {opset!r}.")
    from ..model.gen2seg.loading import load_gen2seg, resolve_source

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
    with BuildLock(out):
        remove_stale_staging(out, log)
        return _build(model, str(checkpoint), directory, digest, out, wanted, size, log, progress, check_samples,
                      max_batch, opset, workspace_gib, start)


def _build(model, source: str, directory: Path | None, digest: str, out: Path, wanted: tuple[str, ...], size: int,
           log, progress: bool, check_samples: int, max_batch: int, opset: int, workspace_gib: float,
           start: float) -> BuildResult:
    from tqdm.auto import tqdm

    config = model.config
    stages = STAGES[config.variant]
    latent = int(model.vae.config.latent_channels) if config.variant == "sd" else 4
    samples = check_images(check_samples, size)
    log(f"computing the PyTorch reference on {check_samples} synthetic check images at {size}x{size}")
    refs = reference_stages(model, reference_inputs(model, [s[0] for s in samples], size))
    colour_refs = [reference_colour(model, rgb, size) for rgb, _ in samples]
    processing = processing_entry(model, size)
    modules = stage_modules(model)
    records: dict[tuple[str, str], dict] = {}
    end: dict[str, dict] = {}
    steps = [(stage, p) for p in ("fp32", "fp16") if p == "fp32" or p in wanted for stage in stages]
    with Staging(out) as staging:
        bar = tqdm(steps, desc="gen2seg graphs", disable=not progress)
        for stage, precision in bar:
            name = f"{stage}.{precision}.onnx"
            path = staging.path(name)
            sig = signature(stage, size, latent)
            log(f"exporting {name}")
            began = time.perf_counter()
            weight_bytes = module_bytes(modules[stage]) // (1 if precision == "fp32" else 2)
            big = weight_bytes > EXTERNAL_DATA_THRESHOLD
            if precision == "fp32":
                seconds = export_stage(modules[stage], stage, sig, path, opset=opset, external_data=big,
                                       timestep=config.timestep)
                details = {"method": "torch.onnx.export(dynamo=True), float32", "trace_seconds": round(seconds, 2)}
                if stage == "unet":
                    details["folded"] = [f"timestep t = {config.timestep} and its sinusoidal projection",
                                         f"empty-prompt embedding c∅ {list(model.empty_prompt_embedding.shape)} "
                                         f"({config.empty_prompt_padding})",
                                         "x0 = a*z + b*UNet(z) with (a, b) = " + str(list(model.coefficients))]
            else:
                source_path = staging.path(f"{stage}.fp32.onnx")
                details = convert_to_fp16(source_path, path, external_data=big)
                check_signature(path, sig, stage)
            export_seconds = time.perf_counter() - began
            fidelity = check_stage(path, stage, precision, *refs[stage])
            log(f"{name}: {export_seconds:.1f} s, max |onnx - torch| {fidelity['max_abs_error']:.3g} "
                f"(tolerance {fidelity['tolerance']:.3g})")
            inputs, outputs = io_specs(path)
            ops = op_counts(path)
            records[(stage, precision)] = {
                "stage": stage, "precision": precision, "runtime": "onnx", **file_record(path),
                "external_data": [file_record(path.parent / f) for f in external_data_files(path)],
                "inputs": [s.to_json() for s in inputs], "outputs": [s.to_json() for s in outputs],
                "profiles": _profiles(sig, max_batch), "opset": opset, "export_seconds": round(export_seconds, 2),
                "details": details, "graph": {"ops": ops, "sin_cos_nodes": ops.get("Sin", 0) + ops.get("Cos", 0)},
                "fidelity": fidelity}
            if stage == stages[-1]:
                files = {s: staging.path(f"{s}.{precision}.onnx") for s in stages}
                with EngineColourizer.from_files(processing, files, precision=precision) as colourizer:
                    end[precision] = end_to_end(colourizer, colour_refs, samples, precision)
                log(f"{precision} end to end: colour max error {end[precision]['colour_max_abs_error']:.3g} (float), "
                    f"{end[precision]['colour_uint8_max_abs_error']} (uint8); point-prompt mask IoU min "
                    f"{end[precision]['mask_iou_min']:.4f}")
        kept = [r for (stage, p), r in records.items() if p in wanted]
        sets = {p: {"onnx": {s: f"{s}.{p}.onnx" for s in stages}, "tensorrt": None} for p in wanted}
        config_json = json.loads(config.to_json())
        tools = tool_versions()
        data = {
            "format_version": FORMAT_VERSION, "sdk_version": __version__, "family": FAMILY,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config_json, "checkpoint": checkpoint_entry(source, directory, digest),
            "processing": processing, "max_batch": max_batch,
            "build_inputs": {"sdk_version": __version__, "family": FAMILY, "checkpoint_sha256": digest,
                             "config": config_json, "opset": opset, "check_samples": check_samples,
                             "fp16_keep_fp32": list(FP16_KEEP_FP32), "fp16_residual_adds_fp32": True,
                             "tools": {k: v for k, v in tools.items() if k != "tensorrt"}},
            "tools": tools,
            "tensorrt": skipped_summary(REASON, kept, workspace_gib),
            "artifacts": kept, "end_to_end": end, "sets": sets,
        }
        old = _old_files(out)
        staged = [r["file"] for r in kept] + [e["file"] for r in kept for e in r["external_data"]]
        commit(staging, staged, data, old, log)
    from .manifest import load_manifest

    manifest = load_manifest(out, verify=True, family=FAMILY)
    seconds = time.perf_counter() - start
    built = [r["file"] for r in kept]
    log(f"done in {seconds:.1f} s: {out / 'manifest.json'} (built {len(built)}, reused 0)")
    return BuildResult(out, manifest, built, [], seconds)


def _old_files(out: Path) -> set[str]:
    """Files the previous manifest in ``out`` listed (dropped by the commit), whatever its family."""
    try:
        return listed_files(read_manifest(out))
    except (ArtifactNotFoundError, ArtifactMismatchError):
        return set()
    except (TypeError, KeyError, AttributeError):  # a malformed previous manifest: nothing to carry over
        return set()
