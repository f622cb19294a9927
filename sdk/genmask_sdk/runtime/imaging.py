"""Image input and the letterbox geometry, in numpy and PIL only (no torch).

Conventions:
* An image is (H, W, 3) float32 RGB in [0, 1] (``load_image``).
* The engine sees (B, 3, R, R) float32 in [-1, 1]: the image is resized so its longer side is R
  (aspect ratio kept, bilinear with antialiasing — the same separable triangle filter as
  ``torch.nn.functional.interpolate(..., mode="bilinear", antialias=True)``, PIL's ``BILINEAR``)
  and centred on a mid-grey (0.0) square.
* Logits come back (B, 1, R, R); the padding is cropped off and the rest is resized bilinearly
  (``align_corners=False``, no antialiasing, as torch's) to the original (H, W). Pixel (0, 0) is
  the top-left corner, x grows right, y grows down.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from genmask_sdk.errors import ArtifactNotFoundError, InputTypeError, InvalidInputError
from genmask_sdk.runtime.base import is_torch_tensor

ACCEPTED = ("a file path, a PIL image, a numpy HxWx3 array (uint8, uint16, or float in [0, 1]) or a torch tensor "
            "(CHW or HWC)")
#: Largest image accepted, in pixels (H x W): 40 MP covers 8K (7680 x 4320 = 33 MP). Larger inputs are
#: refused before they are decoded (a 10000 x 10000 PNG would take ~4 GB); downscale them first.
MAX_PIXELS = 40_000_000
#: Largest encoded image read from a pipe or standard input (a device such as /dev/zero never ends).
MAX_STREAM_BYTES = 512 * 2**20


def load_image(image: Any) -> np.ndarray:
    """Any supported image -> (H, W, 3) float32 in [0, 1].

    Files honour EXIF orientation. Grayscale is replicated to RGB (16-bit grayscale PNGs and PIL
    ``I;16`` / ``I`` images are scaled by 1/65535); an alpha channel is dropped (RGBA is read as its
    RGB values). numpy/torch inputs may be HxW (grayscale), HxWx{1,3,4} or {1,3,4}xHxW (torch only;
    a shape that fits both, like 4x6x3, is refused as ambiguous); uint8 is scaled by 1/255, uint16 by
    1/65535, floats must already be in [0, 1]. At most ``MAX_PIXELS`` pixels. A torch tensor is
    accepted where torch is installed (it is copied to the host), never required.
    """
    if isinstance(image, (str, Path)):
        return _from_pil(_open_file(Path(image)))
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.matrix):
        raise InputTypeError("cannot read an image from a numpy.matrix; pass np.asarray(image) (an H x W or "
                             "H x W x 3 array).")
    if isinstance(image, np.ndarray):
        return _from_array(image, channels_last=True)
    if is_torch_tensor(image):
        if str(image.dtype) == "torch.bfloat16":
            image = image.float()  # numpy has no bfloat16
        array = image.detach().cpu().numpy()
        return _from_array(array, channels_last=_torch_channels_last(array))
    raise InputTypeError(f"cannot read an image from a {type(image).__name__}; pass {ACCEPTED}.")


def _open_file(path: Path) -> Image.Image:
    if path.is_dir():
        raise InvalidInputError(f"{path} is a directory, not an image file; pass the path of a PNG/JPEG file.")
    if path.exists() and not path.is_file():  # a pipe, /dev/stdin, a process substitution, a device
        with open(path, "rb") as stream:
            return read_image_stream(stream, str(path))
    if not path.is_file():
        raise ArtifactNotFoundError(f"image file {path} does not exist; check the path.")
    return _decode(path, str(path))


def read_image_stream(stream: Any, what: str) -> Image.Image:
    """An encoded image (PNG/JPEG/...) read from a binary stream (a pipe, standard input) of at most
    ``MAX_STREAM_BYTES``; InvalidInputError for more, for nothing, or for bytes that are no image."""
    import io

    data = stream.read(MAX_STREAM_BYTES + 1)
    if len(data) > MAX_STREAM_BYTES:
        raise InvalidInputError(f"{what} gave more than {MAX_STREAM_BYTES // 2**20} MiB without ending; pass an "
                                "encoded image (PNG/JPEG) of at most that size.")
    if not data:
        raise InvalidInputError(f"{what} is empty; pipe an encoded image (PNG/JPEG) into it.")
    return _decode(io.BytesIO(data), what)


def _decode(source: Any, what: str) -> Image.Image:
    path = what
    try:
        with Image.open(source) as handle:  # reads the header only: the size is known before decoding
            _check_pixels(handle.width, handle.height, str(path))
            return ImageOps.exif_transpose(handle)  # a loaded copy
    except Image.DecompressionBombError as exc:
        raise InvalidInputError(f"{path} is too large to decode safely ({exc}); images of at most {MAX_PIXELS:,} "
                                "pixels are accepted. Downscale it first.") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidInputError(f"{path} is not a readable image ({exc}); pass a PNG/JPEG file.") from exc


def _check_pixels(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise InvalidInputError(f"{what} is {width}x{height} = {width * height:,} pixels; at most {MAX_PIXELS:,} are "
                                "accepted (genmask_sdk.runtime.imaging.MAX_PIXELS). Downscale it first.")


def _from_pil(image: Image.Image) -> np.ndarray:
    _check_pixels(image.width, image.height, "the image")
    try:
        image.load()
    except ValueError as exc:  # PIL: "Operation on closed image"
        raise InvalidInputError(f"the PIL image cannot be read ({exc}); pass it before closing it, or a copy.") from None
    except OSError as exc:  # truncated or damaged lazily-loaded file
        raise InvalidInputError(f"the PIL image cannot be decoded ({exc}); pass a complete PNG/JPEG.") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit grayscale (PNG loads as one of these)
        gray = np.asarray(image, dtype=np.float64)
        if gray.size and (gray.min() < 0 or gray.max() > 65535):
            raise InvalidInputError(f"a mode-{image.mode} image has values in [{gray.min():g}, {gray.max():g}]; "
                                    "integer grayscale is read as 16-bit (0-65535).")
        return np.repeat((gray / 65535.0).astype(np.float32)[..., None], 3, axis=-1)
    if image.mode == "F":
        return _from_array(np.asarray(image, dtype=np.float32), channels_last=True)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _torch_channels_last(array: np.ndarray) -> bool:
    """CHW (torch's convention) unless only HWC fits; a shape that fits both is refused."""
    if array.ndim != 3:
        return False
    first, last = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
    if first and last:
        raise InvalidInputError(
            f"a torch tensor of shape {tuple(array.shape)} could be CxHxW or HxWxC; pass it unambiguously: a numpy "
            "HxWxC array (tensor.numpy()), or a CxHxW tensor whose height and width are not 1, 3 or 4."
        )
    return last


def _from_array(array: np.ndarray, channels_last: bool) -> np.ndarray:
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputTypeError(f"image dtype {array.dtype} is not supported; use uint8 (0-255), uint16 (0-65535) or "
                             "float (0-1).")
    if array.ndim == 2:
        array = array[..., None] if channels_last else array[None]
    if array.ndim != 3:
        raise InvalidInputError(
            f"an image must have 2 or 3 dimensions (HxW, HxWxC or CxHxW), got shape {tuple(array.shape)}; "
            "pass one image at a time."
        )
    hwc = array if channels_last else np.moveaxis(array, 0, -1)
    height, width, channels = hwc.shape
    if height == 0 or width == 0:
        raise InvalidInputError(f"the image is empty (shape {tuple(array.shape)}); pass an image with pixels.")
    _check_pixels(width, height, f"the image (shape {tuple(array.shape)})")
    if channels not in (1, 3, 4):
        raise InvalidInputError(
            f"an image needs 1, 3 or 4 channels, got {channels} (shape {tuple(array.shape)}); "
            "pass RGB, RGBA or grayscale."
        )
    hwc = hwc[..., :3] if channels >= 3 else np.repeat(hwc, 3, axis=-1)
    return _to_unit_float(hwc)


def _to_unit_float(hwc: np.ndarray) -> np.ndarray:
    if hwc.dtype == np.uint8:
        return hwc.astype(np.float32) / 255.0
    if hwc.dtype == np.uint16:
        return (hwc.astype(np.float32) / 65535.0).astype(np.float32)
    if hwc.dtype == np.bool_ or not np.issubdtype(hwc.dtype, np.floating):
        raise InputTypeError(f"image dtype {hwc.dtype} is not supported; use uint8 (0-255), uint16 (0-65535) or "
                             "float (0-1).")
    out = hwc.astype(np.float32)
    if not np.isfinite(out).all():
        raise InvalidInputError("the image contains NaN or infinite values; clean the input frame.")
    low, high = float(out.min()), float(out.max())
    if low < 0.0 or high > 1.0:
        raise InvalidInputError(
            f"float images must be in [0, 1], got values in [{low:.9g}, {high:.9g}]; "
            "divide uint8-range floats by 255."
        )
    return np.ascontiguousarray(out)


def to_pil(image: np.ndarray) -> Image.Image:
    """(H, W, 3) float [0, 1] -> RGB PIL image (rounded to uint8)."""
    return Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8), "RGB")


