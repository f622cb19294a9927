"""Images that are not plain files or arrays (issue 34): pipes and devices are read as streams
(bounded), a numpy.matrix and a closed PIL image are typed errors."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from genmask_sdk.errors import InputTypeError, InvalidInputError
from genmask_sdk.runtime.imaging import load_image


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # numpy says matrix is on its way out
def test_a_numpy_matrix_is_a_typed_error():
    with pytest.raises(InputTypeError, match="numpy.matrix; pass np.asarray"):
        load_image(np.matrix(np.zeros((4, 4))))


def test_a_closed_pil_image_is_a_typed_error():
    image = Image.new("RGB", (8, 6))
    image.close()
    with pytest.raises(InvalidInputError, match="the PIL image cannot be read"):
        load_image(image)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_pipe_is_read_as_an_encoded_image(tmp_path):
    fifo = tmp_path / "frame.png"
    os.mkfifo(fifo)
    picture = np.random.default_rng(0).integers(0, 255, (6, 8, 3)).astype(np.uint8)

    def write() -> None:
        with open(fifo, "wb") as out:
            Image.fromarray(picture).save(out, format="PNG")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        got = load_image(fifo)
    finally:
        writer.join(timeout=10)
    np.testing.assert_array_equal(np.rint(got * 255).astype(np.uint8), picture)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
def test_an_endless_device_is_refused_not_read_forever():
    with pytest.raises(InvalidInputError, match="more than 512 MiB without ending"):
        load_image("/dev/zero")


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_an_engine_file_replaced_by_a_directory_or_a_pipe_says_what_it_is(tmp_path, kind):
    import shutil
    from pathlib import Path

    from genmask_sdk.errors import ArtifactMismatchError
    from genmask_sdk.runtime.manifest import load_manifest

    if kind == "fifo" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    engines = tmp_path / "engines"
    shutil.copytree(Path(__file__).resolve().parents[1] / "fixtures" / "engines_0.2.0" / "gen2seg_tiny", engines)
    (engines / "mae.fp32.onnx").unlink()
    (engines / "mae.fp32.onnx").mkdir() if kind == "directory" else os.mkfifo(engines / "mae.fp32.onnx")
    words = "is a directory" if kind == "directory" else "is not a regular file"
    with pytest.raises(ArtifactMismatchError, match=f"listed in the manifest as an engine file but {words}"):
        load_manifest(engines, verify=True)
