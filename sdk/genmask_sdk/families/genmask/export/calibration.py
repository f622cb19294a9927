"""Real inputs for INT8 calibration and for the post-export fidelity checks.

A *source* yields (image, prompt) samples; ``encode`` turns them into DiT feeds with the PyTorch
VAE encoder (float32) and the checkpoint's embedder:

* ``"demo"`` (default): procedural scenes, ``ReferringDataset(seed=5000)`` rendered at the engine
  resolution, one referring expression per scene (cycling through each scene's expressions).
  Seed 5000 is neither the demo training seed (0) nor the held-out evaluation seed (10 000).
  Fidelity checks use scenes of seed 5001.
* a directory ``DIR`` of your own images with one prompt file:

  - ``DIR/prompts.json``: ``{"kitchen.jpg": "the red mug", "desk.png": ["the stapler", "the
    left monitor"]}`` or ``[{"image": "kitchen.jpg", "prompt": "the red mug"}, ...]``;
  - ``DIR/prompts.txt``: one ``<image path> | <prompt>`` per line (repeat the image for more
    prompts); blank lines and lines starting with ``#`` are ignored.

  Image paths are relative to ``DIR`` (PNG/JPEG, any size: they are letterboxed to the engine
  square like at inference). Samples are used in the order listed; the first N are taken.
  Fidelity checks use the first few of them.
* ``"random"``: uniform noise pixels and Gaussian context states, no embedder (smoke tests and
  random-weight benchmarks only; INT8 calibrated on it is meaningless and a warning is printed).
  Each batch is seeded by its samples' names, so check inputs never repeat calibration inputs.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from genmask_sdk.errors import ArtifactNotFoundError, ConfigError, InvalidInputError

if TYPE_CHECKING:  # torch is imported where used: describe() stays torch-free
    import torch

from genmask_sdk.data.seeds import CALIB_SEED, CHECK_SEED  # noqa: E402,F401  (re-exported)
PROMPT_FILES = ("prompts.json", "prompts.txt")


@dataclass(frozen=True)
class Sample:
    """One calibration input: ``image`` uint8 (H, W, 3) RGB (None for "random") and its prompt."""

    image: np.ndarray | None
    prompt: str


@dataclass
class Feeds:
    """DiT-ready inputs for N samples.

    pixels (N, 3, R, R) float32 in [-1, 1]; z_img (N, 16, R/8, R/8) float32 from the PyTorch
    VAE encoder; context (N, L, D) float32 padded with zeros; context_mask (N, L) bool.
    """

    pixels: torch.Tensor
    z_img: torch.Tensor
    context: torch.Tensor
    context_mask: torch.Tensor
    prompts: list[str]

    def rows(self) -> list["Feeds"]:
        """One Feeds per sample, each unpadded (its context cut to its real length)."""
        out = []
        for i in range(len(self.prompts)):
            length = int(self.context_mask[i].sum())
            out.append(Feeds(self.pixels[i:i + 1], self.z_img[i:i + 1], self.context[i:i + 1, :length],
                             self.context_mask[i:i + 1, :length], [self.prompts[i]]))
        return out

    def dit_feeds(self) -> dict[str, np.ndarray]:
        return {"z_img": self.z_img.numpy(), "context": self.context.numpy(),
                "context_mask": self.context_mask.numpy()}


def describe(source: str | Path | None) -> dict:
    """How the manifest records a source (kind, and path + prompt-file hash for folders)."""
    from genmask_sdk.io import sha256_file

    if source in (None, "demo"):
        return {"kind": "demo", "seed": CALIB_SEED, "check_seed": CHECK_SEED}
    if source == "random":
        return {"kind": "random"}
    folder = Path(source).expanduser().resolve()
    prompt_file = _prompt_file(folder)
    return {"kind": "folder", "path": str(folder), "prompts_sha256": sha256_file(prompt_file)}


def samples(source: str | Path | None, n: int, resolution: int, *, check: bool = False) -> list[Sample]:
    """``n`` samples of ``source`` (fewer if a folder holds fewer; never zero)."""
    if n <= 0:
        raise ConfigError(f"the number of calibration samples must be positive, got {n}.")
    if source in (None, "demo"):
        return _scene_samples(CHECK_SEED if check else CALIB_SEED, n, resolution)
    if source == "random":  # calibration and check samples are distinct draws (their prompts seed encode())
        return [Sample(None, f"random {'check' if check else 'calibration'} {i}") for i in range(n)]
    return read_folder(Path(source))[:n]


def _scene_samples(seed: int, n: int, resolution: int) -> list[Sample]:
    from genmask_sdk.data import generate_scene

    out, index = [], 0
    while len(out) < n:
        scene = generate_scene(seed, index, max(resolution, 32))
        if scene.expressions:
            expression = scene.expressions[index % len(scene.expressions)]
            out.append(Sample(np.array(scene.image), expression.text))
        index += 1
    return out


def _prompt_file(folder: Path) -> Path:
    if not folder.is_dir():
        raise ArtifactNotFoundError(f"calibration folder {folder} does not exist; pass a directory with images and "
                                    "prompts.json or prompts.txt (see --help).")
    for name in PROMPT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ArtifactNotFoundError(f"{folder} has neither prompts.json nor prompts.txt; add one mapping image files to "
                                "prompts (format in 'python export/build_engines.py --help').")


def read_folder(folder: Path) -> list[Sample]:
    """All (image, prompt) pairs listed by the folder's prompt file, in file order."""
    from PIL import Image

    folder = Path(folder).expanduser()
    prompt_file = _prompt_file(folder)
    pairs = _parse_json(prompt_file) if prompt_file.suffix == ".json" else _parse_txt(prompt_file)
    if not pairs:
        raise InvalidInputError(f"{prompt_file} lists no (image, prompt) pairs.")
    out, cache = [], {}
    for image_name, prompt in pairs:
        path = folder / image_name
        if not path.is_file():
            raise ArtifactNotFoundError(f"{prompt_file} names {image_name!r}, but {path} does not exist.")
        if not prompt.strip():
            raise InvalidInputError(f"{prompt_file}: empty prompt for {image_name!r}.")
        if path not in cache:
            with Image.open(path) as handle:
                cache[path] = np.asarray(handle.convert("RGB"))
        out.append(Sample(cache[path], prompt.strip()))
    return out


