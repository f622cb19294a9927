"""Rasterisation: neutral backgrounds, anti-aliased shape coverage, compositing, visibility.

All images here are float32 ``(H, W, 3)`` RGB arrays with values in ``[0, 255]`` until
:func:`to_uint8`; coverage maps are float32 ``(H, W)`` in ``[0, 1]`` (the fraction of each pixel
covered by a shape). Pixel coordinates follow :mod:`genmask_sdk.data.geometry` (x right, y down,
pixel centres at integer coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLING = 4  # shapes are drawn at 4x resolution, then box-filtered down (anti-aliasing)
# PIL fills polygons about 0.28 supersampled pixels beyond their true edges (it includes the
# outline); edges are pulled in by that much so coverage sums match analytic areas (within ~1%).
PIL_EDGE_BIAS = 0.28 / SUPERSAMPLING  # in image pixels
MASK_THRESHOLD = 0.5  # a pixel belongs to an object's mask when >= 50% of it shows that object

# Backgrounds stay neutral (per-channel tint <= TINT) so they never look like a shape colour.
TINT = 6.0
LIGHTNESS_RANGE = (25.0, 230.0)


# --------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------


def neutral_tone(rng: np.random.Generator, lightness: float | None = None) -> np.ndarray:
    """A greyish RGB colour, float32 ``(3,)`` in ``[0, 255]``: a grey level (uniform in
    ``LIGHTNESS_RANGE`` unless ``lightness`` is given) plus a per-channel tint of at most ±TINT."""
    if lightness is None:
        lightness = rng.uniform(*LIGHTNESS_RANGE)
    tint = rng.uniform(-TINT, TINT, size=3)
    return np.clip(lightness + tint, 0.0, 255.0).astype(np.float32)


def _second_tone(rng: np.random.Generator, first: np.ndarray, contrast: tuple[float, float]):
    """A neutral tone ``(3,)`` whose grey level differs from ``first`` by a random amount in
    ``contrast`` (min, max), towards the end of ``LIGHTNESS_RANGE`` with more room."""
    level = float(first.mean())
    low, high = LIGHTNESS_RANGE
    direction = 1.0 if high - level > level - low else -1.0
    level += direction * rng.uniform(*contrast)
    return neutral_tone(rng, float(np.clip(level, low, high)))


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and row coordinates, float32 ``(1, size)`` and ``(size, 1)``."""
    coords = np.arange(size, dtype=np.float32)
    return coords[None, :], coords[:, None]


