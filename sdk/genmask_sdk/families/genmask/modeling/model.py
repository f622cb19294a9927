"""``GenMaskModel``: the PyTorch reference of GenMask (DESIGN.md §2) and its checkpoint format.

A checkpoint is a directory::

    genmask_config.json        GenMaskConfig
    transformer/               diffusers WanTransformer3DModel (save_pretrained format)
    vae/                       diffusers AutoencoderKLWan
    mask_head.safetensors      LinearProbeHead weights

The embedder is not stored: the config names it (MiniLM package, Qwen2.5-VL hub id or path).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from safetensors.torch import load_file, save_file
from torch import nn

from genmask_sdk.families.genmask.checkpoints import DEMO_NAME, demo_checkpoint_dir, resolve_checkpoint  # noqa: F401  (re-exported)
from genmask_sdk.families.genmask.config import EMBEDDERS, EmbedderSpec, GenMaskConfig
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError
from genmask_sdk.families.genmask.modeling.mask_head import LinearProbeHead
from genmask_sdk.families.genmask.modeling.vae import VaeEncoder, VaeMaskDecoder
from genmask_sdk.families.genmask.modeling.wan_forward import OneStepDiT

MASK_HEAD_FILE = "mask_head.safetensors"
TEXT_PROJECTION_KEY = "condition_embedder.text_embedder.linear_1"


def fixed_noise(config: GenMaskConfig) -> torch.Tensor:
    """ε*: (1, 16, R/8, R/8) float32 standard normal, drawn on CPU from ``config.noise_seed``."""
    generator = torch.Generator().manual_seed(config.noise_seed)
    size = config.latent_size
    return torch.randn(1, config.transformer["in_channels"], size, size, generator=generator)


class GenMaskModel(nn.Module):
    """GenMask: VAE encoder -> one-step DiT (image latent as a clean first frame) -> mask head.

    Use ``from_pretrained`` for a checkpoint, ``from_config`` for random weights (``device="meta"``
    allocates nothing), ``from_backbones`` to start fine-tuning from Wan2.1.
    """

    def __init__(self, config: GenMaskConfig, transformer: WanTransformer3DModel, vae: AutoencoderKLWan,
                 mask_head: LinearProbeHead) -> None:
        super().__init__()
        self.config = config
        self.transformer = transformer
        self.vae = vae
        self.mask_head = mask_head
        # Plain-attribute caches (kept out of nn.Module registration, so state_dict stays clean).
        self.__dict__["_embedder"] = None
        self.__dict__["_cached"] = {}

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_config(cls, config: GenMaskConfig, device: str | torch.device = "cpu") -> "GenMaskModel":
        """Random weights for ``config``. On ``device="meta"`` no memory is allocated."""
        with torch.device(device):
            transformer = WanTransformer3DModel(**config.transformer)
            vae = AutoencoderKLWan(**config.vae)
            head = LinearProbeHead(config.vae.get("z_dim", 16), 8)
        return cls(config, transformer, vae, head).eval()

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEMO_NAME, device: str | torch.device = "cpu") -> "GenMaskModel":
        """Load ``"demo"`` (shipped in the package), a local checkpoint directory or a hub id."""
        directory = resolve_checkpoint(name_or_path)
        config = GenMaskConfig.load(directory)
        transformer = WanTransformer3DModel.from_pretrained(directory / "transformer")
        vae = AutoencoderKLWan.from_pretrained(directory / "vae")
        head = LinearProbeHead(config.vae.get("z_dim", 16), 8)
        head.load_state_dict(_load_head_weights(directory / MASK_HEAD_FILE))
        model = cls(config, transformer, vae, head).eval()
        model.checkpoint_dir = directory
        return model.to(device)

    @classmethod
    def from_backbones(cls, wan: str | os.PathLike, vlm: str | EmbedderSpec = "qwen2.5-vl-7b",
                       resolution: int = 512, device: str | torch.device = "cpu", **overrides: Any) -> "GenMaskModel":
        """An untrained GenMask from a Wan2.1 diffusers checkpoint (hub id or local directory).

        Transformer and VAE weights are loaded unchanged except the text projection's first layer,
        re-initialised with input width = the embedder's hidden size. ``vlm`` is a key of
        ``EMBEDDERS`` (e.g. ``"qwen2.5-vl-3b"``), a hub id / path of a Qwen2.5-VL checkpoint, or
        an ``EmbedderSpec``.
        """
        spec = vlm_embedder_spec(vlm)
        transformer = WanTransformer3DModel.from_pretrained(wan, subfolder="transformer")
        vae = AutoencoderKLWan.from_pretrained(wan, subfolder="vae")
        transformer = with_text_width(transformer, spec.hidden_size)
        config = GenMaskConfig(transformer=dict(transformer_init_kwargs(transformer)), vae=dict(transformer_init_kwargs(vae)),
                               embedder=spec, resolution=resolution, name=f"from:{wan}", **overrides)
        head = LinearProbeHead(config.vae.get("z_dim", 16), 8)
        return cls(config, transformer, vae, head).to(device)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint directory atomically (a complete directory appears, or nothing)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            self.config.save(staging)
            self.transformer.save_pretrained(staging / "transformer")
            self.vae.save_pretrained(staging / "vae")
            head = {k: v.detach().cpu().contiguous() for k, v in self.mask_head.state_dict().items()}
            save_file(head, str(staging / MASK_HEAD_FILE))
            _replace_directory(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    # ---------------------------------------------------------------------------------- inference
    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def embedder(self):
        """The instruction embedder named by the config, loaded on first use."""
        if self._embedder is None:
            from genmask_sdk.families.genmask.modeling.embedders import load_embedder

            self.set_embedder(load_embedder(self.config.embedder, self.device))
        return self._embedder

    def set_embedder(self, embedder) -> None:
        self.__dict__["_embedder"] = embedder

    def one_step_dit(self) -> OneStepDiT:
        """The folded one-step DiT at the config's resolution, cached per device and dtype
        (rebuilt after ``invalidate``)."""
        param = next(self.transformer.parameters())
        key = ("one_step", param.device, param.dtype)
        if key not in self._cached:
            noise = fixed_noise(self.config).to(param.device)
            self._cached[key] = OneStepDiT(self.transformer, noise, self.config.t_star).eval()
        return self._cached[key]

    def invalidate(self) -> None:
        """Drop cached constants; call after changing the transformer's weights."""
        self._cached.clear()

    def train(self, mode: bool = True) -> "GenMaskModel":
        self.invalidate()
        return super().train(mode)

    def vae_encoder(self) -> VaeEncoder:
        return VaeEncoder(self.vae)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, R, R) float32 in [-1, 1] -> z_img (B, 16, R/8, R/8) normalised."""
        return self.vae_encoder()(pixels)

    def predict_latent(self, z_img: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One DiT step: z_img (B, 16, h, w), states (B, L, D), mask (B, L) -> x0_hat (B, 16, h, w)."""
        return self.one_step_dit()(z_img, states, mask)

    def mask_decoder(self) -> nn.Module:
        """The module ``config.mask_decoder`` names: the linear probe (``"linear_probe"``) or the
        VAE decoder followed by the mean over RGB (``"vae_decoder"``). latent (B, 16, h, w) ->
        logits (B, 1, 8h, 8w). This is also what the exporter writes as the ``mask_head`` graph."""
        if self.config.mask_decoder == "vae_decoder":
            return VaeMaskDecoder(self.vae).eval()
        return self.mask_head

    def decode_mask(self, latent: torch.Tensor) -> torch.Tensor:
        """x0_hat (B, 16, h, w) -> logits (B, 1, 8h, 8w); > 0 is inside the mask."""
        return self.mask_decoder()(latent)

    @torch.no_grad()
    def segment(self, image: Any, prompts: str | Sequence[str]) -> torch.Tensor:
        """Reference end to end: any image (see ``imaging.load_image``) + prompt(s) ->
        mask logits (P, H, W) float32 at the original image size (mask = logits > 0)."""
        from genmask_sdk.families.genmask.modeling.imaging import load_image, to_engine_pixels, to_original_logits

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        picture = load_image(image).to(self.device)
        pixels, box = to_engine_pixels(picture, self.config.resolution)
        z_img = self.encode_image(pixels)
        pil = _tensor_to_pil(picture) if self.embedder.uses_image else None
        embedding = self.embedder([pil] * len(prompts) if pil else None, prompts)
        latent = self.predict_latent(z_img.expand(len(prompts), -1, -1, -1), embedding.states, embedding.mask)
        return to_original_logits(self.decode_mask(latent), box)