@dataclass(frozen=True)
class Letterbox:
    """Where an (H, W) image sits inside the R×R engine square: ``top``/``left`` offsets and the
    resized content size ``content_h`` × ``content_w``, all in engine pixels."""

    height: int
    width: int
    resolution: int
    top: int
    left: int
    content_h: int
    content_w: int

    @classmethod
    def fit(cls, height: int, width: int, resolution: int) -> "Letterbox":
        scale = resolution / max(height, width)
        content_h = max(1, min(resolution, round(height * scale)))
        content_w = max(1, min(resolution, round(width * scale)))
        return cls(height, width, resolution, (resolution - content_h) // 2, (resolution - content_w) // 2,
                   content_h, content_w)


@lru_cache(maxsize=64)
def resize_weights(size_in: int, size_out: int, antialias: bool) -> np.ndarray:
    """(size_out, size_in) float32 matrix of 1-D bilinear resampling (half-pixel centres).

    ``antialias=True``: PIL's / torch's antialiased triangle filter (support widened by the scale
    factor when shrinking, weights normalised per output pixel). ``antialias=False``: plain
    ``align_corners=False`` linear interpolation with edge clamping (torch's ``bilinear``)."""
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in), dtype=np.float64)
    if antialias:
        support = scale if scale > 1.0 else 1.0
        inv = 1.0 / scale if scale > 1.0 else 1.0
        for i in range(size_out):
            center = scale * (i + 0.5)
            lo = max(int(center - support + 0.5), 0)
            hi = min(int(center + support + 0.5), size_in)
            taps = np.arange(lo, hi)
            w = np.clip(1.0 - np.abs((taps - center + 0.5) * inv), 0.0, None)
            total = w.sum()
            weights[i, lo:hi] = w / total if total > 0 else 0.0
    else:
        source = np.clip((np.arange(size_out) + 0.5) * scale - 0.5, 0.0, None)
        lo = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
        hi = np.minimum(lo + 1, size_in - 1)
        frac = source - lo
        rows = np.arange(size_out)
        np.add.at(weights, (rows, lo), 1.0 - frac)
        np.add.at(weights, (rows, hi), frac)
    return weights.astype(np.float32)


