"""``InstanceSegmenter``: gen2seg's user API — point prompts and *segment everything* on any image.

    seg = InstanceSegmenter.from_pretrained("reachomk/gen2seg-sd")   # or a checkpoint directory,
    seg = InstanceSegmenter.from_engines("engines/gen2seg")          # or gen2seg engines
    colours = seg.colorize("photo.jpg")                              # (H, W, 3) uint8 instance colouring
    seg.set_image(frame)                                             # run the model once ...
    result = seg.predict(points=[(120, 80), (300, 40)], labels=[1, 0])   # ... then prompts: host only
    objects = seg.segment_everything()                               # [MaskResult], largest first

Pipeline per image: ``load_image`` (any accepted input) -> uint8 RGB -> the *colorizer*'s
``color_map`` (the model: PyTorch reference ``TorchColorizer`` or engines from
``genmask_sdk.families.gen2seg.engines.open_colorizer``), which returns the instance colour map at the
original size; ``set_image`` caches it, so a later ``predict`` / ``segment_everything`` without an
image costs only the host-side prompt step (``genmask_sdk.families.gen2seg.prompts`` /
``.everything``: numpy + OpenCV contrib, no model).

A colorizer is any object with ``color_map(rgb: (H, W, 3) uint8) -> (H, W, 3) uint8`` (the
colour map at the input's size), ``describe() -> dict`` and ``close()``.

Coordinates: points are (x, y) in pixels of the ORIGINAL image (after EXIF rotation for files),
x to the right (column), y down (row), pixel centres at integers: ``0 <= x <= W-1``,
``0 <= y <= H-1``. Masks and score maps come back at the original size.

Results are ``MaskResult`` (``genmask_sdk.runtime.results``) with ``prompt=None``, ``points``/``labels``
set, ``logits`` = the prompt score map in [0, 1] (float32; mask = score · 255 > threshold),
``score`` = its mean inside the mask (0.0 for an empty mask) and ``timings`` over
``results.INSTANCE_STAGES`` (preprocess, colorize, prompt, postprocess, total; the first two
show as cached after ``set_image``). ``segment_everything`` results also carry ``stability``;
their ``logits`` is the instance's score inside its mask and 0 outside (the per-point score maps
are not kept).

Thread safety: one re-entrant lock per InstanceSegmenter, as ``Segmenter``: calls run one at a
time; the image set by ``set_image`` is shared by all threads.
"""

from __future__ import annotations

import colorsys
import inspect
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from genmask_sdk.families.lifecycle import SegmenterLifecycle
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    InputTypeError,
    InvalidInputError,
    InvalidStateError,
)
from genmask_sdk.families.registry import GEN2SEG_DEMO, GEN2SEG_HUB_IDS
from genmask_sdk.runtime.results import INSTANCE_STAGES, MaskResult, Timings
from genmask_sdk.runtime.imaging import load_image
from genmask_sdk.families.gen2seg import everything as _everything
from genmask_sdk.families.gen2seg.prompt_defaults import prompt_config_from_mapping
from genmask_sdk.families.gen2seg.prompts import (
    ColorMap,
    PromptConfig,
    as_color_map,
    check_point_count,
    exact,
    as_labels,
    point_prompt_mask,
)

logger = logging.getLogger("genmask_sdk.families.gen2seg")

#: Keyword options ``segment_everything`` accepts (those of ``instance.segment_everything``).
EVERYTHING_OPTIONS = tuple(name for name in inspect.signature(_everything.segment_everything).parameters
                           if name not in ("color_map", "config"))
#: The stages a cached image skips.
_CACHED = ("preprocess", "colorize")


@dataclass(frozen=True, eq=False)
class _ImageState:
    """What depends on the image alone: source (H, W, 3) float32 [0, 1] (for overlays), the colour
    map (H, W, 3) uint8 at the original size, its validated prompt view, and the ms it cost."""

    picture: np.ndarray
    colours: np.ndarray
    cmap: ColorMap
    ms: dict

    @property
    def size(self) -> tuple[int, int]:
        return int(self.colours.shape[0]), int(self.colours.shape[1])


