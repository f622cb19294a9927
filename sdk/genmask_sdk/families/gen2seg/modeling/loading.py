"""Loading and saving gen2seg models: the published layouts and our own checkpoint format.

Accepted sources (a local directory or a hub id ``owner/name``):

- published SD (``reachomk/gen2seg-sd``): a diffusers pipeline folder, ``vae/``, ``unet/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (+ ``model_index.json``);
- published MAE (``reachomk/gen2seg-mae-h``): a transformers ``ViTMAEForPreTraining`` folder
  (``config.json`` with ``model_type: vit_mae`` + weights);
- ours (``save_pretrained``): ``gen2seg_config.json`` plus, for SD, ``vae/``, ``unet/``,
  ``scheduler/`` and ``empty_prompt_embedding.safetensors`` (c∅, so CLIP is not needed), or, for
  MAE, the transformers checkpoint files beside it.

The weights are read by diffusers' / transformers' own ``from_pretrained`` (fp32). A GenMask
checkpoint or an unknown layout raises ``ArtifactMismatchError``; a missing path
``ArtifactNotFoundError``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from genmask_sdk.families.genmask.config import CONFIG_NAME as GENMASK_CONFIG_NAME
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError
from genmask_sdk.families.registry import GEN2SEG_DEMO
from genmask_sdk.families.gen2seg.config import CONFIG_NAME, Gen2SegConfig
from genmask_sdk.families.gen2seg.modeling.mae import Gen2SegMAE
from genmask_sdk.families.gen2seg.modeling.pixel_head import HEAD_FILE
from genmask_sdk.families.gen2seg.modeling.schedule import one_step_inference_timestep, scheduler_subset
from genmask_sdk.families.gen2seg.modeling.sd import Gen2SegSD, empty_prompt_embedding

logger = logging.getLogger("genmask_sdk.gen2seg")

#: The released checkpoints (README of the official repository) and their variants.
KNOWN_HUB_IDS = {"reachomk/gen2seg-sd": "sd", "reachomk/gen2seg-mae-h": "mae"}
EMBEDDING_FILE = "empty_prompt_embedding.safetensors"
EMBEDDING_KEY = "empty_prompt_embedding"


# ----------------------------------------------------------------------------------- sources
@dataclass(frozen=True)
class Source:
    """Where a checkpoint is: ``root`` is a local directory or a hub id (``local`` tells which)."""

    root: str
    local: bool
    local_files_only: bool = False

    def file(self, name: str) -> Path | None:
        """The path of ``name`` (a relative file path), fetched from the hub if needed; None if absent."""
        if self.local:
            path = Path(self.root) / name
            return path if path.is_file() else None
        return _hub_file(self.root, name, self.local_files_only)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for diffusers/transformers ``from_pretrained``."""
        return {"local_files_only": self.local_files_only}


def resolve_source(name_or_path: str | os.PathLike, local_files_only: bool = False) -> Source:
    """``"demo-gen2seg"`` (the shipped demo), an existing directory, or a hub id ``owner/name``;
    anything else is ``ArtifactNotFoundError``."""
    text = str(name_or_path)
    if text == GEN2SEG_DEMO and not isinstance(name_or_path, Path):
        from genmask_sdk.families.gen2seg.checkpoints import demo_gen2seg_dir

        return Source(str(demo_gen2seg_dir()), True, True)
    path = Path(text).expanduser()
    if path.is_dir():
        return Source(str(path), True, local_files_only)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1 or isinstance(name_or_path, Path):
        raise ArtifactNotFoundError(
            f"{text} is not a gen2seg checkpoint directory; pass a directory (a published gen2seg folder or one "
            f"written by save_pretrained) or a hub id such as {sorted(KNOWN_HUB_IDS)}."
        )
    return Source(text, False, local_files_only)


def _hub_file(repo_id: str, name: str, local_files_only: bool) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, name, local_files_only=local_files_only))
    except LocalEntryNotFoundError:
        return None  # offline and not cached: treated as absent; required files fail in from_pretrained
    except EntryNotFoundError:
        return None
    except Exception as exc:  # missing repository, network errors
        raise ArtifactNotFoundError(
            f"could not read {name!r} of hub repository {repo_id!r} ({type(exc).__name__}: {exc}). "
            "Download the repository on a connected machine and pass the local directory instead."
        ) from exc