def _blend(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-pixel mix ``a * (1 - weight) + b * weight`` of two tones ``(3,)`` by ``weight``
    ``(H, W)`` in [0, 1]; returns float32 ``(H, W, 3)`` (one matrix product, for speed)."""
    column = weight.astype(np.float32).reshape(-1, 1)
    mixed = np.hstack([1.0 - column, column]) @ np.stack([a, b]).astype(np.float32)
    return mixed.reshape(*weight.shape, 3)


def flat_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """One neutral tone everywhere; float32 ``(size, size, 3)``."""
    return np.broadcast_to(neutral_tone(rng), (size, size, 3)).copy()


def gradient_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear ramp between two neutral tones along a random direction; float32
    ``(size, size, 3)``."""
    a = neutral_tone(rng)
    b = _second_tone(rng, a, (30.0, 90.0))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    x, y = _pixel_grid(size)
    projection = (x - size / 2) * math.cos(angle) + (y - size / 2) * math.sin(angle)
    return _blend(a, b, np.clip(projection / (size * 0.72) + 0.5, 0.0, 1.0))


def noise_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth grey "cloud" noise (a coarse random grid upsampled bilinearly) around a neutral
    tone; float32 ``(size, size, 3)``."""
    cells = int(rng.integers(3, 9))
    coarse = rng.normal(0.0, 20.0, size=(cells, cells)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))
    level = float(np.clip(rng.uniform(*LIGHTNESS_RANGE), 55.0, 200.0))
    return neutral_tone(rng, level) + smooth[..., None]


def stripes_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Soft-edged stripes of two neutral tones, random period (6..20 px at 128²) and angle;
    float32 ``(size, size, 3)``."""
    a = neutral_tone(rng)
    b = _second_tone(rng, a, (15.0, 45.0))
    period = rng.uniform(6.0, 20.0) * size / 128
    angle = rng.uniform(0.0, math.pi)
    x, y = _pixel_grid(size)
    phase = (x * math.cos(angle) + y * math.sin(angle)) * (2.0 * math.pi / period)
    wave = np.sin(phase + rng.uniform(0.0, 2.0 * math.pi))
    return _blend(a, b, np.clip(0.5 + 1.5 * wave, 0.0, 1.0))


def checker_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A checkerboard of two neutral tones, random cell size (6..20 px at 128²) and offset;
    float32 ``(size, size, 3)``."""
    a = neutral_tone(rng)
    b = _second_tone(rng, a, (15.0, 45.0))
    cell = rng.uniform(6.0, 20.0) * size / 128
    x, y = _pixel_grid(size)
    ox, oy = rng.uniform(0.0, cell, size=2)
    parity = (np.floor((x + ox) / cell) + np.floor((y + oy) / cell)) % 2
    return _blend(a, b, parity)


BACKGROUND_RENDERERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "flat": flat_background,
    "gradient": gradient_background,
    "noise": noise_background,
    "stripes": stripes_background,
    "checker": checker_background,
}


def render_background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """Background of style ``kind`` (see ``BACKGROUND_KINDS``) with mild per-pixel noise
    (standard deviation 1.5..4 grey levels); float32 ``(size, size, 3)`` in ``[0, 255]``."""
    background = BACKGROUND_RENDERERS[kind](rng, size)
    noise = pixel_noise(rng, (size, size, 3))
    noise *= np.float32(rng.uniform(1.5, 4.0))
    background += noise
    return np.clip(background, 0.0, 255.0, out=background)


def pixel_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean, unit-variance float32 noise of ``shape`` with a triangular distribution (sum of
    two uniforms): Gaussian-looking, bounded by ±sqrt(6), and several times cheaper to draw."""
    noise = rng.random(shape, dtype=np.float32)
    noise -= rng.random(shape, dtype=np.float32)
    noise *= np.float32(np.sqrt(6.0))
    return noise


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


def inset_polygon(outline: np.ndarray, distance: float) -> np.ndarray:
    """Move every edge of a simple polygon (float ``(n, 2)``, either orientation) inwards by
    ``distance`` pixels, using mitred vertices; returns float64 ``(n, 2)``."""
    following = np.roll(outline, -1, axis=0)
    edges = following - outline
    twice_area = np.sum(outline[:, 0] * following[:, 1] - following[:, 0] * outline[:, 1])
    normals = np.sign(twice_area) * np.stack([-edges[:, 1], edges[:, 0]], axis=1)
    normals /= np.hypot(edges[:, 0], edges[:, 1])[:, None]
    previous = np.roll(normals, 1, axis=0)  # inward normal of the edge that ends at each vertex
    mitre = (previous + normals) / (1.0 + np.sum(previous * normals, axis=1))[:, None]
    return outline + distance * mitre


def polygon_coverage(outline: np.ndarray, size: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """Anti-aliased coverage of a polygon inside a ``size x size`` image.

    ``outline`` is float ``(n, 2)`` of ``(x, y)`` pixel coordinates. The polygon is drawn with PIL
    at ``SUPERSAMPLING``x resolution over its bounding box and box-filtered down. Returns
    ``((rows, cols), coverage)``: the bounding-box slices into the image and float32 coverage in
    ``[0, 1]`` of shape ``(rows, cols)``. Parts outside the image are cut off.
    """
    outline = inset_polygon(np.asarray(outline, dtype=np.float64), PIL_EDGE_BIAS)
    lo = np.maximum(np.floor(outline.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(outline.max(axis=0)).astype(int) + 2, size)
    width, height = (hi - lo) * SUPERSAMPLING
    canvas = Image.new("L", (int(width), int(height)))
    # PIL polygons: hi-res pixel k spans [k, k + 1); low-res pixel c spans [c - 0.5, c + 0.5] and
    # becomes hi-res pixels S*c .. S*c + S - 1, so x maps to S * x + S / 2.
    points = (outline - lo) * SUPERSAMPLING + SUPERSAMPLING / 2
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=255)
    coverage = np.asarray(canvas.reduce(SUPERSAMPLING), dtype=np.float32) / np.float32(255.0)
    return (slice(lo[1], hi[1]), slice(lo[0], hi[0])), coverage


def full_coverage(box: tuple[slice, slice], coverage: np.ndarray, size: int) -> np.ndarray:
    """Coverage pasted into a zero float32 ``(size, size)`` map at ``box``."""
    full = np.zeros((size, size), dtype=np.float32)
    full[box] = coverage
    return full


def visible_coverages(coverages: list[np.ndarray]) -> list[np.ndarray]:
    """Visible share of each layer after occlusion, float32 ``(H, W)`` in ``[0, 1]`` each.

    ``coverages`` are full-image coverage maps in drawing order (later layers are on top). The
    visible share of layer i is ``c_i * prod_{j > i} (1 - c_j)``; shares of all layers sum to <= 1
    at every pixel, so masks thresholded at 0.5 are disjoint.
    """
    visible = [np.empty(0, np.float32)] * len(coverages)
    transmittance = np.ones_like(coverages[0]) if coverages else None
    for i in range(len(coverages) - 1, -1, -1):
        visible[i] = coverages[i] * transmittance
        transmittance = transmittance * (1.0 - coverages[i])
    return visible


def paint(image: np.ndarray, box: tuple[slice, slice], coverage: np.ndarray, rgb: np.ndarray):
    """Alpha-composite a flat colour ``rgb`` (float ``(3,)``, 0..255) over ``image`` (float32
    ``(H, W, 3)``, modified in place) with ``coverage`` ``(h, w)`` as alpha inside ``box``."""
    region = image[box]
    region += coverage[..., None] * (np.asarray(rgb, dtype=np.float32) - region)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round a float ``(H, W, 3)`` image in [0, 255] to uint8."""
    return np.clip(image + 0.5, 0.0, 255.0).astype(np.uint8)
