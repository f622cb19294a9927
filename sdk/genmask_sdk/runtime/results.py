"""What ``Segmenter.predict`` returns: one ``MaskResult`` per prompt, and its ``Timings``
(``InstanceSegmenter`` returns the same classes: one ``MaskResult`` per point prompt or instance).

Coordinates: arrays are (H, W) at the original image size (after EXIF rotation for files); row 0
is the top, column 0 the left.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, ImageColor

from genmask_sdk.errors import InputTypeError, InvalidInputError

#: Stage names in pipeline order; every ``Timings`` has all of them.
#: ``embed_image``: the VLM's image prefix (vision tower + prefill; 0 for text-only embedders);
#: ``reason``: stage 1 of reasoning mode; ``embed``: the prompts on that prefix.
STAGES = ("preprocess", "embed_image", "reason", "embed", "vae_encoder", "dit", "mask_head", "postprocess", "total")
#: Stage names of ``InstanceSegmenter`` (gen2seg): ``colorize`` is the model (image -> instance
#: colour map at the original size), ``prompt`` the host-side point prompt or segment-everything step.
INSTANCE_STAGES = ("preprocess", "colorize", "prompt", "postprocess", "total")
DEFAULT_COLOR = (0, 160, 255)


class Timings(Mapping):
    """Milliseconds per stage (``stages``, default ``STAGES``), read-only. ``cached`` names stages
    that did not run because their result was reused (``set_image``); they show 0.0.

    With several prompts the values are those of the whole call (batched stages are shared), so
    every result of one call carries the same ``Timings``.
    """

    def __init__(self, ms: Mapping[str, float], cached: tuple[str, ...] = (),
                 stages: tuple[str, ...] = STAGES) -> None:
        self._ms = {stage: float(ms.get(stage, 0.0)) for stage in stages}
        self.cached = tuple(cached)

    def __getitem__(self, stage: str) -> float:
        return self._ms[stage]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ms)

    def __len__(self) -> int:
        return len(self._ms)

    def to_dict(self) -> dict[str, Any]:
        """``{stage: ms, ..., "cached": [stages]}`` (JSON-ready)."""
        return {**{k: round(v, 3) for k, v in self._ms.items()}, "cached": list(self.cached)}

    def __str__(self) -> str:
        parts = [f"{k} {v:.1f} ms" + (" (cached)" if k in self.cached else "") for k, v in self._ms.items()]
        return " | ".join(parts)

    def __repr__(self) -> str:
        return f"Timings({self})"


@dataclass(frozen=True, eq=False)
class MaskResult:
    """The mask for one prompt (a phrase for ``Segmenter``; points, or one found instance, for
    ``InstanceSegmenter``).

    Attributes:
        mask: bool (H, W); True inside the referred object (``logits > 0``).
        logits: float32 (H, W); the mask head's logits resized bilinearly from the engine square
            to the original size.
        Both arrays belong to the result: writable, and shared with nothing else (not with another
        result, nor with the segmenter's cache), as SAM's and Ultralytics' results are.
        score: confidence in [0, 1]: the mean of ``sigmoid(logits)`` over the mask's pixels
            (so in (0.5, 1] for a non-empty mask: how far inside the decision boundary the mask
            is on average), and 0.0 when the mask is empty.
        prompt: what the user asked (a phrase, or with ``reason=True`` an instruction).
        timings: per-stage milliseconds of the call that produced it.
        phrase: the phrase the DiT segmented: ``prompt`` itself, or with ``reason=True`` the
            VLM's answer naming the target.
        points: ``InstanceSegmenter`` only (else None): the (x, y) prompt points in original image
            pixels (x right, y down); for ``segment_everything``, the grid point that found the instance.
        labels: ``InstanceSegmenter`` only: 1 (positive) or 0 (negative) per point.
        stability: ``segment_everything`` only: IoU of the instance's masks at threshold ± offset.

    For ``InstanceSegmenter`` results ``prompt`` and ``phrase`` are None, ``logits`` is the prompt
    score map in [0, 1] (``mask`` = score · 255 > threshold) and ``score`` its mean inside the mask.
    """

    mask: np.ndarray
    logits: np.ndarray
    score: float
    prompt: str | None
    timings: Timings
    phrase: str | None = None
    _image: Any = field(default=None, repr=False)  # (H, W, 3) float32 [0, 1] array, for overlay()
    points: tuple[tuple[float, float], ...] | None = None
    labels: tuple[int, ...] | None = None
    stability: float | None = None

    def __post_init__(self) -> None:
        if self.phrase is None:
            object.__setattr__(self, "phrase", self.prompt)
        for name in ("mask", "logits"):
            object.__setattr__(self, name, _owned(getattr(self, name)))

    @property
    def area(self) -> int:
        """Number of mask pixels."""
        return int(np.count_nonzero(self.mask))

    @property
    def found(self) -> bool:
        """False when the mask is empty: the model found nothing for this prompt (``score`` is then
        0.0). Check it before using the mask; ``genmask segment`` prints "nothing found"."""
        return bool(self.mask.any())

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the original image."""
        return tuple(self.mask.shape)  # type: ignore[return-value]

    def to_rle(self) -> dict[str, Any]:
        """COCO compressed RLE ``{"size": [H, W], "counts": str}`` (``metrics.encode_rle``)."""
        from genmask_sdk.metrics import encode_rle

        return encode_rle(self.mask)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: prompt, phrase, found, score, area, size, RLE and timings (and, when set,
        points, labels and stability)."""
        data = {"prompt": self.prompt, "phrase": self.phrase, "found": self.found, "score": round(self.score, 6),
                "area": self.area,
                "size": list(self.size), "rle": self.to_rle(), "timings": self.timings.to_dict()}
        if self.points is not None:
            data["points"] = [[_number(x), _number(y)] for x, y in self.points]
        if self.labels is not None:
            data["labels"] = [int(label) for label in self.labels]
        if self.stability is not None:
            data["stability"] = round(float(self.stability), 6)
        return data

    def overlay(self, image: Any = None, color: Any = DEFAULT_COLOR, alpha: float = 0.5) -> Image.Image:
        """RGB PIL image with the mask blended in ``color`` (RGB tuple or a CSS name) at ``alpha``.

        ``image`` defaults to the image the mask was predicted on; anything ``load_image``
        accepts works if it has the mask's size (pass an earlier overlay to stack masks).
        """
        from genmask_sdk.runtime.imaging import load_image

        if not 0.0 <= float(alpha) <= 1.0:
            raise InvalidInputError(f"alpha must be in [0, 1], got {alpha}.")
        rgb = _color(color)
        source = self._image if image is None else load_image(image)
        if source is None:
            raise InvalidInputError("this result holds no image; pass overlay(image=...).")
        base = (np.clip(source, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if base.shape[:2] != self.mask.shape:
            raise InvalidInputError(
                f"overlay image is {base.shape[1]}x{base.shape[0]} (WxH) but the mask is "
                f"{self.mask.shape[1]}x{self.mask.shape[0]}; pass the image the mask was predicted on."
            )
        out = base.astype(np.float32)
        out[self.mask] = (1 - alpha) * out[self.mask] + alpha * np.asarray(rgb, np.float32)
        return Image.fromarray(out.round().astype(np.uint8), "RGB")

    def save(self, path: str | Path) -> Path:
        """Write atomically: ``.png`` -> 8-bit mask (255 inside, 0 outside); ``.json`` ->
        ``to_dict()`` (RLE, score, prompt, ...)."""
        from genmask_sdk.io import atomic_path, atomic_write_text

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".png":
            with atomic_path(path) as tmp:
                Image.fromarray(self.mask.astype(np.uint8) * 255, "L").save(tmp, format="PNG")
        elif suffix == ".json":
            atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        else:
            raise InvalidInputError(f"cannot save a mask as {suffix or 'a file without suffix'!r}; use .png or .json.")
        return path

    def __repr__(self) -> str:
        height, width = self.size
        if self.prompt is None and self.points is not None:
            labels = self.labels or (1,) * len(self.points)
            shown = ", ".join(f"({_number(x)}, {_number(y)}){'+' if label else '-'}"
                              for (x, y), label in zip(self.points, labels))
            stable = f", stability={self.stability:.3f}" if self.stability is not None else ""
            return f"MaskResult(points=[{shown}], score={self.score:.3f}{stable}, area={self.area}, size={width}x{height})"
        reasoned = f", phrase={self.phrase!r}" if self.phrase != self.prompt else ""
        return f"MaskResult(prompt={self.prompt!r}{reasoned}, score={self.score:.3f}, area={self.area}, size={width}x{height})"


def _owned(array: np.ndarray) -> np.ndarray:
    """``array`` itself when it owns its writable memory, else a copy that does."""
    if isinstance(array, np.ndarray) and array.base is None and array.flags.writeable and array.flags.c_contiguous:
        return array
    return np.array(array, copy=True, order="C")


def _number(value: Any) -> int | float:
    """A coordinate for JSON and repr: an int when it is whole (12.0 -> 12)."""
    value = float(value)
    return int(value) if value.is_integer() else value


def _color(color: Any) -> tuple[int, int, int]:
    if isinstance(color, str):
        try:
            return ImageColor.getrgb(color)[:3]
        except ValueError:
            raise InvalidInputError(f"unknown colour name {color!r}; pass a CSS name or an (R, G, B) tuple.") from None
    if isinstance(color, (tuple, list)) and len(color) == 3 and all(isinstance(c, (int, np.integer)) and 0 <= c <= 255 for c in color):
        return tuple(int(c) for c in color)  # type: ignore[return-value]
    raise InputTypeError(f"color must be an (R, G, B) tuple of ints 0-255 or a colour name, got {color!r}.")
