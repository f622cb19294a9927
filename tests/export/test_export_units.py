"""Small, fast parts of the exporter: calibration folders, the softmax pass, checkpoint hashing,
options and the manifest writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.families.genmask.modeling.embedders import Embedding
from genmask_sdk.errors import ArtifactNotFoundError, ConfigError, InvalidInputError
from genmask_sdk.families.genmask.export import calibration
from genmask_sdk.export.fidelity import mask_iou
from genmask_sdk.export.fp16 import softmax_to_fp32
from genmask_sdk.export.manifest import _dumps, checkpoint_sha256
from genmask_sdk.families.genmask.export.build import BuildOptions
from genmask_sdk.families.genmask.modeling import GenMaskModel


def _images(folder: Path, names=("a.png", "b.jpg")) -> None:
    for i, name in enumerate(names):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(folder / name)


def test_calibration_folder_json_and_txt(tmp_path):
    _images(tmp_path)
    (tmp_path / "prompts.json").write_text(json.dumps({"a.png": "the cup", "b.jpg": ["the mug", "the bowl"]}))
    got = calibration.samples(tmp_path, 64, 32)
    assert [s.prompt for s in got] == ["the cup", "the mug", "the bowl"] and got[0].image.shape == (20, 30, 3)
    assert len(calibration.samples(tmp_path, 2, 32)) == 2
    (tmp_path / "prompts.json").write_text(json.dumps([{"image": "b.jpg", "prompt": "the mug"}]))
    assert [s.prompt for s in calibration.read_folder(tmp_path)] == ["the mug"]
    (tmp_path / "prompts.json").unlink()
    (tmp_path / "prompts.txt").write_text("# comment\n\na.png | the red cup\nb.jpg|the blue one\n")
    assert [s.prompt for s in calibration.read_folder(tmp_path)] == ["the red cup", "the blue one"]
    assert calibration.describe(tmp_path)["kind"] == "folder"


@pytest.mark.parametrize("content,error", [
    ("a.png the cup\n", InvalidInputError),       # no separator
    ("missing.png | the cup\n", ArtifactNotFoundError),
    ("a.png | \n", InvalidInputError),           # empty prompt
])
def test_calibration_folder_errors(tmp_path, content, error):
    _images(tmp_path)
    (tmp_path / "prompts.txt").write_text(content)
    with pytest.raises(error):
        calibration.read_folder(tmp_path)


def test_calibration_folder_without_prompt_file(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="prompts.json nor prompts.txt"):
        calibration.samples(tmp_path, 4, 32)


def test_demo_samples_are_deterministic_and_separate_from_checks():
    first, again = calibration.samples("demo", 3, 32), calibration.samples(None, 3, 32)
    assert [s.prompt for s in first] == [s.prompt for s in again]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again))
    checks = calibration.samples("demo", 3, 32, check=True)
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(first, checks))


def test_encode_gives_padded_feeds_and_unpadded_rows(tmp_path):
    model = GenMaskModel.from_config(GenMaskConfig.preset("tiny", embedder="minilm"))

    def embed(images, prompts):
        lengths = [len(p.split()) for p in prompts]
        states = torch.zeros(len(prompts), max(lengths), 384)
        mask = torch.zeros(len(prompts), max(lengths), dtype=torch.bool)
        for i, n in enumerate(lengths):
            states[i, :n], mask[i, :n] = 1.0, True
        return Embedding(states, mask)

    batch = [calibration.Sample(np.zeros((40, 20, 3), np.uint8), "a b c"), calibration.Sample(np.zeros((8, 8, 3), np.uint8), "a")]
    feeds = calibration.encode(model, batch, embed=embed)
    assert feeds.pixels.shape == (2, 3, 32, 32) and feeds.z_img.shape == (2, 16, 4, 4)
    assert feeds.context.shape == (2, 3, 384) and feeds.context_mask.tolist() == [[True] * 3, [True, False, False]]
    rows = feeds.rows()
    assert rows[1].context.shape == (1, 1, 384) and rows[1].dit_feeds()["context_mask"].all()
    random = calibration.encode(model, calibration.samples("random", 2, 32))
    assert random.context.shape == (2, 8, 384)


def test_softmax_pass_casts_fp16_softmax_to_fp32(tmp_path):
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="down"),
             helper.make_node("Softmax", ["h"], ["s"], axis=-1, name="sm"),
             helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT, name="up")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    assert softmax_to_fp32(path) == 1
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Cast", "Cast", "Softmax", "Cast", "Cast"]
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32) * 4
    y = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    assert np.allclose(y.sum(-1), 1, atol=1e-3)
    assert softmax_to_fp32(path) == 0  # idempotent: the softmax is fp32 now


def test_checkpoint_hash_covers_names_and_contents(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(b"1234")
    (tmp_path / "genmask_config.json").write_text("{}")
    (tmp_path / ".cache").mkdir()
    first = checkpoint_sha256(tmp_path)
    (tmp_path / ".cache" / "junk").write_text("ignored")
    assert checkpoint_sha256(tmp_path) == first
    (tmp_path / "sub" / "w.bin").write_bytes(b"1235")
    assert checkpoint_sha256(tmp_path) != first
    (tmp_path / "sub" / "w.bin").rename(tmp_path / "sub" / "v.bin")
    assert checkpoint_sha256(tmp_path) not in (first,)


@pytest.mark.parametrize("bad", [dict(precisions=("int4",)), dict(precisions=()), dict(tensorrt="maybe"),
                                 dict(max_batch=0), dict(calib_size=0), dict(workspace_gib=0)])
def test_bad_options(bad):
    with pytest.raises(ConfigError):
        BuildOptions(**bad)


def test_manifest_json_keeps_shapes_on_one_line():
    data = {"profiles": {"x": [[1, 16, 4, 4], [8, 16, 4, 4]]}, "shape": [None, 3], "text": "a [1,\n2]"}
    text = _dumps(data)
    assert json.loads(text) == data and "[1, 16, 4, 4]" in text and "[null, 3]" in text


def test_mask_iou_helper():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2], b[1:3] = True, True
    assert mask_iou(a, b) == pytest.approx(1 / 3) and mask_iou(a & False, b & False) == 1.0


def test_exports_print_no_known_harmless_chatter(tiny_model, tmp_path, caplog):
    """The dynamo exporter's 'torchvision is not installed. Skipping torchvision::nms' (x4) and the
    optimizer's 'Skipping constant folding for op Split' are hidden during our exports; the loggers'
    levels come back afterwards."""
    import logging

    from genmask_sdk.families.genmask.export.graphs import export_graph
    from genmask_sdk.families.genmask.export.build import DitGraph
    from genmask_sdk.export.quiet import CHATTY_LOGGERS

    before = [logging.getLogger(name).level for name in CHATTY_LOGGERS]
    with caplog.at_level(logging.WARNING):
        export_graph(tiny_model.mask_decoder(), "mask_head", tiny_model.config, tmp_path / "head.onnx")
        export_graph(DitGraph(tiny_model.one_step_dit()), "dit", tiny_model.config, tmp_path / "dit.onnx")
    chatter = [r.getMessage() for r in caplog.records if "torchvision" in r.getMessage() or "constant folding" in r.getMessage()]
    assert not chatter
    assert [logging.getLogger(name).level for name in CHATTY_LOGGERS] == before


def test_calibration_warning_names_real_checkpoints_only(tmp_path, tiny_model):
    """Procedural-scene calibration is the demo's own domain (by name or by path); any other checkpoint
    is warned about, and random calibration always is."""
    from genmask_sdk.families.genmask.checkpoints import demo_checkpoint_dir
    from genmask_sdk.families.genmask.export.options import build_options
    from genmask_sdk.families.genmask.export.build import _Build

    def warning(checkpoint, **options):
        return _Build(checkpoint, tmp_path / "e", build_options(**options), None, lambda _: None)._calibration_warning()

    assert warning("demo") is None and warning(str(demo_checkpoint_dir())) is None
    other = tiny_model.save_pretrained(tmp_path / "tiny")
    assert "procedural scenes" in warning(other) and "--calib DIR" in warning(other)
    assert "random inputs" in warning("demo", calib="random")


def test_calibration_encodes_fewer_images_at_a_time_at_high_resolution():
    from genmask_sdk.families.genmask.export.calibration import encode_batch_size

    assert [encode_batch_size(r) for r in (128, 256, 512, 1024)] == [8, 8, 2, 1]