def detect_variant(source: Source) -> str:
    """``"sd"`` or ``"mae"`` from the files at ``source``; raises for GenMask and unknown layouts."""
    if source.file(GENMASK_CONFIG_NAME) is not None:
        raise ArtifactMismatchError(
            f"{source.root} is a GenMask checkpoint ({GENMASK_CONFIG_NAME}), not a gen2seg one; "
            "load it with GenMaskModel.from_pretrained."
        )
    config_file = source.file(CONFIG_NAME)
    if config_file is not None:
        return _read_config(config_file).variant
    if not source.local and source.root in KNOWN_HUB_IDS:
        return KNOWN_HUB_IDS[source.root]
    if source.file("unet/config.json") is not None and source.file("vae/config.json") is not None:
        return "sd"
    transformers_config = source.file("config.json")
    if transformers_config is not None:
        model_type = _json(transformers_config).get("model_type")
        if model_type == "vit_mae":
            return "mae"
        raise ArtifactMismatchError(f"{source.root} holds a transformers model of type {model_type!r}; "
                                    "gen2seg-mae needs a ViTMAEForPreTraining checkpoint (model_type 'vit_mae').")
    expected = (f"expected {CONFIG_NAME}, a diffusers pipeline folder with unet/ and vae/ (gen2seg-sd), "
                "or a ViT-MAE config.json (gen2seg-mae)")
    if not source.local:
        raise ArtifactNotFoundError(f"hub repository {source.root!r} has none of the gen2seg files, or they are not "
                                    f"in the local hub cache (local_files_only={source.local_files_only}): {expected}.")
    raise ArtifactMismatchError(f"{source.root} is not a gen2seg checkpoint: {expected}.")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactMismatchError(f"{path} is not valid JSON ({exc}).") from exc
    return data if isinstance(data, dict) else {}


def _read_config(path: Path) -> Gen2SegConfig:
    try:
        return Gen2SegConfig.from_json(Path(path).read_text())
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"{path} is not a valid gen2seg config ({exc}); re-save the checkpoint.") from exc


def _config(source: Source, default: Gen2SegConfig, overrides: dict[str, Any]) -> Gen2SegConfig:
    path = source.file(CONFIG_NAME)
    config = _read_config(path) if path is not None else default
    return config.replace(**overrides) if overrides else config


def _load(what: str, source: Source, loader: Callable[[], Any]) -> Any:
    """Run a ``from_pretrained`` call; missing files become ``ArtifactNotFoundError``."""
    try:
        return loader()
    except OSError as exc:  # diffusers/transformers raise OSError (EnvironmentError) for missing files
        raise ArtifactNotFoundError(f"could not load the {what} of {source.root}: {exc}") from exc


# ----------------------------------------------------------------------------------- loading
def load_gen2seg(name_or_path: str | os.PathLike, local_files_only: bool = False,
                 device: str | torch.device = "cpu", **overrides: Any) -> Gen2SegSD | Gen2SegMAE:
    """Load a gen2seg model of either variant (detected from the files)."""
    source = resolve_source(name_or_path, local_files_only)
    if detect_variant(source) == "sd":
        return _load_sd(source, device, overrides)
    return _load_mae(source, device, overrides)


def load_sd(name_or_path: str | os.PathLike, local_files_only: bool = False,
            device: str | torch.device = "cpu", **overrides: Any) -> Gen2SegSD:
    """Load gen2seg-sd; raises ``ArtifactMismatchError`` if the source is an MAE checkpoint."""
    source = resolve_source(name_or_path, local_files_only)
    _expect(source, "sd")
    return _load_sd(source, device, overrides)


def load_mae(name_or_path: str | os.PathLike, local_files_only: bool = False,
             device: str | torch.device = "cpu", **overrides: Any) -> Gen2SegMAE:
    """Load gen2seg-mae; raises ``ArtifactMismatchError`` if the source is an SD checkpoint."""
    source = resolve_source(name_or_path, local_files_only)
    _expect(source, "mae")
    return _load_mae(source, device, overrides)


def _expect(source: Source, variant: str) -> None:
    found = detect_variant(source)
    if found != variant:
        raise ArtifactMismatchError(f"{source.root} is a gen2seg-{found} checkpoint, not gen2seg-{variant}; "
                                    "use load_gen2seg or the matching class.")


