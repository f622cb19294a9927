"""Run the frozen stages on prepared samples: the tensors of one cache shard (``cache_format``).

Geometry is the SDK's own (``imaging.to_engine_pixels``): the image is letterboxed to R×R on
mid-grey, exactly what ``Segmenter`` feeds the VAE encoder at inference. The mask goes through the same
letterbox and is re-binarised at engine resolution (padding is outside), then becomes a mask image in
[-1, 1] (``probe.mask_to_pixels``) for the VAE.

Embedder input: a text-only embedder (MiniLM) sees the instruction; an image embedder (Qwen2.5-VL)
sees the image and the instruction for segmentation rows and, for generation rows, a uniform
mid-grey image of the same size with the caption (the image is the generation target, so the
condition must not show it).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from genmask_sdk.errors import InvalidInputError, InvalidSampleError
from genmask_sdk.families.genmask.modeling.imaging import load_image, to_engine_pixels
from genmask_sdk.families.genmask.modeling.vae import single_frame_convolutions
from genmask_sdk.families.genmask.train.cache_format import TASK_CODES
from genmask_sdk.families.genmask.train.probe import mask_to_pixels

GREY = (128, 128, 128)


def engine_pixels(image: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, R, R) in [-1, 1], letterboxed (padding 0 = mid-grey)."""
    pixels, _ = to_engine_pixels(load_image(image), resolution)
    return pixels[0]


def engine_mask(mask: np.ndarray, resolution: int) -> torch.Tensor:
    """bool (H, W) -> bool (R, R): letterboxed with bilinear resampling, re-binarised at 0.5; the
    padding is outside the mask."""
    picture = torch.from_numpy(np.ascontiguousarray(mask)).float()[None].expand(3, -1, -1)
    pixels, _ = to_engine_pixels(picture, resolution)  # inside +1, outside -1, padding 0
    return pixels[0, 0] > 0.0


def embed_rows(embedder, samples: Sequence) -> list[torch.Tensor]:
    """Final-layer states of each sample's instruction: a list of float32 (L_i, D) on the CPU,
    real tokens only. Raises InvalidSampleError naming the sample the embedder refused."""
    try:
        images = [_embedder_image(s) for s in samples] if embedder.uses_image else None
        embedding = embedder(images, [s.instruction for s in samples])
    except InvalidInputError as exc:
        if len(samples) > 1:  # find the culprit, so that the message names it
            return [row for s in samples for row in embed_rows(embedder, [s])]
        raise InvalidSampleError(f"sample {samples[0].id!r}: the embedder refused its instruction ({exc}). "
                                 "Drop or shorten it when preparing the data.") from None
    states, mask = embedding.states.float().cpu(), embedding.mask.cpu()
    return [states[i][mask[i]] for i in range(len(samples))]


def _embedder_image(sample) -> Image.Image:
    height, width = sample.image.shape[:2]
    if sample.task == "gen":
        return Image.new("RGB", (width, height), GREY)
    return Image.fromarray(sample.image)


def null_states(embedder) -> torch.Tensor:
    """States (L0, D) float32 of the empty instruction, the unconditional input of CFG dropout:
    the embedder's own ``null_states()`` (MiniLM: "" -> [CLS][SEP]), else one zero token."""
    if hasattr(embedder, "null_states"):
        return embedder.null_states().float().cpu()
    return torch.zeros(1, embedder.hidden_size)


@torch.no_grad()
def encode_latents(vae_encoder, pixels: torch.Tensor, batch: int) -> torch.Tensor:
    """(N, 3, R, R) in [-1, 1] -> normalised latents (N, 16, R/8, R/8) float32 on the CPU."""
    device = next(vae_encoder.parameters()).device
    out = []
    with single_frame_convolutions(vae_encoder.vae):
        for start in range(0, pixels.shape[0], batch):
            out.append(vae_encoder(pixels[start: start + batch].to(device)).float().cpu())
    return torch.cat(out)


def encode_shard(samples: Sequence, rows: Sequence[int], vae_encoder, embedder, resolution: int,
                 batch: int = 16) -> dict[str, torch.Tensor]:
    """The tensors of one shard (names, shapes and dtypes: ``cache_format``) for ``samples``, the
    prepared rows ``rows``."""
    n = len(samples)
    masks = torch.zeros(n, resolution, resolution, dtype=torch.bool)
    for i, sample in enumerate(samples):
        if sample.task == "seg":
            masks[i] = engine_mask(sample.mask, resolution)
    pixels = torch.stack([engine_pixels(s.image, resolution) for s in samples])
    z_image = encode_latents(vae_encoder, pixels, batch)
    seg = [i for i, s in enumerate(samples) if s.task == "seg"]
    z_mask = torch.zeros_like(z_image)
    if seg:
        z_mask[seg] = encode_latents(vae_encoder, mask_to_pixels(masks[seg]), batch)
    states = [row for start in range(0, n, batch) for row in embed_rows(embedder, samples[start: start + batch])]
    lengths = torch.tensor([0] + [s.shape[0] for s in states], dtype=torch.int64)
    return {
        "row": torch.tensor(list(rows), dtype=torch.int64),
        "task": torch.tensor([TASK_CODES[s.task] for s in samples], dtype=torch.uint8),
        "size": torch.tensor([s.image.shape[:2] for s in samples], dtype=torch.int32).reshape(n, 2),
        "offsets": torch.cumsum(lengths, 0),
        "states": torch.cat(states).to(torch.bfloat16),
        "z_image": z_image,
        "z_mask": z_mask,
        "mask": masks,
    }