class InstanceSegmenter(SegmenterLifecycle):
    """Point-prompted instance segmentation with one gen2seg model; build with ``from_pretrained``,
    ``from_engines``, ``from_model`` or the constructor (any colorizer). See the module docstring."""

    FAMILY = "gen2seg"

    def __init__(self, colorizer: Any, prompt_config: PromptConfig | None = None,
                 source: Mapping[str, Any] | None = None, checkpoint_prompts: PromptConfig | None = None) -> None:
        if not callable(getattr(colorizer, "color_map", None)):
            raise InputTypeError(
                f"InstanceSegmenter needs a colorizer: an object with color_map(rgb uint8 HxWx3) -> HxWx3 uint8, "
                f"describe() and close(); got {type(colorizer).__name__}. Use InstanceSegmenter.from_pretrained "
                "or from_engines."
            )
        self._prompt_config, self._prompt_source = _choose_prompt_config(prompt_config, checkpoint_prompts)
        self._colorizer = colorizer
        self._source = dict(source) if source else {"kind": "colorizer", "path": None}
        self._start_lifecycle()  # lock, image cache (_ImageState), closed flag
        self._described = self._describe_colorizer()

    # ------------------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str = "cpu",
                        prompt_config: PromptConfig | None = None) -> "InstanceSegmenter":
        """PyTorch reference backend (fp32): a hub id (``reachomk/gen2seg-sd``, ``reachomk/gen2seg-mae-h``)
        or a local gen2seg checkpoint directory (published layout or ``save_pretrained``'s)."""
        if str(name_or_path) == GEN2SEG_DEMO:
            from genmask_sdk.families.gen2seg.checkpoints import demo_gen2seg_dir

            name_or_path = demo_gen2seg_dir()
            if not (name_or_path / "gen2seg_config.json").is_file():
                raise ArtifactNotFoundError(
                    f"the gen2seg demo checkpoint ({GEN2SEG_DEMO!r}) is missing from {name_or_path}; reinstall "
                    "genmask-sdk or retrain it with 'python -m genmask_sdk.families.gen2seg.train.demo --out "
                    f"{name_or_path}', or pass a hub id such as {' or '.join(repr(h) for h in GEN2SEG_HUB_IDS)}."
                )
        cls._refuse_other_family(name_or_path)
        _prompt_config(prompt_config)  # a wrong type fails before the model loads
        from genmask_sdk.runtime.devices import resolve_device

        resolved, _ = resolve_device(device)
        try:
            from genmask_sdk.families.gen2seg.modeling.colorizer import TorchColorizer
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] not in ("torch", "diffusers", "transformers", "safetensors"):
                raise
            raise BackendUnavailableError(
                f"the gen2seg PyTorch reference needs torch, diffusers and transformers ({exc.name} is missing): "
                "pip install 'genmask-sdk[export]', or open engines with InstanceSegmenter.from_engines."
            ) from None
        from genmask_sdk.families.gen2seg.modeling.loading import checkpoint_prompt_defaults

        defaults = checkpoint_prompt_defaults(name_or_path)
        colorizer = TorchColorizer.from_pretrained(name_or_path, device=str(resolved))
        logger.info("InstanceSegmenter: torch fp32 on %s from %s", resolved, name_or_path)
        return cls(colorizer, prompt_config, source={"kind": "checkpoint", "path": str(name_or_path)},
                   checkpoint_prompts=None if defaults is None else defaults[0])

    @classmethod
    def from_model(cls, model: Any, prompt_config: PromptConfig | None = None,
                   source: Mapping[str, Any] | None = None) -> "InstanceSegmenter":
        """Wrap an in-memory ``Gen2SegSD`` / ``Gen2SegMAE`` (PyTorch, its device, fp32)."""
        from genmask_sdk.families.gen2seg.modeling.colorizer import TorchColorizer

        return cls(TorchColorizer(model), prompt_config, source=source or {"kind": "model", "path": None})

    @classmethod
    def from_engines(cls, directory: str | os.PathLike, backend: str = "auto", precision: str | None = None,
                     device: str | None = None, prompt_config: PromptConfig | None = None, *,
                     openvino_hint: str | None = "f32", threads: int | None = None) -> "InstanceSegmenter":
        """Open a gen2seg engines directory (``genmask_sdk.families.gen2seg.engines.open_colorizer``).

        ``backend`` (``"auto"``, ``"onnxruntime"``, ``"openvino"``, ``"tensorrt"``), ``precision``
        (None = the SDK chooses: fp32 for gen2seg), ``device`` (None = the first GPU when one is
        visible, else the CPU), ``openvino_hint`` and ``threads`` mean what they mean for
        ``Segmenter.from_engines``."""
        path = cls._engines_path(directory)
        cls._refuse_other_family(path)
        if not path.is_dir():
            raise ArtifactNotFoundError(f"engine directory {path} does not exist; pass the folder that holds "
                                        "manifest.json (written by 'genmask build').")
        _prompt_config(prompt_config)
        try:
            from genmask_sdk.families.gen2seg.engines import open_colorizer
        except ImportError as exc:  # the module, or its open_colorizer, is missing (not one of its dependencies)
            if exc.name != "genmask_sdk.families.gen2seg.engines":
                raise
            raise BackendUnavailableError(
                "gen2seg engines are not supported by this installation (it has no genmask_sdk.families.gen2seg.engines); "
                "use InstanceSegmenter.from_pretrained with the checkpoint (PyTorch), or upgrade genmask-sdk."
            ) from None
        colorizer = open_colorizer(path, backend=backend, precision=precision, device=device,
                                   openvino_hint=openvino_hint, threads=threads)
        try:
            raw = getattr(colorizer, "prompt_defaults", None)
            checkpoint_prompts = None if raw is None else prompt_config_from_mapping(
                raw, f"{path / 'manifest.json'} (prompt_config)")
            return cls(colorizer, prompt_config, source={"kind": "engines", "path": str(path)},
                       checkpoint_prompts=checkpoint_prompts)
        except BaseException:
            colorizer.close()
            raise

    # ---------------------------------------------------------------------------------- image
    def colorize(self, image: Any) -> np.ndarray:
        """The instance colour map of ``image`` (anything ``load_image`` accepts): (H, W, 3) uint8 RGB
        at the original size, every object one flat colour, background black. Leaves the image set
        by ``set_image`` alone."""
        with self._lock:
            self._check_open()
            return self._colorize(*self._load(image)).colours.copy()

    def set_image(self, image: Any) -> None:
        """Run the model on ``image`` once; later ``predict(points=...)`` / ``segment_everything()``
        without an image reuse its colour map."""
        with self._lock:
            self._check_open()
            self._image = None  # a failure leaves no stale image behind
            self._image = self._colorize(*self._load(image))

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the image set by ``set_image``, or None."""
        state = self._image
        return state.size if state is not None else None

    @property
    def color_map(self) -> np.ndarray | None:
        """The cached colour map (read-only (H, W, 3) uint8) of the image set by ``set_image``, or None."""
        state = self._image
        return state.colours if state is not None else None

    @property
    def prompt_config(self) -> PromptConfig:
        return self._prompt_config

    # -------------------------------------------------------------------------------- predict
    def predict(self, image: Any = None, points: Any = None, labels: Any = None) -> MaskResult:
        """The object(s) selected by point prompts.

        Args:
            image: anything ``load_image`` accepts, or None to use the image of ``set_image``.
            points: ``[(x, y), ...]`` (or one ``(x, y)``) in pixels of the original image, x to the
                right, y down, ``0 <= x <= W-1``, ``0 <= y <= H-1``.
            labels: one per point, 1 = positive (select), 0 = negative (exclude); None = all positive.
                At least one positive.

        Returns a ``MaskResult``: mask bool (H, W); logits the score map float32 (H, W) in [0, 1];
        score its mean inside the mask; points, labels; timings. Raises InvalidInputError /
        InputTypeError for bad points or labels, InvalidStateError without an image.
        """
        if points is None and image is not None and _looks_like_points(image):
            raise InputTypeError("predict's first argument is the image; pass the points by name: "
                                 "predict(points=[(x, y), ...]) after set_image(image), or predict(image, points=...).")
        with self._lock:
            self._check_open()
            start = self._clock()
            if image is None:
                state = self._require_image("predict(points=...)", "predict(image, points=...)")
                array, positive = _prompt(points, labels, *state.size)
                cached = _CACHED
                ms = {stage: 0.0 for stage in _CACHED}
            else:
                picture, ms = self._load(image)
                array, positive = _prompt(points, labels, *picture.shape[:2])  # before the model runs
                state, cached = self._colorize(picture, ms), ()
                ms = dict(state.ms)
            t0 = self._clock()
            mask, score = point_prompt_mask(state.cmap, array, positive, self._prompt_config)
            t1 = self._clock()
            value = float(score[mask].mean(dtype=np.float64)) if mask.any() else 0.0
            point_tuple = tuple((float(x), float(y)) for x, y in array)
            label_tuple = tuple(int(p) for p in positive)
            ms["prompt"], ms["postprocess"] = t1 - t0, self._clock() - t1
            ms["total"] = self._clock() - start
            return MaskResult(mask=mask, logits=score, score=value, prompt=None,
                              timings=Timings(ms, cached, stages=INSTANCE_STAGES), _image=state.picture,
                              points=point_tuple, labels=label_tuple)

    __call__ = predict

    def segment_everything(self, image: Any = None, **options: Any) -> list[MaskResult]:
        """Every object, each once, largest first (``instance.segment_everything`` on the colour map).

        ``image`` as in ``predict``. ``options``: ``grid`` (points per side, 16), ``iou_dedup``
        (0.7), ``max_overlap`` (0.5), ``min_area`` (16 px), ``stability_offset`` (2.0),
        ``min_stability`` (0.0), ``background_level`` (10.0), ``max_query_gap`` (1.0); see
        ``genmask_sdk.families.gen2seg.everything``.
        The prompt parameters are this segmenter's ``prompt_config``. Each result carries its grid
        point (``points``, one, label 1) and ``stability``; all share one ``Timings``.
        """
        unknown = sorted(set(options) - set(EVERYTHING_OPTIONS))
        if unknown:
            raise InputTypeError(f"segment_everything got unknown option(s) {unknown}; it accepts "
                                 f"{list(EVERYTHING_OPTIONS)}.")
        with self._lock:
            self._check_open()
            start = self._clock()
            if image is None:
                state = self._require_image("segment_everything()", "segment_everything(image)")
                cached, ms = _CACHED, {stage: 0.0 for stage in _CACHED}
            else:
                state, cached = self._colorize(*self._load(image)), ()
                ms = dict(state.ms)
            t0 = self._clock()
            found = _everything.segment_everything(state.cmap, self._prompt_config, **options)
            t1 = self._clock()
            zero = np.float32(0.0)
            logits = [np.where(instance.mask, np.float32(instance.score), zero) for instance in found]
            ms["prompt"], ms["postprocess"] = t1 - t0, self._clock() - t1
            ms["total"] = self._clock() - start
            timings = Timings(ms, cached, stages=INSTANCE_STAGES)
            return [MaskResult(mask=instance.mask, logits=scores, score=float(instance.score), prompt=None,
                               timings=timings, _image=state.picture,
                               points=((float(instance.point[0]), float(instance.point[1])),), labels=(1,),
                               stability=float(instance.stability))
                    for instance, scores in zip(found, logits)]

    # ------------------------------------------------------------------------------- internals
    def _load(self, image: Any) -> tuple[np.ndarray, dict]:
        t0 = self._clock()
        picture = load_image(image)
        return picture, {"preprocess": self._clock() - t0}

    def _colorize(self, picture: np.ndarray, ms: dict) -> _ImageState:
        t0 = self._clock()
        rgb = (np.clip(picture, 0.0, 1.0) * 255.0).round().astype(np.uint8)
        height, width = rgb.shape[:2]
        colours = _checked_color_map(self._colorizer.color_map(rgb), height, width)
        cmap = as_color_map(colours)
        ms = dict(ms, colorize=self._clock() - t0)
        return _ImageState(picture, colours, cmap, ms)

    def _require_image(self, call: str, alternative: str) -> _ImageState:
        if self._image is None:
            raise InvalidStateError(f"no image is set: call set_image(image) before {call}, or pass the image: "
                                    f"{alternative}.")
        return self._image

    @staticmethod
    def _clock() -> float:
        return time.perf_counter() * 1000.0

    # ------------------------------------------------------------------------------- lifecycle
    def _describe_colorizer(self) -> dict[str, Any]:
        describe = getattr(self._colorizer, "describe", None)
        info = describe() if callable(describe) else {}
        return dict(info) if isinstance(info, Mapping) else {}

    def describe(self) -> dict[str, Any]:
        """Family, variant, backend, precision, device, files, source, versions, the prompt
        parameters, fallbacks and the colorizer's own description."""
        with self._lock:
            if not self._closed:
                self._described = self._describe_colorizer()
            col = self._described
            versions = {**self._base_versions(),
                        **dict(col.get("versions") or {})}
            return {
                "family": "gen2seg", "variant": col.get("variant"), "backend": col.get("backend", "unknown"),
                "precision": col.get("precision"), "provider": col.get("provider"), "device": col.get("device"),
                "processing_size": col.get("processing_size"), "files": col.get("files") or {},
                "source": dict(self._source), "versions": versions, "prompt_config": asdict(self._prompt_config),
                "prompt_config_source": self._prompt_source,
                "stages": list(INSTANCE_STAGES), "fallbacks": list(col.get("fallbacks") or []),
                "precision_choice": col.get("precision_choice"),
                "colorizer": col, "image_size": list(self.image_size) if self.image_size else None,
                "thread_safety": "one lock per InstanceSegmenter: calls run one at a time",
                "closed": self._closed,
            }

    def _release(self) -> None:
        close = getattr(self._colorizer, "close", None)
        self._colorizer = None
        if callable(close):
            close()

    def __repr__(self) -> str:
        col = self._described
        return (f"InstanceSegmenter(variant={col.get('variant')!r}, backend={col.get('backend')!r}, "
                f"precision={col.get('precision')!r}, device={col.get('device')!r}, image_set={self.is_image_set})")