def _parse_json(path: Path) -> list[tuple[str, str]]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid JSON ({exc}).") from exc
    pairs: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for image, prompts in data.items():
            for prompt in [prompts] if isinstance(prompts, str) else prompts:
                pairs.append((str(image), str(prompt)))
    elif isinstance(data, list) and all(isinstance(d, dict) and {"image", "prompt"} <= set(d) for d in data):
        pairs = [(str(d["image"]), str(d["prompt"])) for d in data]
    else:
        raise InvalidInputError(f"{path} must be {{image: prompt or [prompts]}} or [{{'image':..., 'prompt':...}}].")
    return pairs


def _parse_txt(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "|" not in line:
            raise InvalidInputError(f"{path}:{number}: expected '<image path> | <prompt>', got {line!r}.")
        image, prompt = line.split("|", 1)
        pairs.append((image.strip(), prompt.strip()))
    return pairs


def encode_batch_size(resolution: int) -> int:
    """Samples per ``encode`` call: 8 up to 256², fewer above (the VAE encoder's activations grow with
    the pixel count: 8 images at 512² through Wan's encoder take several GB)."""
    return max(1, min(8, (8 * 256 * 256) // (resolution * resolution)))


def encode(model, batch: Sequence[Sample], *, random_context_length: int = 8,
           embed: Callable | None = None) -> Feeds:
    """Samples -> Feeds: letterboxed pixels, PyTorch VAE latents (float32), embedder states.

    ``model`` is a float32 ``GenMaskModel``; ``embed(images, prompts) -> Embedding`` overrides
    ``model.embedder``. Random samples get random pixels and N(0, 1) context of
    ``random_context_length`` tokens (no embedder is loaded).
    """
    import torch

    from genmask_sdk.families.genmask.modeling.imaging import load_image, to_engine_pixels

    resolution = model.config.resolution
    if all(s.image is None for s in batch):
        generator = torch.Generator().manual_seed(zlib.crc32("\n".join(s.prompt for s in batch).encode()))
        n, d = len(batch), model.config.embedder.hidden_size
        pixels = torch.rand(n, 3, resolution, resolution, generator=generator) * 2 - 1
        context = torch.randn(n, random_context_length, d, generator=generator)
        mask = torch.ones(n, random_context_length, dtype=torch.bool)
    else:
        pixels = torch.cat([to_engine_pixels(load_image(s.image), resolution)[0] for s in batch])
        embedder = embed or model.embedder
        images = [_pil(s.image) for s in batch] if getattr(embedder, "uses_image", False) else None
        with torch.no_grad():
            embedding = embedder(images, [s.prompt for s in batch])
        context, mask = embedding.states.float().cpu(), embedding.mask.bool().cpu()
    with torch.no_grad():
        z_img = model.vae_encoder()(pixels)
    return Feeds(pixels, z_img.float(), context.contiguous(), mask.contiguous(), [s.prompt for s in batch])


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image)