def resize(array: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    """Resize the two trailing axes of ``array`` (..., h, w) to (height, width), float32."""
    rows = resize_weights(array.shape[-2], height, antialias)
    cols = resize_weights(array.shape[-1], width, antialias)
    return np.matmul(np.matmul(rows, array.astype(np.float32, copy=False)), cols.T)


def to_engine_pixels(image: np.ndarray, resolution: int) -> tuple[np.ndarray, Letterbox]:
    """(H, W, 3) in [0, 1] -> ((1, 3, R, R) float32 in [-1, 1] letterboxed, geometry)."""
    height, width, _ = image.shape
    box = Letterbox.fit(height, width, resolution)
    resized = resize(np.moveaxis(image, -1, 0), box.content_h, box.content_w, antialias=True)
    canvas = np.zeros((1, 3, resolution, resolution), dtype=np.float32)
    canvas[0, :, box.top: box.top + box.content_h, box.left: box.left + box.content_w] = resized * 2.0 - 1.0
    return canvas, box


def to_original_logits(logits: np.ndarray, box: Letterbox) -> np.ndarray:
    """Engine logits (B, 1, R, R) -> (B, H, W) float32 at the original image size."""
    content = logits[:, 0, box.top: box.top + box.content_h, box.left: box.left + box.content_w]
    return resize(content, box.height, box.width, antialias=False)