# ------------------------------------------------------------------------------------- helpers
PROMPTS_FROM_CALLER = "caller"
PROMPTS_FROM_CHECKPOINT = "checkpoint (prompt_config.json)"
PROMPTS_PUBLISHED = "published gen2seg defaults"


def _choose_prompt_config(config: Any, checkpoint_prompts: PromptConfig | None) -> tuple[PromptConfig, str]:
    """The caller's config if given, else the checkpoint's own defaults, else ``PromptConfig()``;
    with where it came from (``describe()["prompt_config_source"]``)."""
    if config is not None:
        return _prompt_config(config), PROMPTS_FROM_CALLER
    if checkpoint_prompts is not None:
        return _prompt_config(checkpoint_prompts), PROMPTS_FROM_CHECKPOINT
    return PromptConfig(), PROMPTS_PUBLISHED


def _prompt_config(config: Any) -> PromptConfig:
    if config is None:
        return PromptConfig()
    if not isinstance(config, PromptConfig):
        raise InputTypeError(f"prompt_config must be a genmask_sdk.families.gen2seg.PromptConfig or None, "
                             f"got {type(config).__name__}.")
    return config


def _looks_like_points(value: Any) -> bool:
    """A short list/tuple of numbers or pairs: a likely ``predict([(x, y)])`` meant as points."""
    if not isinstance(value, (list, tuple)) or not value or len(value) > 64:
        return False
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return array.shape == (2,) or (array.ndim == 2 and array.shape[1] == 2)


