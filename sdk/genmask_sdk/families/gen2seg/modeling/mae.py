"""``Gen2SegMAE``: the PyTorch reference of gen2seg's ViT-MAE variant (DESIGN.md §2b).

transformers' ``ViTMAEForPreTraining`` run *without masking, in identity patch order*: patch
embedding + position embedding → encoder → decoder embedding + decoder position embedding →
decoder → per-patch predictions (CLS dropped). No ``random_masking`` (torch.rand, argsort, gather)
and no loss (0/0 = NaN at mask ratio 0), so the forward is a static graph that exports.

Upstream runs the stock forward with mask ratio 0, which still shuffles the patches with random
noise and restores the order in the decoder: the same result up to float rounding (notes §2).
Input normalisation is ImageNet mean/std after /255, the default of the ViT-MAE image processor
(``facebook/vit-mae-huge``'s processor config was not fetched). Input size S² = 224² for MAE-H.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError
from genmask_sdk.families.gen2seg.config import CONFIG_NAME
from genmask_sdk.families.gen2seg.modeling.pixel_head import HEAD_FILE
from genmask_sdk.families.gen2seg.modeling.sources import Source, _config, _expect, _load, _write_directory, resolve_source
from genmask_sdk.errors import ConfigError
from genmask_sdk.families.gen2seg.config import Gen2SegConfig
from genmask_sdk.families.gen2seg.modeling.pixel_head import PixelHead
from genmask_sdk.families.gen2seg.modeling.processing import min_max_gamma, preprocess_mae, resize_to_original

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """(B, h·w, p·p·C) -> (B, C, h·p, w·p), a square grid (h = w), in transformers' ``patchify``
    order: each patch vector is (p_row, p_col, channel) row-major, patches row-major."""
    batch, count, _ = patches.shape
    side = int(round(count**0.5))
    if side * side != count:
        raise ValueError(f"{count} patches do not form a square grid.")
    grid = patches.reshape(batch, side, side, patch_size, patch_size, channels)
    return grid.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, side * patch_size, side * patch_size)


def _run_layers(layers: nn.ModuleList, hidden: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        out = layer(hidden)
        hidden = out[0] if isinstance(out, tuple) else out  # transformers 4.x layers return tuples
    return hidden


def _encoder_layers(vit: nn.Module) -> nn.ModuleList:
    """The encoder's layer list: ``vit.layers`` (transformers 5) or ``vit.encoder.layer`` (4.x)."""
    layers = getattr(vit, "layers", None)
    return layers if layers is not None else vit.encoder.layer


