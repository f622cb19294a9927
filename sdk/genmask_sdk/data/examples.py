"""The example image shipped with the package, and the prompt the README uses with it.

``assets/example.png`` is ``generate_scene(EXAMPLE_SEED, EXAMPLE_INDEX, 256)`` cropped to rows
``EXAMPLE_ROWS`` (256 wide x 192 high: non-square, so letterboxing is exercised). It shows an
orange star and a red circle; ``assets/example_mask.png`` is the ground-truth mask of
``EXAMPLE_PROMPT`` (255 inside, 0 outside). ``scripts/make_example.py`` regenerates both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EXAMPLE_SEED = 7
EXAMPLE_INDEX = 43
EXAMPLE_SCENE_SIZE = 256
EXAMPLE_ROWS = (32, 224)
EXAMPLE_PROMPT = "the red circle"
ASSETS = Path(__file__).resolve().parents[1] / "assets"


def example_image_path() -> Path:
    """Path of ``assets/example.png`` (uint8 RGB, 256x192)."""
    return ASSETS / "example.png"


def example_mask_path() -> Path:
    """Path of ``assets/example_mask.png``, the ground truth for ``EXAMPLE_PROMPT``."""
    return ASSETS / "example_mask.png"


def render_example() -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 (192, 256, 3), mask bool (192, 256)) regenerated from the scene generator."""
    from genmask_sdk.data import generate_scene

    scene = generate_scene(EXAMPLE_SEED, EXAMPLE_INDEX, EXAMPLE_SCENE_SIZE)
    (expression,) = [e for e in scene.expressions if e.text == EXAMPLE_PROMPT]
    top, bottom = EXAMPLE_ROWS
    return scene.image[top:bottom].copy(), expression.mask[top:bottom].copy()


def example_point() -> tuple[int, int]:
    """(x, y) pixel inside ``EXAMPLE_PROMPT``'s object on the example image (x right, y down): the
    mask pixel nearest its centroid. The gen2seg demo's point prompt."""
    from PIL import Image

    mask = np.asarray(Image.open(example_mask_path()).convert("L")) > 127
    ys, xs = np.nonzero(mask)
    nearest = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return int(xs[nearest]), int(ys[nearest])