# --------------------------------------------------------------------------------------- helpers
def _load_head_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ArtifactNotFoundError(f"{path} is missing; the checkpoint is incomplete, re-save it.")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise ArtifactMismatchError(f"{path} is not a valid safetensors file ({exc}); re-save the checkpoint.") from exc


def _replace_directory(staging: Path, target: Path) -> None:
    """Swap ``staging`` into ``target``; an existing target is moved aside first, then deleted."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, backup)
    os.replace(staging, target)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def vlm_embedder_spec(vlm: str | EmbedderSpec) -> EmbedderSpec:
    """The ``EmbedderSpec`` of ``vlm``: a spec as is, a key of ``config.EMBEDDERS``, or a Qwen2.5-VL
    hub id / directory (its text width read from the config)."""
    if isinstance(vlm, EmbedderSpec):
        return vlm
    if vlm in EMBEDDERS:
        return EMBEDDERS[vlm]
    from genmask_sdk.families.genmask.config import qwen_spec
    from genmask_sdk.families.genmask.modeling.embedders.qwen import read_text_hidden_size

    return qwen_spec(str(vlm), read_text_hidden_size(str(vlm)))


def with_text_width(transformer: WanTransformer3DModel, width: int) -> WanTransformer3DModel:
    """Replace the text projection's first Linear by a freshly initialised one taking ``width`` inputs."""
    projection = transformer.condition_embedder.text_embedder
    old = projection.linear_1
    projection.linear_1 = nn.Linear(width, old.out_features, bias=old.bias is not None,
                                    device=old.weight.device, dtype=old.weight.dtype)
    transformer.register_to_config(text_dim=width)
    return transformer


def transformer_init_kwargs(module) -> dict[str, Any]:
    """A diffusers model's constructor kwargs (its config without the bookkeeping keys)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in module.config.items() if not k.startswith("_")}


def _tensor_to_pil(picture: torch.Tensor):
    from PIL import Image

    array = (picture.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)
