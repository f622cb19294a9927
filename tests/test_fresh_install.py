"""A fresh virtual environment with only ``pip install <this repository>`` (the runtime: no torch)
runs ``genmask segment`` on demo engines built here. Slow (downloads the runtime's wheels from the
package index): ``pytest -m slow tests/test_fresh_install.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genmask_sdk.data.examples import example_image_path
from genmask_sdk.metrics import decode_rle, mask_iou

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_runtime_only_install_segments_without_torch(demo_engines, demo_model, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "ensurepip", "--upgrade"], check=True, capture_output=True, timeout=300)
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(REPO)], capture_output=True,
                             text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    done = subprocess.run([str(venv / "bin" / "genmask"), "segment", str(example_image_path()), "the red circle",
                           "--engines", str(demo_engines[0]), "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(done.stdout)["results"]
    from genmask_sdk import Segmenter

    reference = Segmenter.from_model(demo_model).predict(example_image_path(), "the red circle")
    assert mask_iou(decode_rle(result["rle"]).astype(bool), reference.mask) >= 0.999