def _prompt(points: Any, labels: Any, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated (points float64 (N, 2), positive bool (N,)); messages in original-image terms."""
    array = _points(points, height, width)
    return array, as_labels(labels, len(array))


def _points(points: Any, height: int, width: int) -> np.ndarray:
    where = (f"in pixels of the {width}x{height} (WxH) image: x to the right in [0, {width - 1}], "
             f"y down in [0, {height - 1}]")
    if points is None:
        raise InvalidInputError(f"no points given: pass points=[(x, y), ...], at least one, {where}.")
    if isinstance(points, (str, bytes, Mapping)):
        raise InputTypeError(f"points must be a sequence of (x, y) pairs {where}; got {type(points).__name__}.")
    check_point_count(points)
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputTypeError(f"points must be a sequence of (x, y) number pairs {where}; got {points!r}.") from None
    if array.size == 0:
        raise InvalidInputError(f"points is empty: give at least one (x, y) point {where}.")
    if array.shape == (2,):
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 2:
        raise InvalidInputError(f"points must be (x, y) pairs, shape (N, 2); got shape {array.shape}.")
    for index, (x, y) in enumerate(array):
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InvalidInputError(f"point {index} is (x={x}, y={y}): coordinates must be finite numbers, {where}.")
        if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
            swapped = 0 <= y <= width - 1 and 0 <= x <= height - 1
            hint = " (points are (x, y), not (row, column): did you swap them?)" if swapped else ""
            raise InvalidInputError(f"point {index} (x={exact(x)}, y={exact(y)}) is outside the image: points are "
                                    f"{where}{hint}.")
    return array


def _checked_color_map(colours: Any, height: int, width: int) -> np.ndarray:
    """The colorizer's output as a private read-only (H, W, 3) uint8 copy at the original size.

    A float map in [0, 255] is rounded; a map of another size is resized (nearest, so flat colours
    stay flat) — a colorizer should not need either."""
    if not isinstance(colours, np.ndarray) or colours.ndim != 3 or colours.shape[2] != 3 or 0 in colours.shape:
        raise ArtifactMismatchError(
            f"the colorizer returned {type(colours).__name__} {getattr(colours, 'shape', '')}; color_map must "
            f"return an (H, W, 3) uint8 RGB array (here {height}x{width}x3)."
        )
    if colours.dtype != np.uint8:
        if not np.issubdtype(colours.dtype, np.floating) or not np.isfinite(colours).all() \
                or colours.min() < 0 or colours.max() > 255:
            raise ArtifactMismatchError(f"the colorizer returned a {colours.dtype} colour map; color_map must "
                                        "return uint8 (or float in [0, 255]).")
        colours = np.rint(colours)
    colours = np.array(colours, dtype=np.uint8, copy=True, order="C")  # never a view of a reused engine buffer
    if colours.shape[:2] != (height, width):
        logger.debug("colour map %s resized to the image's %dx%d", colours.shape[:2], height, width)
        colours = np.asarray(Image.fromarray(colours).resize((width, height), Image.Resampling.NEAREST)).copy()
    colours.flags.writeable = False
    return colours


# -------------------------------------------------------------------------------------- overlays
def instance_colors(count: int) -> list[tuple[int, int, int]]:
    """``count`` well-separated saturated RGB colours (golden-ratio hue steps), deterministic."""
    colours = []
    for index in range(count):
        red, green, blue = colorsys.hsv_to_rgb((0.58 + index * 0.618033988749895) % 1.0, 0.85, 1.0)
        colours.append((round(red * 255), round(green * 255), round(blue * 255)))
    return colours


def instance_overlay(results: MaskResult | list[MaskResult], image: Any = None, alpha: float = 0.5,
                     mark_points: bool = True) -> Image.Image:
    """RGB PIL image of ``results`` (one ``predict`` result, or ``segment_everything``'s list) on
    the image: each mask in its own colour (in order, so later masks lie on top), and with
    ``mark_points`` each result's points as dots (white-ringed; positive filled green, negative red).
    ``image`` defaults to the image the results were computed on (see ``MaskResult.overlay``)."""
    items = [results] if isinstance(results, MaskResult) else list(results)
    if not items:
        if image is None:
            raise InvalidInputError("no results to draw and no image given; pass instance_overlay(results, image=...).")
        return Image.fromarray((np.clip(load_image(image), 0, 1) * 255).round().astype(np.uint8), "RGB")
    overlay: Any = image
    for result, colour in zip(items, instance_colors(len(items))):
        overlay = result.overlay(overlay, color=colour, alpha=alpha)
    if mark_points:
        draw = ImageDraw.Draw(overlay)
        radius = max(2, round(min(overlay.size) / 100))
        for result in items:
            labels = result.labels or (1,) * len(result.points or ())
            for (x, y), label in zip(result.points or (), labels):
                fill = (40, 220, 80) if label else (235, 50, 50)
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=(255, 255, 255))
    return overlay
