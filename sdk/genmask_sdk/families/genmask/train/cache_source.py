"""Where the frozen stages come from: a GenMask checkpoint, or the public backbones.

* ``--checkpoint CKPT``: ``"demo"``, a directory written by ``GenMaskModel.save_pretrained`` or a hub
  id of one: its ``vae/`` and the embedder its ``genmask_config.json`` names, at its resolution.
* ``--vae WAN --embedder NAME``: the VAE of a Wan2.1 diffusers checkpoint (hub id such as
  ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``, or a local directory with ``vae/``) and an embedder
  (``qwen2.5-vl-7b``, ``qwen2.5-vl-3b``, ``minilm``, or a Qwen2.5-VL hub id / directory), at
  ``--resolution`` (512 by default): what a real GenMask fine-tune caches.

The identity of a source (``source_identity``) hashes the embedder spec and the VAE's files; the
cache records it and ``train.finetune`` compares it, so latents and states from different frozen
stages are never mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from genmask_sdk.families.genmask.config import EmbedderSpec, GenMaskConfig
from genmask_sdk.errors import ArtifactNotFoundError, ConfigError

DEFAULT_BACKBONE_RESOLUTION = 512


@dataclass(frozen=True)
class FrozenSource:
    """The frozen stages of a cache.

    Attributes:
        label: what the user passed, for messages (``"demo"``, a path, ``"vae:<id>"``).
        vae_dir: directory holding the VAE (``config.json`` + weights, diffusers layout).
        embedder: the instruction embedder (D = ``embedder.hidden_size``).
        resolution: engine resolution R (images letterboxed to R×R, latents R/8 × R/8).
    """

    label: str
    vae_dir: Path
    embedder: EmbedderSpec
    resolution: int

    @property
    def identity(self) -> str:
        return source_identity(self.embedder, self.vae_dir)


def source_identity(embedder: EmbedderSpec, vae_dir: Path) -> str:
    """SHA-256 over the embedder spec (JSON) and every file of ``vae_dir`` (path, size, content)."""
    from genmask_sdk.export.manifest import checkpoint_sha256

    spec = json.dumps(dataclasses.asdict(embedder), sort_keys=True)
    return hashlib.sha256(f"{spec}\0{checkpoint_sha256(vae_dir)}".encode()).hexdigest()


def resolve_source(checkpoint: str | None = None, vae: str | None = None, embedder: str | None = None,
                   resolution: int | None = None) -> FrozenSource:
    """The ``FrozenSource`` of the command-line options (exactly one of ``checkpoint`` / ``vae``).

    Raises ConfigError (neither or both given, ``embedder`` with a checkpoint, a bad resolution),
    ArtifactNotFoundError (a checkpoint or VAE that cannot be found).
    """
    if (checkpoint is None) == (vae is None):
        raise ConfigError("pass exactly one of --checkpoint CKPT (a GenMask checkpoint: 'demo', a directory or a "
                          "hub id) or --vae WAN --embedder NAME (the public backbones).")
    if checkpoint is not None:
        if embedder is not None:
            raise ConfigError("--embedder goes with --vae; a checkpoint names its own embedder in genmask_config.json.")
        return _from_checkpoint(str(checkpoint), resolution)
    return _from_backbones(str(vae), embedder or "qwen2.5-vl-7b", resolution or DEFAULT_BACKBONE_RESOLUTION)


def _check_resolution(resolution: int) -> int:
    if not isinstance(resolution, int) or resolution <= 0 or resolution % 16:
        raise ConfigError(f"--resolution must be a positive multiple of 16 (VAE 8x times patch 2), got {resolution!r}.")
    return resolution


def _from_checkpoint(checkpoint: str, resolution: int | None) -> FrozenSource:
    from genmask_sdk.families.genmask.checkpoints import resolve_checkpoint

    directory = resolve_checkpoint(checkpoint)
    config = GenMaskConfig.load(directory)
    vae_dir = directory / "vae"
    if not (vae_dir / "config.json").is_file():
        raise ArtifactNotFoundError(f"{vae_dir} is missing; {directory} is not a complete GenMask checkpoint.")
    return FrozenSource(checkpoint, vae_dir, config.embedder, _check_resolution(resolution or config.resolution))


def _from_backbones(vae: str, embedder: str, resolution: int) -> FrozenSource:
    from genmask_sdk.families.genmask.modeling.model import vlm_embedder_spec

    root = Path(vae).expanduser()
    if not root.is_dir():
        root = _download_vae(vae)
    vae_dir = root / "vae" if (root / "vae" / "config.json").is_file() else root
    if not (vae_dir / "config.json").is_file():
        raise ArtifactNotFoundError(f"no VAE in {root}: expected {root}/vae/config.json (a Wan2.1 diffusers "
                                    "checkpoint) or config.json of an AutoencoderKLWan.")
    return FrozenSource(f"vae:{vae}", vae_dir, vlm_embedder_spec(embedder), _check_resolution(resolution))


def _download_vae(repo_id: str) -> Path:
    """The ``vae/`` folder of a hub repository (only that folder is downloaded)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["vae/*"]))
    except Exception as exc:  # network errors, missing repositories and offline mode all land here
        raise ArtifactNotFoundError(
            f"could not fetch the VAE of {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}); "
            "download the checkpoint on a connected machine and pass its local directory to --vae.") from exc


def load_frozen_stages(source: FrozenSource, device):
    """(VaeEncoder in eval mode on ``device``, the AutoencoderKLWan, the embedder) of ``source``."""
    from diffusers import AutoencoderKLWan

    from genmask_sdk.families.genmask.modeling.embedders import load_embedder
    from genmask_sdk.families.genmask.modeling.vae import VaeEncoder

    vae = AutoencoderKLWan.from_pretrained(source.vae_dir).to(device).eval()
    return VaeEncoder(vae).to(device).eval(), vae, load_embedder(source.embedder, device)
