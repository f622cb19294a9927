"""Regenerate sdk/genmask_sdk/assets/example.png and example_mask.png.

The README example is ``genmask segment example.png "the red circle"``
(``genmask_sdk.data.examples.EXAMPLE_PROMPT``); the mask file is its ground truth. The scene, crop
and prompt are defined in ``genmask_sdk.data.examples``.

    python scripts/make_example.py [--check]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

from genmask_sdk.data.examples import EXAMPLE_PROMPT, example_image_path, example_mask_path, render_example
from genmask_sdk.io import atomic_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify that the shipped files are up to date")
    args = parser.parse_args(argv)
    image, mask = render_example()
    files = {example_image_path(): Image.fromarray(image, "RGB"),
             example_mask_path(): Image.fromarray(mask.astype(np.uint8) * 255, "L")}
    if args.check:
        stale = [str(p) for p, img in files.items()
                 if not p.is_file() or not np.array_equal(np.asarray(Image.open(p)), np.asarray(img))]
        print("stale: " + ", ".join(stale) if stale else "example assets are up to date")
        return 1 if stale else 0
    for path, img in files.items():
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG", optimize=True)
            tmp.chmod(0o644)  # mkstemp creates 0600; package data must be world-readable
        print(f"wrote {path} ({img.width}x{img.height})")
    print(f"prompt: {EXAMPLE_PROMPT!r}, ground-truth area {int(mask.sum())} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
