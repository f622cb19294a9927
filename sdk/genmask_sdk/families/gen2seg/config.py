"""``Gen2SegConfig``: what our gen2seg checkpoints and engines need beyond the network weights.

Saved as ``gen2seg_config.json`` beside the weights (DESIGN.md §2b). The published checkpoints
(``reachomk/gen2seg-sd``, ``reachomk/gen2seg-mae-h``) have no such file; the loader then uses
the defaults below, which follow the official inference code (notes/gen2seg.md §1, §2).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from genmask_sdk.errors import ArtifactNotFoundError, ConfigError

CONFIG_NAME = "gen2seg_config.json"
FAMILY = "gen2seg"
VARIANTS = ("sd", "mae")

#: How the empty prompt "" is tokenised before the CLIP text encoder (SD variant only).
#: ``"do_not_pad"``: [BOS, EOS], an embedding of shape (1, 2, 1024); this is what the official
#: *inference* pipeline does, and so what the released weights are run with.
#: ``"max_length"``: padded to the tokenizer's 77 tokens, shape (1, 77, 1024); this is what the
#: official *training* script feeds the UNet. The two do not match upstream (notes §1).
PADDINGS = ("do_not_pad", "max_length")

#: Per-variant defaults: (processing_size, gamma).
#: SD: long side 768 (MarigoldImageProcessor default of the official pipeline), no gamma.
#: MAE: 224×224 (ViT-MAE-H's native grid), gamma 0.7 (official MAE inference post-processing).
_DEFAULTS: dict[str, tuple[int, float]] = {"sd": (768, 1.0), "mae": (224, 0.7)}


@dataclass(frozen=True)
class Gen2SegConfig:
    """Settings of one gen2seg model.

    Attributes:
        variant: ``"sd"`` (Stable Diffusion 2 UNet, one step) or ``"mae"`` (ViT-MAE-H, no masking).
        processing_size: SD: the long side the image is resized to (floor division), then padded to a
            multiple of 8; MAE: the side of the square input (must equal the ViT's ``image_size``).
            ``None`` picks the variant's default (768 / 224).
        timestep: SD only: the fixed UNet timestep t (default 999 = num_train_timesteps − 1, what
            training uses and what inference gets with a "trailing" one-step schedule).
        empty_prompt_padding: SD only: ``"do_not_pad"`` (default, inference, (1, 2, D)) or
            ``"max_length"`` (training, (1, 77, D)); see ``PADDINGS``.
        gamma: exponent applied after the min–max of the colour map. ``None`` picks the variant's
            default (SD 1.0 = none, MAE 0.7).
        name: a label for humans (hub id, training run, "tiny").
        pixel_head_channels, pixel_head_depth: MAE only: width and number of dilated 3×3 layers of
            the optional full-resolution ``PixelHead`` on the ViT's output (not in the published
            gen2seg; 0 channels = no head, the published layout). Weights in ``pixel_head.safetensors``.
        family: always ``"gen2seg"`` (tells gen2seg artefacts from GenMask ones).
    """

    variant: str = "sd"
    processing_size: int | None = None
    timestep: int = 999
    empty_prompt_padding: str = "do_not_pad"
    gamma: float | None = None
    name: str = "custom"
    pixel_head_channels: int = 0
    pixel_head_depth: int = 3
    family: str = FAMILY

    def __post_init__(self) -> None:
        if self.family != FAMILY:
            raise ConfigError(f"family must be {FAMILY!r}, got {self.family!r}; this is not a gen2seg config.")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant {self.variant!r} is unknown; use one of {VARIANTS}.")
        size, gamma = _DEFAULTS[self.variant]
        if self.processing_size is None:
            object.__setattr__(self, "processing_size", size)
        if self.gamma is None:
            object.__setattr__(self, "gamma", gamma)
        _check_int("processing_size", self.processing_size, minimum=8)
        _check_int("timestep", self.timestep, minimum=0)
        _check_int("pixel_head_channels", self.pixel_head_channels, minimum=0)
        _check_int("pixel_head_depth", self.pixel_head_depth, minimum=1)
        if self.pixel_head_channels and self.variant != "mae":
            raise ConfigError("pixel_head_channels applies to the MAE variant only; set it to 0 for SD.")
        if self.empty_prompt_padding not in PADDINGS:
            raise ConfigError(f"empty_prompt_padding {self.empty_prompt_padding!r} is unknown; use one of {PADDINGS}.")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not self.gamma > 0:
            raise ConfigError(f"gamma must be a positive number, got {self.gamma!r}.")

    # ------------------------------------------------------------------------------- constructors
    @classmethod
    def sd(cls, **overrides: Any) -> "Gen2SegConfig":
        """The SD variant with the official inference defaults (768, t=999, unpadded empty prompt)."""
        return cls(variant="sd", **overrides)

    @classmethod
    def mae(cls, **overrides: Any) -> "Gen2SegConfig":
        """The MAE variant with the official inference defaults (224², gamma 0.7)."""
        return cls(variant="mae", **overrides)

    def replace(self, **changes: Any) -> "Gen2SegConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Gen2SegConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown Gen2SegConfig fields {sorted(unknown)}; is the file from a newer SDK?")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "Gen2SegConfig":
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ConfigError(f"a gen2seg config is a JSON object, got {type(data).__name__}.")
        return cls.from_dict(data)

    def save(self, directory: str | Path) -> Path:
        """Write ``gen2seg_config.json`` into ``directory`` atomically; return its path."""
        from genmask_sdk.io import atomic_write_text

        path = Path(directory) / CONFIG_NAME
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "Gen2SegConfig":
        """Read ``directory/gen2seg_config.json``.

        Raises ``ArtifactNotFoundError`` when it is missing, ``ConfigError`` when it is invalid."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise ArtifactNotFoundError(
                f"{path} does not exist; a gen2seg checkpoint written by this SDK holds {CONFIG_NAME} "
                "(write one with Gen2SegSD/Gen2SegMAE.save_pretrained)."
            )
        try:
            return cls.from_json(path.read_text())
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path} is not a valid gen2seg config ({exc}); re-save the checkpoint.") from exc


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}.")
