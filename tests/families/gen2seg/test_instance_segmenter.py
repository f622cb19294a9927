"""InstanceSegmenter (gen2seg's user API) and ``genmask segment --point/--everything``.

Two kinds of colorizer: tiny random gen2seg checkpoints (one SD, one MAE; saved with the
loader's save functions and loaded back through ``from_pretrained``), whose colour maps are
arbitrary, so those tests check shapes, caching and consistency; and a fake colorizer that paints
a synthetic flat-colour map, on which the prompt results are exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import torch
from PIL import Image

from genmask_sdk import InstanceSegmenter, MaskResult, Segmenter
from genmask_sdk.cli.main import main
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    InputTypeError,
    InvalidInputError,
    InvalidStateError,
)
from genmask_sdk.families.registry import family_of
from genmask_sdk.families.gen2seg import PromptConfig, point_prompt_mask
from genmask_sdk.families.gen2seg.segmenter import instance_overlay
from genmask_sdk.metrics import decode_rle
from genmask_sdk.runtime.results import INSTANCE_STAGES, STAGES, Timings

H, W = 37, 53  # odd, non-square: catches (x, y) / (row, column) mix-ups


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, object]:
    """{"sd": dir, "mae": dir}: tiny random gen2seg checkpoints in our format."""
    from genmask_sdk.families.gen2seg.modeling import Gen2SegConfig, Gen2SegMAE, Gen2SegSD
    from genmask_sdk.families.gen2seg.modeling.configs import tiny_mae_config, tiny_sd_components

    root = tmp_path_factory.mktemp("gen2seg")
    parts = tiny_sd_components(seed=0)
    sd = Gen2SegSD.from_components(parts["vae"], parts["unet"], parts["text_encoder"], parts["tokenizer"],
                                   parts["scheduler_config"], Gen2SegConfig.sd(processing_size=64, name="tiny"))
    torch.manual_seed(0)
    mae = Gen2SegMAE.from_config(tiny_mae_config())
    return {"sd": sd.save_pretrained(root / "sd"), "mae": mae.save_pretrained(root / "mae")}


@pytest.fixture(scope="module", params=["sd", "mae"])
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def segmenters(checkpoints):
    made = {name: InstanceSegmenter.from_pretrained(path) for name, path in checkpoints.items()}
    yield made
    for segmenter in made.values():
        segmenter.close()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 37x53 uint8 picture: two rectangles and a disc on a gradient."""
    yy, xx = np.mgrid[:H, :W]
    picture = np.stack([xx * 4, yy * 6, (xx + yy) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    picture[4:16, 5:20] = (230, 30, 30)
    picture[20:33, 30:48] = (30, 200, 60)
    picture[(yy - 10) ** 2 + (xx - 40) ** 2 <= 25] = (40, 40, 230)
    return picture


@pytest.fixture(scope="module")
def image_file(image, tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    Image.fromarray(image).save(path)
    return path


# ------------------------------------------------------------------------------ fake colourizers
COLOURS = {"red": (220, 40, 40), "green": (40, 220, 40), "blue": (40, 40, 230)}


def regions(height: int, width: int) -> dict[str, np.ndarray]:
    """Three flat regions (red and green touching) as bool masks, laid out for any size."""
    masks = {name: np.zeros((height, width), dtype=bool) for name in COLOURS}
    masks["red"][2:height // 2, 2:width // 3] = True
    masks["green"][2:height // 2, width // 3:2 * width // 3] = True
    masks["blue"][height // 2 + 3:height - 2, width // 2:width - 3] = True
    return masks


INSIDE = {"red": (8, 9), "green": (25, 9), "blue": (45, 30)}  # (x, y) in a 53x37 image


class FlatColourizer:
    """Paints ``regions`` of the input's size in ``colours``; counts calls; records close()."""

    def __init__(self, colours=COLOURS, scale: float = 1.0) -> None:
        self.colours, self.scale = colours, scale
        self.calls, self.closed = 0, False

    def color_map(self, rgb: np.ndarray) -> np.ndarray:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        self.calls += 1
        height, width = round(rgb.shape[0] * self.scale), round(rgb.shape[1] * self.scale)
        out = np.zeros((height, width, 3), dtype=np.uint8)
        for name, mask in regions(height, width).items():
            out[mask] = self.colours[name]
        return out

    def describe(self) -> dict:
        return {"backend": "fake", "precision": "fp32", "provider": None, "device": "cpu", "variant": "flat"}

    def close(self) -> None:
        self.closed = True


class Counting:
    """Counts the calls to a real colorizer's color_map."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def color_map(self, rgb):
        self.calls += 1
        return self.inner.color_map(rgb)

    def describe(self):
        return self.inner.describe()

    def close(self):
        self.inner.close()


@pytest.fixture()
def flat() -> tuple[InstanceSegmenter, FlatColourizer]:
    colorizer = FlatColourizer()
    segmenter = InstanceSegmenter(colorizer)
    segmenter.set_image(np.zeros((H, W, 3), dtype=np.uint8))
    return segmenter, colorizer


# ---------------------------------------------------------------------------------- real models
def test_colorize_shape_and_dtype_at_odd_sizes(segmenters, variant, checkpoints, image):
    from genmask_sdk.families.gen2seg.modeling import load_gen2seg

    segmenter = segmenters[variant]
    colours = segmenter.colorize(image)
    assert colours.shape == (H, W, 3) and colours.dtype == np.uint8 and colours.flags.writeable
    np.testing.assert_array_equal(colours, load_gen2seg(checkpoints[variant]).colorize(image))  # the reference
    tall = Image.fromarray(np.ascontiguousarray(image.transpose(1, 0, 2)[:, :29]))  # 29 wide, 53 high, PIL
    assert segmenter.colorize(tall).shape == (53, 29, 3)
    assert not segmenter.is_image_set  # colorize leaves the cached image alone


def test_set_image_then_predict_reuses_the_colour_map(checkpoints, image):
    from genmask_sdk.families.gen2seg.modeling.colorizer import TorchColorizer

    counting = Counting(TorchColorizer.from_pretrained(checkpoints["sd"]))
    with InstanceSegmenter(counting, source={"kind": "checkpoint", "path": str(checkpoints["sd"])}) as segmenter:
        segmenter.set_image(image)
        assert counting.calls == 1 and segmenter.image_size == (H, W)
        cached = segmenter.color_map
        assert cached.shape == (H, W, 3) and not cached.flags.writeable
        first = segmenter.predict(points=[(3, 4)])
        segmenter.predict(points=[(10, 20), (50, 30)], labels=[1, 0])
        segmenter.segment_everything(grid=4)
        assert counting.calls == 1
        assert first.timings.cached == ("preprocess", "colorize") and first.timings["colorize"] == 0.0
        assert list(first.timings) == list(INSTANCE_STAGES) and first.timings["total"] > 0
        fresh = segmenter.predict(image, points=[(3, 4)])  # an image given: the model runs, the cache stays
        assert counting.calls == 2 and fresh.timings.cached == () and fresh.timings["colorize"] > 0
        np.testing.assert_array_equal(fresh.mask, first.mask)
        assert segmenter.color_map is cached
        segmenter.reset_image()
        with pytest.raises(InvalidStateError, match="set_image"):
            segmenter.predict(points=[(3, 4)])


def test_predict_points_and_negatives_at_the_original_size(segmenters, variant, image):
    segmenter = segmenters[variant]
    segmenter.set_image(image)
    points, labels = [(0, 0), (52, 36), (40.5, 10.25), (26, 18)], [1, 1, 1, 0]
    result = segmenter.predict(points=points, labels=labels)
    assert isinstance(result, MaskResult) and result.size == (H, W)
    assert result.mask.dtype == bool and result.logits.dtype == np.float32 and result.logits.shape == (H, W)
    assert 0.0 <= float(result.logits.min()) and float(result.logits.max()) <= 1.0
    expected = float(result.logits[result.mask].mean()) if result.area else 0.0
    assert result.score == pytest.approx(expected, abs=1e-6)
    assert result.points == tuple((float(x), float(y)) for x, y in points) and result.labels == (1, 1, 1, 0)
    assert result.prompt is None and result.stability is None
    # points are pixels of the original image = pixels of the cached colour map
    mask, score = point_prompt_mask(segmenter.color_map, points, labels, segmenter.prompt_config)
    np.testing.assert_array_equal(result.mask, mask)
    np.testing.assert_array_equal(result.logits, score)
    assert result.overlay().size == (W, H)
    data = result.to_dict()
    assert data["points"][2] == [40.5, 10.25] and data["labels"] == [1, 1, 1, 0] and data["prompt"] is None
    assert decode_rle(data["rle"]).shape == (H, W)


def test_segment_everything_on_a_real_model(segmenters, variant, image):
    segmenter = segmenters[variant]
    results = segmenter.segment_everything(image, grid=4, min_stability=0.0, min_area=1)
    areas = [r.area for r in results]
    assert areas == sorted(areas, reverse=True)
    for r in results:
        assert r.size == (H, W) and len(r.points) == 1 and r.labels == (1,) and 0.0 <= r.stability <= 1.0
        assert r.timings is results[0].timings and r.timings.cached == ()


def test_describe_and_close(segmenters, variant, checkpoints):
    described = segmenters[variant].describe()
    assert described["family"] == "gen2seg" and described["variant"] == variant
    assert (described["backend"], described["precision"], described["device"]) == ("torch", "fp32", "cpu")
    assert described["source"] == {"kind": "checkpoint", "path": str(checkpoints[variant])}
    assert described["prompt_config"] == {**vars(PromptConfig())} and described["stages"] == list(INSTANCE_STAGES)
    assert described["versions"]["torch"] == torch.__version__ and described["closed"] is False
    json.dumps(described)  # JSON-ready
    assert described["processing_size"] == (64 if variant == "sd" else 56)


# ------------------------------------------------------------------------- flat maps: exact prompts
def test_a_point_inside_a_region_selects_exactly_it(flat):
    segmenter, _ = flat
    masks = regions(H, W)
    for name, point in INSIDE.items():
        result = segmenter.predict(points=[point])
        np.testing.assert_array_equal(result.mask, masks[name])
        assert 0.9 < result.score <= 1.0


def test_several_points_and_negatives(flat):
    segmenter, _ = flat
    masks = regions(H, W)
    union = segmenter.predict(points=[INSIDE["red"], INSIDE["blue"]])
    np.testing.assert_array_equal(union.mask, masks["red"] | masks["blue"])
    minus = segmenter.predict(points=[INSIDE["red"], INSIDE["blue"], INSIDE["green"]], labels=[1, 1, 0])
    np.testing.assert_array_equal(minus.mask, masks["red"] | masks["blue"])
    vetoed = segmenter.predict(points=[INSIDE["red"], (10, 12)], labels=[1, 0])  # a negative on the same region
    assert vetoed.area == 0 and vetoed.score == 0.0


def test_prompt_config_is_used():
    similar = {"red": (200, 60, 60), "green": (225, 80, 50), "blue": (40, 40, 230)}
    segmenter = InstanceSegmenter(FlatColourizer(similar), PromptConfig(clamp_similarity=True))
    segmenter.set_image(np.zeros((H, W, 3), dtype=np.uint8))
    masks = regions(H, W)
    np.testing.assert_array_equal(segmenter.predict(points=[INSIDE["red"]]).mask, masks["red"] | masks["green"])
    only = segmenter.predict(points=[INSIDE["red"], INSIDE["green"]], labels=[1, 0])
    np.testing.assert_array_equal(only.mask, masks["red"])


def test_predict_with_an_image_and_a_map_of_another_size():
    colorizer = FlatColourizer(scale=0.5)  # a colorizer answering at half size: resized to the image (nearest)
    segmenter = InstanceSegmenter(colorizer)
    image = np.zeros((2 * H, 2 * W, 3), dtype=np.uint8)
    result = segmenter.predict(image, points=[(2 * INSIDE["blue"][0], 2 * INSIDE["blue"][1])])
    assert result.size == (2 * H, 2 * W) and colorizer.calls == 1
    expected = np.kron(regions(H, W)["blue"], np.ones((2, 2), dtype=bool))
    np.testing.assert_array_equal(result.mask, expected)


def test_segment_everything_finds_each_region_once(flat):
    segmenter, _ = flat
    masks = regions(H, W)
    results = segmenter.segment_everything()
    assert len(results) == 3
    assert [r.area for r in results] == sorted((int(m.sum()) for m in masks.values()), reverse=True)
    found = []
    for result in results:
        name = next(n for n, m in masks.items() if np.array_equal(result.mask, m))
        found.append(name)
        (x, y), = result.points
        assert result.mask[int(y), int(x)] and result.labels == (1,) and result.stability == pytest.approx(1.0)
        assert result.score > 0.9 and result.logits.dtype == np.float32
        np.testing.assert_allclose(result.logits[result.mask], result.score, rtol=1e-6)
        assert result.to_dict()["stability"] == pytest.approx(1.0)
    assert sorted(found) == sorted(masks)
    for i, a in enumerate(results):  # no duplicates
        for b in results[i + 1:]:
            assert np.count_nonzero(a.mask & b.mask) / np.count_nonzero(a.mask | b.mask) <= 0.7
    assert len(segmenter.segment_everything(grid=2)) <= 3
    with pytest.raises(InputTypeError, match="unknown option"):
        segmenter.segment_everything(grdi=4)
    overlay = instance_overlay(results)
    assert overlay.size == (W, H) and overlay.mode == "RGB"


# ---------------------------------------------------------------------------------- bad inputs
def test_bad_points_and_labels_raise_typed_errors_in_image_terms(flat):
    segmenter, colorizer = flat
    with pytest.raises(InvalidInputError, match=r"outside the image.*53x37.*\[0, 52\]"):
        segmenter.predict(points=[(53, 5)])
    with pytest.raises(InvalidInputError, match="did you swap"):
        segmenter.predict(points=[(5, 45)])  # (row, column) by mistake
    with pytest.raises(InvalidInputError, match="outside"):
        segmenter.predict(points=[(-0.5, 3)])
    with pytest.raises(InvalidInputError, match="empty"):
        segmenter.predict(points=[])
    with pytest.raises(InvalidInputError, match="no points"):
        segmenter.predict()
    with pytest.raises(InvalidInputError, match="one value per point"):
        segmenter.predict(points=[(1, 2), (3, 4)], labels=[1])
    with pytest.raises(InvalidInputError, match="positive"):
        segmenter.predict(points=[(1, 2)], labels=[0])
    with pytest.raises(InvalidInputError, match="finite"):
        segmenter.predict(points=[(float("nan"), 2)])
    with pytest.raises(InputTypeError):
        segmenter.predict(points="10,20")
    with pytest.raises(InputTypeError, match="first argument is the image"):
        segmenter.predict([(10, 20)])
    calls = colorizer.calls
    with pytest.raises(InvalidInputError, match="outside"):
        segmenter.predict(np.zeros((H, W, 3), np.uint8), points=[(99, 1)])
    assert colorizer.calls == calls  # checked before the model runs
    with pytest.raises(InputTypeError, match="PromptConfig"):
        InstanceSegmenter(FlatColourizer(), prompt_config={"sigma": 0.1})
    with pytest.raises(InputTypeError, match="colorizer"):
        InstanceSegmenter(object())


def test_predict_before_set_image_and_after_close():
    colorizer = FlatColourizer()
    segmenter = InstanceSegmenter(colorizer)
    with pytest.raises(InvalidStateError, match="set_image"):
        segmenter.predict(points=[(1, 1)])
    with pytest.raises(InvalidStateError, match="set_image"):
        segmenter.segment_everything()
    with segmenter:
        segmenter.set_image(np.zeros((H, W, 3), np.uint8))
    assert colorizer.closed and segmenter.describe()["closed"] is True
    with pytest.raises(InvalidStateError, match="closed"):
        segmenter.predict(points=[(1, 1)])
    with pytest.raises(InvalidStateError, match="closed"):
        segmenter.colorize(np.zeros((H, W, 3), np.uint8))
    segmenter.close()  # twice is fine


def test_a_broken_colourizer_is_a_typed_error():
    class Broken(FlatColourizer):
        def color_map(self, rgb):
            return np.zeros(rgb.shape[:2], dtype=np.uint8)

    with pytest.raises(ArtifactMismatchError, match=r"\(H, W, 3\) uint8"):
        InstanceSegmenter(Broken()).colorize(np.zeros((H, W, 3), np.uint8))


# -------------------------------------------------------------------------------------- families
@pytest.fixture(scope="module")
def genmask_dir(tmp_path_factory):
    from genmask_sdk.families.genmask.config import GenMaskConfig

    directory = tmp_path_factory.mktemp("genmask_checkpoint")
    GenMaskConfig.preset("tiny", embedder="minilm").save(directory)
    return directory


def test_family_of(checkpoints, genmask_dir, tmp_path):
    assert family_of("demo") == "genmask" and family_of(genmask_dir) == "genmask"
    assert family_of("demo-gen2seg") == "gen2seg" and family_of("reachomk/gen2seg-mae-h") == "gen2seg"
    assert family_of(checkpoints["sd"]) == family_of(str(checkpoints["mae"])) == "gen2seg"
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "manifest.json").write_text(json.dumps({"format_version": 1}))
    assert family_of(engines) == "genmask"  # GenMask manifests name no family
    (engines / "manifest.json").write_text(json.dumps({"family": "gen2seg"}))
    assert family_of(engines) == "gen2seg"
    (engines / "manifest.json").write_text(json.dumps({"config": {"family": "gen2seg", "variant": "sd"}}))
    assert family_of(engines) == "gen2seg"
    (engines / "manifest.json").write_text("{not json")
    assert family_of(engines) is None
    assert family_of(tmp_path / "missing") is None and family_of("owner/other") is None and family_of(None) is None


def test_each_segmenter_refuses_the_other_family(checkpoints, genmask_dir, tmp_path):
    with pytest.raises(ArtifactMismatchError, match="GenMask model.*Segmenter"):
        InstanceSegmenter.from_pretrained(genmask_dir)
    with pytest.raises(ArtifactMismatchError, match="GenMask"):
        InstanceSegmenter.from_pretrained("demo")
    with pytest.raises(ArtifactMismatchError, match="gen2seg model.*InstanceSegmenter"):
        Segmenter.from_pretrained(checkpoints["sd"])
    with pytest.raises(ArtifactMismatchError, match="InstanceSegmenter"):
        Segmenter.from_pretrained("reachomk/gen2seg-sd")  # by name: nothing is downloaded
    engines = tmp_path / "gen2seg_engines"
    engines.mkdir()
    (engines / "manifest.json").write_text(json.dumps({"family": "gen2seg", "format_version": 1}))
    with pytest.raises(ArtifactMismatchError, match="InstanceSegmenter.*from_engines"):
        Segmenter.from_engines(engines)
    genmask_engines = tmp_path / "genmask_engines"
    genmask_engines.mkdir()
    (genmask_engines / "manifest.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ArtifactMismatchError, match="Segmenter"):
        InstanceSegmenter.from_engines(genmask_engines)


def test_a_missing_demo_gen2seg_says_how_to_get_it(tmp_path, monkeypatch):
    from genmask_sdk.families.gen2seg import checkpoints

    monkeypatch.setattr(checkpoints, "demo_gen2seg_dir", lambda: tmp_path / "demo_gen2seg")
    with pytest.raises(ArtifactNotFoundError, match="is missing from.*families.gen2seg.train.demo"):
        InstanceSegmenter.from_pretrained("demo-gen2seg")


def test_from_engines_without_and_with_the_engines_runtime(tmp_path, monkeypatch):
    with pytest.raises(ArtifactNotFoundError, match="does not exist"):
        InstanceSegmenter.from_engines(tmp_path / "missing")
    monkeypatch.setitem(sys.modules, "genmask_sdk.families.gen2seg.engines", None)  # as if the module did not exist
    with pytest.raises(BackendUnavailableError, match="gen2seg engines are not supported by this installation"):
        InstanceSegmenter.from_engines(tmp_path)
    seen = []
    fake = types.ModuleType("genmask_sdk.families.gen2seg.engines")
    fake.open_colorizer = lambda directory, backend, precision, device, openvino_hint, threads: seen.append(
        (directory, backend, precision, device, openvino_hint, threads)) or FlatColourizer()
    monkeypatch.setitem(sys.modules, "genmask_sdk.families.gen2seg.engines", fake)
    segmenter = InstanceSegmenter.from_engines(tmp_path, backend="onnxruntime", precision="fp16", device="cpu",
                                               threads=3)
    assert seen == [(tmp_path, "onnxruntime", "fp16", "cpu", "f32", 3)]
    assert segmenter.describe()["source"] == {"kind": "engines", "path": str(tmp_path)}
    assert segmenter.predict(np.zeros((H, W, 3), np.uint8), points=[INSIDE["blue"]]).area == int(regions(H, W)["blue"].sum())


def test_results_stay_backward_compatible():
    assert list(Timings({"dit": 1.0})) == list(STAGES)
    assert list(Timings({"prompt": 2.0}, stages=INSTANCE_STAGES)) == list(INSTANCE_STAGES)
    mask = np.zeros((4, 5), dtype=bool)
    result = MaskResult(mask=mask, logits=np.zeros((4, 5), np.float32), score=0.0, prompt="x", timings=Timings({}))
    # keys are only ever added ("found" came later), never renamed or removed
    assert set(result.to_dict()) == {"prompt", "phrase", "found", "score", "area", "size", "rle", "timings"}
    assert result.found is False and result.to_dict()["found"] is False
    assert result.phrase == "x" and result.points is None and "prompt='x'" in repr(result)


def test_importing_and_prompting_stay_torch_free():
    blocker = textwrap.dedent("""
        import importlib.abc, sys
        class _Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "diffusers", "safetensors"):
                    raise ImportError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, _Block())
    """)
    code = blocker + textwrap.dedent("""
        import sys, numpy as np
        from genmask_sdk import InstanceSegmenter
        import genmask_sdk.cli.main
        class Flat:
            def color_map(self, rgb):
                out = np.zeros_like(rgb); out[2:10, 2:10] = (200, 20, 20); return out
            def describe(self): return {"backend": "fake"}
            def close(self): pass
        seg = InstanceSegmenter(Flat())
        print(seg.predict(np.zeros((20, 30, 3), np.uint8), points=[(5, 5)]).area)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "diffusers")))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["64", "[]"]


# -------------------------------------------------------------------------------------------- CLI
def test_cli_points_writes_png_and_json(checkpoints, image_file, tmp_path, capsys):
    out = tmp_path / "points.png"
    code = main(["segment", str(image_file), "--point", "8,9", "--point", "45, 30", "--negative", "25,9",
                 "--checkpoint", str(checkpoints["sd"]), "--out", str(out), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["family"] == "gen2seg" and payload["variant"] == "sd" and payload["mode"] == "points"
    assert payload["size"] == [H, W] and payload["backend"]["backend"] == "torch"
    (result,) = payload["results"]
    assert result["points"] == [[8, 9], [45, 30], [25, 9]] and result["labels"] == [1, 1, 0]
    assert decode_rle(result["rle"]).shape == (H, W) and int(decode_rle(result["rle"]).sum()) == result["area"]
    assert set(INSTANCE_STAGES) <= set(result["timings"]) and result["timings"]["colorize"] > 0
    assert Image.open(out).size == (W, H) and out.read_bytes()[:4] == b"\x89PNG"


def test_cli_everything_writes_png_and_json(checkpoints, image_file, tmp_path, capsys):
    out = tmp_path / "everything.png"
    assert main(["segment", str(image_file), "--everything", "--grid", "4", "--checkpoint", str(checkpoints["mae"]),
                 "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["mode"] == "everything" and payload["variant"] == "mae" and payload["size"] == [H, W]
    areas = [r["area"] for r in payload["results"]]
    assert areas == sorted(areas, reverse=True)
    assert all("stability" in r and len(r["points"]) == 1 for r in payload["results"])
    assert Image.open(out).size == (W, H)
    assert main(["segment", str(image_file), "--everything", "--grid", "4",
                 "--checkpoint", str(checkpoints["mae"])]) == 0
    text = capsys.readouterr().out
    assert text.startswith("gen2seg-mae: torch fp32 on cpu") and "object(s) found" in text


@pytest.mark.parametrize(("argv", "match"), [
    (["--point", "10", "--checkpoint", "SD"], "is not X,Y"),
    (["--point", "99,5", "--checkpoint", "SD"], "outside the image"),
    (["the red circle", "--checkpoint", "SD"], "gen2seg model: it selects objects by points"),
    (["--point", "5,5", "--checkpoint", "GENMASK"], "GenMask model: it segments PROMPT phrases"),
    (["--point", "5,5", "--checkpoint", "demo"], "GenMask model"),
    (["--everything", "--point", "5,5", "--checkpoint", "SD"], "cannot be combined"),
    (["--negative", "5,5", "--checkpoint", "SD"], "at least one --point"),
    (["--point", "5,5", "--grid", "4", "--checkpoint", "SD"], "--grid"),
    (["a", "--point", "5,5"], "cannot be combined"),
    (["--point", "5,5", "--engines", "MISSING"], "does not exist"),
])  # fmt: skip
def test_cli_errors_exit_2_with_one_line(checkpoints, genmask_dir, image_file, tmp_path, capsys, argv, match):
    names = {"SD": str(checkpoints["sd"]), "GENMASK": str(genmask_dir), "MISSING": str(tmp_path / "none")}
    code = main(["segment", str(image_file), *(names.get(a, a) for a in argv)])
    err = capsys.readouterr().err
    assert code == 2 and match in err and err.startswith("genmask segment: error:"), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_needs_a_prompt_or_points(image_file, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["segment", str(image_file)])
    assert stop.value.code == 2 and "--point X,Y / --everything" in capsys.readouterr().err


def test_results_own_writable_arrays(flat):
    """Masks and score maps are the caller's to edit; the cached colour map and later results stay intact."""
    segmenter, _ = flat
    masks = regions(H, W)
    cached = segmenter.color_map.copy()
    first = segmenter.predict(points=[INSIDE["red"]])
    found = segmenter.segment_everything()
    for result in [first, *found]:
        assert result.mask.flags.writeable and result.logits.flags.writeable
        result.mask[...] = True
        result.logits[...] = 7.0
    assert np.array_equal(segmenter.color_map, cached)
    np.testing.assert_array_equal(segmenter.predict(points=[INSIDE["red"]]).mask, masks["red"])
