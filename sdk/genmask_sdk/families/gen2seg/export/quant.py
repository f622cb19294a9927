"""INT8 gen2seg graphs: the UNet (SD) or the ViT (MAE) calibrated by NVIDIA Model Optimizer in
PyTorch and written as explicit Q/DQ into the fp32 graph — GenMask's path (``modelopt_calib`` +
``qdq``), with gen2seg's recipe and calibration images.

What is quantized (INT8 symmetric: per-tensor activations, per-output-channel weights, max
calibration), and what stays float32:

* SD: every ``Conv2d`` and ``Linear`` of the UNet (ResNet convs and shortcuts, down/up-samplers,
  attention q/k/v/out, GEGLU, transformer proj_in/out) except ``conv_in`` and ``conv_out`` (the
  latent's 4 channels in and the x0 prediction out) and the time embedding (``time_embedding``,
  each ResNet's ``time_emb_proj``: they act on the folded constant t). The VAE encoder and decoder
  graphs are not quantized: the int8 set runs them in float32 (``SETS``) — the VAE decoder's output
  *is* the colour map, and per-pixel colours are what the prompt step compares.
* MAE: the Linear layers of the encoder and decoder transformer layers (q/k/v, attention output,
  MLP); the patch embedding, ``decoder_embed`` and ``decoder_pred`` stay float32.
* Everywhere: norms, softmax, the attention score/value products (activation × activation).

Calibration images (``calibration_images``): ``"demo"`` (default) procedural scenes
(``genmask_sdk.data.generate_scene``, seed ``CALIB_SEED``, disjoint from the check images), a
folder of your own images (every PNG/JPEG/BMP/WebP in it, sorted by name, first N), or
``"random"`` (uniform noise: smoke tests and random-weight benchmarks only; a calibration on it is
meaningless). Each image goes through the same host processing as at run time and, for SD, the
PyTorch VAE encoder, so the UNet is calibrated on the latents it will see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from genmask_sdk.errors import ArtifactNotFoundError, ConfigError, InvalidInputError
from genmask_sdk.data.seeds import CALIB_SEED
from genmask_sdk.export.modelopt_calib import LayerQuant, calibrate, modelopt_version, module_config
from genmask_sdk.export.qdq import write_qdq_graph

#: The graph each variant quantizes.
QUANTIZED_STAGE = {"sd": "unet", "mae": "mae"}
#: precision set -> precision of the file used for each stage, per variant.
SETS: dict[str, dict[str, dict[str, str]]] = {
    "sd": {"fp32": {"vae_encoder": "fp32", "unet": "fp32", "vae_decoder": "fp32"},
           "fp16": {"vae_encoder": "fp16", "unet": "fp16", "vae_decoder": "fp16"},
           "int8": {"vae_encoder": "fp32", "unet": "int8", "vae_decoder": "fp32"}},
    "mae": {"fp32": {"mae": "fp32"}, "fp16": {"mae": "fp16"}, "int8": {"mae": "int8"}},
}
#: variant -> (module wildcards quantized, path fragments kept float32), in the stage module's names
#: (``SDUNetStage``: ``unet.*``; ``MAEGraph``: ``model.mae.vit.layers.N.*`` — ``vit.encoder.layer.N``
#: before transformers 5 — and ``model.mae.decoder.decoder_layers.N.*``).
RECIPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sd": (("unet.*",), ("unet.conv_in", "unet.conv_out", "time_embedding", "time_emb_proj")),
    "mae": (("*.vit.layers.*", "*.vit.encoder.layer.*", "*.decoder.decoder_layers.*"), ()),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
QUANT_FORMAT = "INT8 symmetric (zero point 0): per-tensor activations, per-output-channel weights"


def describe_source(source: str | Path | None) -> dict:
    """How the manifest records a calibration source (kind; seed, or the folder and its files)."""
    if source in (None, "demo"):
        return {"kind": "demo", "seed": CALIB_SEED}
    if source == "random":
        return {"kind": "random"}
    files = image_files(Path(source))
    return {"kind": "folder", "path": str(Path(source).expanduser().resolve()), "files": [f.name for f in files]}


def image_files(folder: Path) -> list[Path]:
    """The image files of a calibration folder, sorted by name (ArtifactNotFoundError if none)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ArtifactNotFoundError(f"calibration folder {folder} does not exist; pass a directory of images "
                                    f"({', '.join(IMAGE_SUFFIXES)}), 'demo' or 'random'.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ArtifactNotFoundError(f"calibration folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def calibration_images(source: str | Path | None, count: int, size: int) -> list[np.ndarray]:
    """``count`` uint8 (H, W, 3) RGB calibration images of ``source`` (fewer if a folder holds fewer)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"the number of calibration images must be an int >= 1, got {count!r}.")
    if source in (None, "demo"):
        from genmask_sdk.data import generate_scene

        return [np.array(generate_scene(CALIB_SEED, index, max(size, 32)).image) for index in range(count)]
    if source == "random":
        rng = np.random.default_rng(CALIB_SEED)
        return [rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8) for _ in range(count)]
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in image_files(Path(source))[:count]:
        try:
            with Image.open(path) as handle:
                images.append(np.asarray(handle.convert("RGB")))
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidInputError(f"calibration image {path} cannot be read ({exc}); remove it or fix it.") from exc
    return images


def stage_inputs(model, images: Sequence[np.ndarray], size: int) -> list[tuple[np.ndarray]]:
    """The quantized stage's input for each image, one (1, ...) float32 array per sample: SD the
    PyTorch VAE encoder's latent of the processed image, MAE the normalised pixels."""
    import torch

    from genmask_sdk.families.gen2seg.modeling.processing import reference_inputs

    out = []
    with torch.no_grad():
        for rgb in images:
            first = reference_inputs(model, [rgb], size)
            value = model.encode(first) if model.config.variant == "sd" else first
            out.append((value.float().numpy(),))
    return out


def calibrate_stage(module, variant: str, inputs: Sequence[tuple[np.ndarray]], *, mode: str = "int8",
                    progress: bool = True) -> tuple[list[LayerQuant], object]:
    """Model Optimizer calibration of the stage module (``SDUNetStage`` / ``MAEGraph``; unmodified)
    with the variant's recipe. Returns (calibrated layers, fake-quantized copy)."""
    include, exclude = RECIPES[variant]
    return calibrate(module, inputs, module_config(mode, include, exclude), mode=mode, progress=progress)


def quantize_stage(module, variant: str, fp32_path: Path, out_path: Path, inputs: Sequence[tuple[np.ndarray]], *,
                   external_data: bool = False, progress: bool = True) -> dict:
    """Write the INT8 Q/DQ graph ``out_path`` of the stage from its fp32 graph; the manifest's details."""
    layers, _ = calibrate_stage(module, variant, inputs, mode="int8", progress=progress)
    info = write_qdq_graph(fp32_path, out_path, layers, mode="int8", external_data=external_data)
    include, exclude = RECIPES[variant]
    return {"method": f"NVIDIA Model Optimizer {modelopt_version()} max calibration in PyTorch, explicit Q/DQ; "
                      + QUANT_FORMAT,
            "base": "fp32", "calibration_samples": len(inputs), "quantized_layers": info["quantized_matmuls"],
            "quantized_ops": info["quantized_ops"], "quantized_modules": list(include), "opset": info["opset"],
            "kept_in_float32": [*exclude, *(["patch embedding", "decoder_embed", "decoder_pred"]
                                           if variant == "mae" else []),
                                "norms and softmax", "attention score/value MatMuls"]}


__all__ = ["QUANTIZED_STAGE", "RECIPES", "SETS", "calibrate_stage", "calibration_images", "describe_source",
           "image_files", "quantize_stage", "stage_inputs"]