class Gen2SegMAE(nn.Module):
    """gen2seg-mae: ``ViTMAEForPreTraining`` as an unmasked encoder–decoder colouring network.

    ``forward``: normalised pixels (B, 3, S, S) float32 -> predictions (B, (S/p)², p²·3).
    ``predict_image``: pixels in [0, 1] -> (B, 3, S, S) raw output; ``color_map`` -> [0, 255].
    """

    def __init__(self, config: Gen2SegConfig, mae: nn.Module) -> None:
        super().__init__()
        if config.variant != "mae":
            raise ConfigError(f"Gen2SegMAE needs a config with variant 'mae', got {config.variant!r}.")
        size = mae.config.image_size
        if config.processing_size != size:
            raise ConfigError(f"processing_size {config.processing_size} differs from the ViT-MAE image_size {size}; "
                              "gen2seg-mae runs at the ViT's native grid (no position-embedding interpolation).")
        mae.config.mask_ratio = 0.0  # so that even the stock transformers forward does not mask
        self.config = config
        self.mae = mae
        self.patch_size = int(mae.config.patch_size)
        self.channels = int(mae.config.num_channels)
        self.pixel_head = (PixelHead(config.pixel_head_channels, config.pixel_head_depth, self.channels)
                           if config.pixel_head_channels else None)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_config(cls, mae_config: Any, config: Gen2SegConfig | None = None,
                    device: str | torch.device = "cpu") -> "Gen2SegMAE":
        """Random weights for a ``ViTMAEConfig``; ``device="meta"`` allocates nothing."""
        from transformers import ViTMAEForPreTraining

        config = config or Gen2SegConfig.mae(processing_size=mae_config.image_size)
        with torch.device(device):
            mae = ViTMAEForPreTraining(mae_config)
        return cls(config, mae).eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, local_files_only: bool = False,
                        device: str | torch.device = "cpu", **overrides: Any) -> "Gen2SegMAE":
        """A published ViTMAEForPreTraining folder or hub id (``reachomk/gen2seg-mae-h``), or a
        directory written by ``save_pretrained``. ``overrides`` replace ``Gen2SegConfig`` fields."""
        source = resolve_source(name_or_path, local_files_only)
        _expect(source, "mae")
        return _load_mae(source, device, overrides)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write ``gen2seg_config.json`` + the transformers checkpoint (config.json, weights)."""
        return save_mae(self, path)

    # ---------------------------------------------------------------------------------- network
    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> ImageNet-normalised."""
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (B, 3, S, S) float32 -> predictions (B, L, p²·3), L = (S/p)², CLS dropped."""
        vit, decoder = self.mae.vit, self.mae.decoder
        embeddings = vit.embeddings
        positions = embeddings.position_embeddings  # (1, 1 + L, D): CLS first
        patches = embeddings.patch_embeddings(pixel_values) + positions[:, 1:]
        cls = (embeddings.cls_token + positions[:, :1]).expand(patches.shape[0], -1, -1)
        hidden = vit.layernorm(_run_layers(_encoder_layers(vit), torch.cat([cls, patches], dim=1)))
        hidden = decoder.decoder_embed(hidden) + decoder.decoder_pos_embed
        hidden = decoder.decoder_norm(_run_layers(decoder.decoder_layers, hidden))
        return decoder.decoder_pred(hidden)[:, 1:]

    def unpatchify(self, predictions: torch.Tensor) -> torch.Tensor:
        """(B, L, p²·3) -> (B, 3, S, S)."""
        return unpatchify(predictions, self.patch_size, self.channels)

    def raw_image(self, normalised: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (B, 3, S, S) -> raw output image (B, 3, S, S) float32 (unbounded):
        the unpatchified ViT output, refined by the pixel head when the model has one."""
        coarse = self.unpatchify(self(normalised))
        return coarse if self.pixel_head is None else self.pixel_head(coarse, normalised)

    def predict_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> raw output image (B, 3, S, S) float32 (unbounded)."""
        return self.raw_image(self.normalise(pixels))

    def color_map(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) raw -> float in [0, 255): per image ((x+|min|)/(|max|+|min|+1e-5))^γ · 255."""
        return min_max_gamma(image, self.config.gamma, eps=1e-5, per_image=True)

    @property
    def device(self) -> torch.device:
        return next(self.mae.parameters()).device

    @torch.no_grad()
    def colorize(self, image: Any) -> np.ndarray:
        """Reference end to end, as the official ``inference_mae.py``: any image -> (H, W, 3) uint8 at
        the original size (S×S bicubic resize, network, min–max + gamma, uint8, LANCZOS back)."""
        from genmask_sdk.families.gen2seg.modeling.processing import as_batch

        picture = as_batch(image)[0]
        pixels = preprocess_mae(picture[None], self.config.processing_size).to(self.device)
        return resize_to_original(self.color_map(self.predict_image(pixels))[0], tuple(picture.shape[-2:]))


class MAEColorStage(nn.Module):
    """The whole MAE network as one graph: pixels (B, 3, S, S) in [0, 1] -> colour (B, 3, S, S) in [0, 255)."""

    def __init__(self, model: Gen2SegMAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.color_map(self.model.predict_image(pixels))


# ------------------------------------------------------------- reading and writing checkpoints
def _load_mae(source: Source, device: str | torch.device, overrides: dict[str, Any]) -> Gen2SegMAE:
    from transformers import ViTMAEForPreTraining

    mae = _load("ViTMAEForPreTraining", source, lambda: ViTMAEForPreTraining.from_pretrained(
        source.root, dtype=torch.float32, **source.kwargs()))
    default = Gen2SegConfig.mae(processing_size=int(mae.config.image_size), name=source.root)
    config = _config(source, default, overrides)
    model = Gen2SegMAE(config, mae.eval())
    if model.pixel_head is not None:
        _load_pixel_head(model, source)
    return model.to(device).eval()


def _load_pixel_head(model: Gen2SegMAE, source: Source) -> None:
    """Fill ``model.pixel_head`` from ``pixel_head.safetensors`` (its config asks for a head)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = source.file(HEAD_FILE)
    if path is None:
        raise ArtifactNotFoundError(f"{source.root} asks for a pixel head (pixel_head_channels="
                                    f"{model.config.pixel_head_channels}) but has no {HEAD_FILE}; "
                                    "re-save the checkpoint with Gen2SegMAE.save_pretrained.")
    try:
        model.pixel_head.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError, SafetensorError) as exc:  # missing/unexpected keys or shapes; a damaged file
        raise ArtifactMismatchError(f"{path} does not match the pixel head of {CONFIG_NAME} "
                                    f"(channels {model.config.pixel_head_channels}, depth "
                                    f"{model.config.pixel_head_depth}): {exc}") from exc


def save_mae(model: Gen2SegMAE, path: str | os.PathLike) -> Path:
    """Our MAE checkpoint: config + the transformers checkpoint (still loadable by transformers alone)."""

    from safetensors.torch import save_file

    def write(staging: Path) -> None:
        model.mae.save_pretrained(staging)
        model.config.save(staging)
        if model.pixel_head is not None:
            weights = {k: v.detach().float().cpu().contiguous() for k, v in model.pixel_head.state_dict().items()}
            save_file(weights, str(staging / HEAD_FILE))

    return _write_directory(Path(path), write)