def _load_sd(source: Source, device: str | torch.device, overrides: dict[str, Any]) -> Gen2SegSD:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    config = _config(source, Gen2SegConfig.sd(name=source.root), overrides)
    kwargs = dict(source.kwargs(), torch_dtype=torch.float32)
    vae = _load("VAE (vae/)", source, lambda: AutoencoderKL.from_pretrained(source.root, subfolder="vae", **kwargs))
    unet = _load("UNet (unet/)", source,
                 lambda: UNet2DConditionModel.from_pretrained(source.root, subfolder="unet", **kwargs))
    scheduler = _load("scheduler config (scheduler/)", source,
                      lambda: DDPMScheduler.load_config(source.root, subfolder="scheduler", **source.kwargs()))
    scheduler = scheduler_subset(scheduler)
    _warn_timestep(source, scheduler, config.timestep)
    embedding = _saved_embedding(source, config.empty_prompt_padding)
    if embedding is None:
        embedding = _computed_embedding(source, config.empty_prompt_padding)
    return Gen2SegSD(config, vae.eval(), unet.eval(), scheduler, embedding).to(device).eval()


def _warn_timestep(source: Source, scheduler: dict[str, Any], timestep: int) -> None:
    upstream = one_step_inference_timestep(scheduler)
    if upstream != timestep:
        logger.warning("%s: the shipped scheduler (timestep_spacing=%r) gives t=%d with one inference step; "
                       "gen2seg uses t=%d (config.timestep, what training used).",
                       source.root, scheduler.get("timestep_spacing"), upstream, timestep)


def _saved_embedding(source: Source, padding: str) -> torch.Tensor | None:
    """c∅ from ``empty_prompt_embedding.safetensors`` if present and made with ``padding``."""
    from safetensors import safe_open

    path = source.file(EMBEDDING_FILE)
    if path is None:
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            saved_padding = (handle.metadata() or {}).get("padding")
            tensor = handle.get_tensor(EMBEDDING_KEY)
    except Exception as exc:
        raise ArtifactMismatchError(f"{path} is not a valid c∅ file ({exc}); re-save the checkpoint.") from exc
    if saved_padding != padding:
        logger.info("%s holds c∅ for padding %r, %r was asked: computing it with CLIP.", path, saved_padding, padding)
        return None
    return tensor.float()


def _computed_embedding(source: Source, padding: str) -> torch.Tensor:
    """c∅ from the checkpoint's ``text_encoder/`` + ``tokenizer/`` (loaded, used once, dropped)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    what = f"text encoder (text_encoder/, needed once to compute the {padding!r} empty-prompt embedding)"
    encoder = _load(what, source, lambda: CLIPTextModel.from_pretrained(
        source.root, subfolder="text_encoder", dtype=torch.float32, **source.kwargs()))
    tokenizer = _load("tokenizer (tokenizer/)", source,
                      lambda: CLIPTokenizer.from_pretrained(source.root, subfolder="tokenizer", **source.kwargs()))
    return empty_prompt_embedding(encoder.eval(), tokenizer, padding)


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


# ------------------------------------------------------------------------------------ saving
def save_sd(model: Gen2SegSD, path: str | os.PathLike) -> Path:
    """Our SD checkpoint: config, ``vae/``, ``unet/``, ``scheduler/`` and c∅ (no CLIP needed)."""
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    def write(staging: Path) -> None:
        model.config.save(staging)
        model.vae.save_pretrained(staging / "vae")
        model.unet.save_pretrained(staging / "unet")
        DDPMScheduler.from_config(model.scheduler_config).save_pretrained(staging / "scheduler")
        embedding = model.empty_prompt_embedding.detach().float().cpu().contiguous()
        save_file({EMBEDDING_KEY: embedding}, str(staging / EMBEDDING_FILE),
                  metadata={"padding": model.config.empty_prompt_padding})

    return _write_directory(Path(path), write)


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


def _write_directory(target: Path, write: Callable[[Path], None]) -> Path:
    """Write into a staging directory beside ``target``, then swap it in (a complete directory or nothing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    backup = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        write(staging)
        if target.exists():
            os.replace(target, backup)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(backup, ignore_errors=True)
    return target


def checkpoint_prompt_defaults(name_or_path: str | os.PathLike, local_files_only: bool = False):
    """The checkpoint's own prompt defaults, ``(PromptConfig, selection)`` from its
    ``prompt_config.json`` (``instance.prompt_defaults``), or None when it has none (the published
    checkpoints). Works for local directories, the demo and hub ids (the file is fetched with the
    others). A broken file raises ``ArtifactMismatchError``."""
    from genmask_sdk.families.gen2seg.prompt_defaults import PROMPT_CONFIG_FILE, read_prompt_defaults

    path = resolve_source(name_or_path, local_files_only).file(PROMPT_CONFIG_FILE)
    return None if path is None else read_prompt_defaults(path.parent)
