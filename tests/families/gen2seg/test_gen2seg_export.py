"""gen2seg engines (export/gen2seg_build.py, runtime/gen2seg.py): tiny SD and MAE checkpoints are built
once each into ONNX fp32 + fp16 with a manifest, then served by the torch-free runtime and compared
with the PyTorch reference.

The SD checkpoint is *structured*: the tiny VAE is made an identity-like autoencoder (centre-tap
convolutions, resnet branches and attention outputs zeroed; GroupNorm + SiLU remain), and the random
tiny UNet's output is scaled by 0.01, which still makes its v term about 30 % of the image term
a·z in x0. Its colour maps therefore keep the synthetic objects flat, like a trained model's, so
point-prompt masks are a meaningful check; on a fully random model they are not (smooth-noise maps:
a 1e-3 relative perturbation of the fp32 latent alone moves masks to IoU 0.77, see
``gen2seg_build.END_TO_END_TOLERANCES``). The MAE checkpoint is the random tiny ViT-MAE.

Bounds held here (measured values in brackets): fp32 colour maps = PyTorch within 1 in 0..255
units as uint8 at the input size (truncation flips) [0] and 0.01 as floats [≤ 0.0006]; fp16 colour
maps within ``FP16_COLOUR_BOUND`` = 2 units as floats [SD 0.59, MAE 0.51] and 4 as uint8 [SD 3,
MAE 2: a flipped truncation, amplified by the LANCZOS resize back], and single-point masks
(``PromptConfig(refine=False, connected=False)``) with IoU mean ≥ 0.95 and min ≥ 0.9 [SD 0.9999 / 0.998, MAE
0.991 / 0.951].
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from genmask_sdk.families.genmask.engines import manifest_config
from genmask_sdk.errors import (
    ArtifactMismatchError,
    ArtifactNotFoundError,
    BackendUnavailableError,
    ConfigError,
    InputTypeError,
    InvalidInputError,
    InvalidStateError,
)
from genmask_sdk.families.gen2seg.export import build as gb
from genmask_sdk.export.fidelity import FidelityError
from genmask_sdk.families.gen2seg.export.build import (
    build_gen2seg_engines,
    check_images,
    prompt_ious,
    reference_color,
)
from genmask_sdk.export.manifest import checkpoint_sha256
from genmask_sdk.families.gen2seg.modeling import Gen2SegConfig, Gen2SegMAE, Gen2SegSD, load_gen2seg
from genmask_sdk.families.gen2seg.modeling.configs import tiny_mae_config, tiny_sd_components
from genmask_sdk.families.gen2seg.engines import open_colorizer
from genmask_sdk.runtime.manifest import load_manifest, manifest_problems

SD_SIZE = 64
FP16_COLOUR_BOUND = 2.0  # 0..255 units, float maps before truncation
FP16_UINT8_BOUND = 4  # the same maps as uint8 at the input size (truncation flips, LANCZOS)
SD_STAGES = ("vae_encoder", "unet", "vae_decoder")


def structured_tiny_sd(unet_scale: float = 0.01) -> Gen2SegSD:
    """The tiny SD with an identity-like VAE and a damped random UNet (module docstring)."""
    parts = tiny_sd_components(seed=0)
    vae = parts["vae"]
    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                module.bias.zero_()
                out_c, in_c, kh, kw = module.weight.shape
                for c in range(out_c):
                    module.weight[c, c % in_c, kh // 2, kw // 2] = 1.0
        for name, module in vae.named_modules():
            if name.endswith("conv2"):
                module.weight.zero_()
        for block in [*vae.encoder.mid_block.attentions, *vae.decoder.mid_block.attentions]:
            block.to_out[0].weight.zero_()
            block.to_out[0].bias.zero_()
        parts["unet"].conv_out.weight.mul_(unet_scale)
        parts["unet"].conv_out.bias.mul_(unet_scale)
    return Gen2SegSD.from_components(parts["vae"], parts["unet"], parts["text_encoder"], parts["tokenizer"],
                                     parts["scheduler_config"], Gen2SegConfig.sd(processing_size=SD_SIZE, name="tiny"))


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sd_checkpoint(tmp_path_factory) -> Path:
    return structured_tiny_sd().save_pretrained(tmp_path_factory.mktemp("g2s_sd") / "checkpoint")


@pytest.fixture(scope="module")
def mae_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = Gen2SegMAE.from_config(tiny_mae_config(), Gen2SegConfig.mae(processing_size=56, name="tiny",
                                                                         pixel_head_channels=8, pixel_head_depth=2))
    torch.nn.init.normal_(model.pixel_head.out.weight, std=0.02)  # a fresh head is the identity: exercise it (0.05 made the random map speckled, so one point mask hinged on a few near-threshold pixels)
    return model.save_pretrained(tmp_path_factory.mktemp("g2s_mae") / "checkpoint")


@pytest.fixture(scope="module")
def sd_build(sd_checkpoint):
    lines: list[str] = []
    result = build_gen2seg_engines(sd_checkpoint, sd_checkpoint.parent / "engines", progress=False, log=lines.append)
    return result, lines


@pytest.fixture(scope="module")
def mae_build(mae_checkpoint):
    lines: list[str] = []
    result = build_gen2seg_engines(mae_checkpoint, mae_checkpoint.parent / "engines", progress=False, log=lines.append)
    return result, lines


@pytest.fixture(scope="module")
def sd_model(sd_checkpoint):
    return load_gen2seg(sd_checkpoint)


@pytest.fixture(scope="module")
def mae_model(mae_checkpoint):
    return load_gen2seg(mae_checkpoint)


@pytest.fixture(params=["sd", "mae"])
def variant(request, sd_build, mae_build, sd_model, mae_model):
    """(variant, engines directory, PyTorch model)."""
    build, model = (sd_build, sd_model) if request.param == "sd" else (mae_build, mae_model)
    return request.param, build[0].directory, model


def odd_images(seed: int = 0) -> list[np.ndarray]:
    """Odd, non-square sizes: downscaled, upscaled (smaller than S) and extreme-ish aspect ratios."""
    rng = np.random.default_rng(seed)
    images = [image for image, _ in check_images(2, SD_SIZE, seed=seed + 20)]
    for height, width in ((37, 53), (91, 29), (45, 45)):
        base = rng.integers(0, 256, size=(3,))
        image = np.zeros((height, width, 3), np.uint8) + base.astype(np.uint8)
        image[height // 4: height // 2, width // 3: width // 2 + 3] = rng.integers(0, 256, size=(3,))
        images.append(image)
    return images


# -------------------------------------------------------------------------------- graphs, manifest
def test_sd_graphs_io_and_fidelity_records(sd_build, sd_checkpoint):
    result, lines = sd_build
    data = result.manifest.data
    assert data["family"] == "gen2seg" and data["config"]["variant"] == "sd"
    assert data["config"]["processing_size"] == SD_SIZE and data["processing"]["size"] == SD_SIZE
    assert data["checkpoint"] == {"source": str(sd_checkpoint), "path": str(sd_checkpoint),
                                  "sha256": checkpoint_sha256(sd_checkpoint)}
    assert data["sets"]["int8"] == {"onnx": {"vae_encoder": "vae_encoder.fp32.onnx", "unet": "unet.int8.onnx",
                                             "vae_decoder": "vae_decoder.fp32.onnx"}, "tensorrt": None}
    assert {p: data["sets"][p] for p in ("fp32", "fp16")} == {p: {"onnx": {s: f"{s}.{p}.onnx" for s in SD_STAGES}, "tensorrt": None}
                            for p in ("fp32", "fp16")}
    assert sorted(result.built) == sorted([f"{s}.{p}.onnx" for s in SD_STAGES for p in ("fp32", "fp16")]
                                          + ["unet.int8.onnx"])
    int8 = next(r for r in data["artifacts"] if r["file"] == "unet.int8.onnx")["details"]
    assert int8["calibration"] == {"kind": "demo", "seed": 5000} and int8["calibration_samples"] == 32
    assert int8["quantized_ops"]["Conv"] > 0 and int8["quantized_ops"]["MatMul"] > 0
    assert "unet.conv_in" in int8["kept_in_float32"] and "time_emb_proj" in int8["kept_in_float32"]
    shapes = {"vae_encoder": ("pixels", [None, 3, 64, 64], "latent", [None, 4, 8, 8]),
              "unet": ("latent", [None, 4, 8, 8], "x0", [None, 4, 8, 8]),
              "vae_decoder": ("x0", [None, 4, 8, 8], "image", [None, 3, 64, 64])}
    for record in data["artifacts"]:
        name_in, shape_in, name_out, shape_out = shapes[record["stage"]]
        assert record["inputs"] == [{"name": name_in, "dtype": "float32", "shape": shape_in}]
        assert record["outputs"] == [{"name": name_out, "dtype": "float32", "shape": shape_out}]
        fidelity = record["fidelity"]
        assert fidelity["runtime"] == "onnxruntime cpu" and fidelity["samples"] == 2
        assert fidelity["max_abs_error"] <= fidelity["tolerance"]
        relative = fidelity["max_abs_error"] / fidelity["reference_max_abs"]
        assert relative < {"fp32": 1e-4, "fp16": 1e-2, "int8": 5e-2}[record["precision"]], record["file"]  # int8: 0.017
        assert record["graph"]["sin_cos_nodes"] == 0  # t = 999 and its projection are folded
        assert record["profiles"] == {name_in: [[1, *shape_in[1:]], [1, *shape_in[1:]], [4, *shape_in[1:]]]}
    unet16 = onnx.load(str(result.directory / "unet.fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in unet16.graph.initializer)
    details = next(r for r in data["artifacts"] if r["file"] == "unet.fp16.onnx")["details"]
    assert {"InstanceNormalization", "LayerNormalization", "Softmax"} <= set(details["fp32_op_types"])
    assert details["fp32_residual_adds"] > 0
    unet32 = next(r for r in data["artifacts"] if r["file"] == "unet.fp32.onnx")["details"]
    assert any("timestep t = 999" in f for f in unet32["folded"])
    trt = data["tensorrt"]
    assert trt["built"] is False and "tensorrt" in trt["reason"].lower()  # no TensorRT here: why, and trtexec
    assert set(trt["trtexec"]) == {r["file"] for r in data["artifacts"]}
    assert "--stronglyTyped" in trt["trtexec"]["unet.fp16.onnx"]
    for precision, bound in (("fp32", 1.0), ("fp16", 24.0), ("int8", 48.0)):
        end = data["end_to_end"][precision]
        assert end["colour_max_abs_error"] <= bound and end["tolerance"]["colour_max_abs_error"] == bound
    assert data["end_to_end"]["fp32"]["mask_iou_min"] >= 0.99
    assert any("fp16 end to end" in line for line in lines)


def test_mae_graphs_io_and_fidelity_records(mae_build, mae_model):
    result, _ = mae_build
    data = result.manifest.data
    size = mae_model.config.processing_size
    assert data["family"] == "gen2seg" and data["config"]["variant"] == "mae" and data["processing"]["size"] == size
    assert data["processing"]["gamma"] == pytest.approx(0.7)
    np.testing.assert_array_equal(np.float32(data["processing"]["mean"]), mae_model.mean.flatten().numpy())
    assert data["sets"] == {p: {"onnx": {"mae": f"mae.{p}.onnx"}, "tensorrt": None} for p in ("fp32", "fp16", "int8")}
    for record in data["artifacts"]:
        assert record["inputs"] == [{"name": "pixels", "dtype": "float32", "shape": [None, 3, size, size]}]
        assert record["outputs"] == [{"name": "image", "dtype": "float32", "shape": [None, 3, size, size]}]
        assert record["fidelity"]["max_abs_error"] <= record["fidelity"]["tolerance"]
        ops = record["graph"]["ops"]
        assert not {"RandomUniform", "RandomUniformLike", "TopK", "GatherElements"} & set(ops)  # no masking


def test_only_the_asked_precisions_are_kept(mae_checkpoint, tmp_path):
    result = build_gen2seg_engines(mae_checkpoint, tmp_path / "fp16only", ["fp16"], progress=False,
                                   log=lambda line: None, check_samples=1)
    assert sorted(p.name for p in result.directory.iterdir()) == ["mae.fp16.onnx", "manifest.json"]
    assert list(result.manifest.data["sets"]) == ["fp16"]


def test_fp16_of_an_external_data_source_skips_shape_inference(mae_build, tmp_path, monkeypatch):
    """A fp32 source past 2 GB (ViT-MAE-H: 2.6 GB) cannot be serialised for shape inference even when
    its fp16 half fits inline; the converter must not try (it failed this way at real size)."""
    import onnx

    from genmask_sdk.families.gen2seg.export.build import convert_to_fp16
    from genmask_sdk.export.onnx_io import save_onnx

    source = save_onnx(onnx.load(str(mae_build[0].directory / "mae.fp32.onnx")), tmp_path / "src.onnx", True)
    assert (tmp_path / "src.onnx.data").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("shape inference on a model that may exceed 2 GB")

    from onnxruntime.transformers import float16

    monkeypatch.setattr(float16, "infer_shapes", refuse)  # what the converter calls
    details = convert_to_fp16(source, tmp_path / "dst.onnx", external_data=False)
    assert details["casts"] > 0 and not (tmp_path / "dst.onnx.data").exists()


# ------------------------------------------------------------------------------------ colour maps
def test_fp32_colour_maps_equal_pytorch_on_odd_sizes(variant):
    name, directory, model = variant
    with open_colorizer(directory, precision="fp32") as colorizer:
        for rgb in odd_images():
            ours = colorizer.color_map(rgb)
            ref_float, ref_map = reference_color(model, rgb)
            assert ours.shape == rgb.shape and ours.dtype == np.uint8
            assert int(np.abs(ours.astype(int) - ref_map).max()) <= 1, rgb.shape
            assert float(np.abs(colorizer.color_float(rgb) - ref_float).max()) < 1e-2
            if name == "mae" or (rgb.shape[0] == rgb.shape[1]):  # the published reference itself
                assert int(np.abs(ours.astype(int) - model.colorize(rgb)).max()) <= 1


def test_sd_square_images_equal_the_published_pipeline(sd_build, sd_model):
    """Square inputs need no padding: the engines then give exactly upstream's steps (Gen2SegSD.colorize)."""
    rng = np.random.default_rng(3)
    with open_colorizer(sd_build[0].directory) as colorizer:
        for side in (64, 97):
            rgb = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
            assert int(np.abs(colorizer.color_map(rgb).astype(int) - sd_model.colorize(rgb)).max()) <= 1


def test_numpy_preprocessing_equals_torch(sd_model):
    from genmask_sdk.families.gen2seg.pipeline import preprocess_sd

    for rgb in odd_images(seed=5):
        ours, (h, w) = preprocess_sd(rgb, SD_SIZE)
        ref = gb.reference_inputs(sd_model, [rgb], SD_SIZE).numpy()
        assert ours.shape == ref.shape == (1, 3, SD_SIZE, SD_SIZE)
        assert float(np.abs(ours - ref).max()) < 1e-5


def test_fp16_colour_maps_and_point_prompt_masks(variant):
    name, directory, model = variant
    size = model.config.processing_size
    ious, float_errors, uint8_errors = [], [], []
    with open_colorizer(directory, precision="fp16") as colorizer:
        assert colorizer.describe()["precision"] == "fp16"
        for rgb, points in check_images(3, size, seed=10):
            ref_float, ref_map = reference_color(model, rgb)
            ours = colorizer.color_map(rgb)
            float_errors.append(float(np.abs(colorizer.color_float(rgb) - ref_float).max()))
            uint8_errors.append(int(np.abs(ours.astype(int) - ref_map).max()))
            ious += prompt_ious(ours, ref_map, points)
    assert max(float_errors) <= FP16_COLOUR_BOUND, float_errors
    assert max(uint8_errors) <= FP16_UINT8_BOUND, uint8_errors
    assert np.mean(ious) >= 0.95 and min(ious) >= 0.9, ious


def test_int8_colour_maps_and_point_prompt_masks(variant):
    """INT8 (Model Optimizer max calibration on procedural scenes, explicit Q/DQ) end to end on images
    disjoint from calibration and from the build's checks. Measured: SD 7.95 float / 10 uint8, IoU
    mean 0.975; MAE 0.36 / 2, 0.975 (random tiny MAE: smooth-noise maps)."""
    name, directory, model = variant
    size = model.config.processing_size
    ious, float_errors = [], []
    with open_colorizer(directory, precision="int8") as colorizer:
        assert colorizer.describe()["graphs"] == ({"vae_encoder": "vae_encoder.fp32.onnx", "unet": "unet.int8.onnx",
                                                    "vae_decoder": "vae_decoder.fp32.onnx"} if name == "sd"
                                                   else {"mae": "mae.int8.onnx"})
        for rgb, points in check_images(3, size, seed=30):
            ref_float, ref_map = reference_color(model, rgb)
            float_errors.append(float(np.abs(colorizer.color_float(rgb) - ref_float).max()))
            ious += prompt_ious(colorizer.color_map(rgb), ref_map, points)
    assert max(float_errors) <= 16.0, float_errors
    assert np.mean(ious) >= 0.9, ious
    graph = onnx.load(str(directory / f"{'unet' if name == 'sd' else 'mae'}.int8.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("QuantizeLinear") > 0 and any(t.data_type == onnx.TensorProto.INT8 for t in graph.graph.initializer)


# ----------------------------------------------------------------------------------- torch-free
def test_open_colourizer_runs_without_torch(sd_build, mae_build, tmp_path):
    from test_torch_free import BLOCKED, run_blocked

    rgb = odd_images()[0]
    np.save(tmp_path / "rgb.npy", rgb)
    out = tmp_path / "maps.npz"
    directories = {"sd": str(sd_build[0].directory), "mae": str(mae_build[0].directory)}
    done = run_blocked(f"""
        import json, sys, numpy as np
        from genmask_sdk.families.gen2seg.engines import open_colorizer
        rgb = np.load({str(tmp_path / 'rgb.npy')!r})
        maps, described = {{}}, {{}}
        for name, directory in {directories!r}.items():
            for precision in ("fp32", "fp16", "int8"):
                with open_colorizer(directory, precision=precision) as colorizer:
                    maps[f"{{name}}_{{precision}}"] = colorizer.color_map(rgb)
                    described[f"{{name}}_{{precision}}"] = colorizer.describe()
        np.savez({str(out)!r}, **maps)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
        print(json.dumps({{"loaded": loaded, "described": described}}))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    described = report["described"]["sd_fp16"]
    assert described["family"] == "gen2seg" and described["variant"] == "sd" and described["backend"] == "onnxruntime"
    assert described["provider"] == "cpu" and described["graphs"]["unet"] == "unet.fp16.onnx"
    maps = np.load(out)
    for name, directory in directories.items():
        for precision in ("fp32", "fp16", "int8"):
            with open_colorizer(directory, precision=precision) as colorizer:
                np.testing.assert_array_equal(maps[f"{name}_{precision}"], colorizer.color_map(rgb))


# ------------------------------------------------------------------------------ manifest trust
@pytest.fixture
def engines_copy(mae_build, tmp_path) -> Path:
    directory = tmp_path / "engines"
    shutil.copytree(mae_build[0].directory, directory)
    return directory


def _edit(directory: Path, change) -> None:
    path = directory / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_manifest_validates_and_tampering_is_refused(engines_copy):
    manifest = load_manifest(engines_copy, verify=True, family="gen2seg")
    assert manifest.family == "gen2seg" and manifest.precisions == ["fp32", "fp16", "int8"]
    with pytest.raises(ArtifactMismatchError, match="gen2seg engines"):
        manifest_config(manifest)  # a GenMask Segmenter reading this directory gets a clear error
    path = engines_copy / "mae.fp32.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactMismatchError, match="checksum"):
        open_colorizer(engines_copy)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx"])
def test_file_paths_escaping_the_directory_are_refused(engines_copy, name):
    (engines_copy.parent / "outside.onnx").write_bytes((engines_copy / "mae.fp32.onnx").read_bytes())

    def change(data):
        data["artifacts"][0]["file"] = name
        data["sets"]["fp32"]["onnx"]["mae"] = name

    _edit(engines_copy, change)
    with pytest.raises(ArtifactMismatchError, match="not inside the engines directory"):
        open_colorizer(engines_copy)


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(family="other"), "family must be one of"),
    (lambda d: d["sets"]["fp32"]["onnx"].update(unet="mae.fp32.onnx"), "must name the stages"),
    (lambda d: d.pop("processing"), "processing must be an object"),
    (lambda d: d["processing"].update(size=99), "processing must be an object"),
    (lambda d: d["config"].update(variant="mae-b"), "config must be a gen2seg config"),
    (lambda d: d["artifacts"][0].update(stage="dit"), "is not a gen2seg-mae stage"),
])
def test_invalid_gen2seg_manifests_are_one_typed_error(engines_copy, change, expected):
    _edit(engines_copy, change)
    with pytest.raises(ArtifactMismatchError, match=expected):
        load_manifest(engines_copy)
    with pytest.raises(ArtifactMismatchError):
        open_colorizer(engines_copy)


def test_genmask_manifests_are_not_gen2seg_and_keep_their_rules(engines_copy):
    data = json.loads((engines_copy / "manifest.json").read_text())
    assert manifest_problems(data, engines_copy) == []
    _edit(engines_copy, lambda d: d.pop("family"))  # now it claims to be a GenMask manifest
    with pytest.raises(ArtifactMismatchError, match="holds 'genmask' engines, not 'gen2seg'"):
        open_colorizer(engines_copy)


# ------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("bad, error", [
    ([[0, 0, 0]], InputTypeError), (np.zeros((8, 8, 3), np.float32), InputTypeError),
    (np.zeros((8, 8), np.uint8), InvalidInputError), (np.zeros((0, 5, 3), np.uint8), InvalidInputError),
    (np.zeros((8, 8, 4), np.uint8), InvalidInputError), (np.zeros((1, 600, 3), np.uint8), InvalidInputError),
])
def test_bad_images_are_typed_errors(sd_build, bad, error):
    with open_colorizer(sd_build[0].directory) as colorizer:
        with pytest.raises(error):
            colorizer.color_map(bad)


def test_defaults_mean_what_they_mean_for_segmenter(engines_copy, monkeypatch):
    """device=None: the first visible GPU, else the CPU with the reason; precision=None: the SDK
    chooses (fp32) and says so; threads reaches the runtime (issue 28's one meaning for both)."""
    from genmask_sdk import InstanceSegmenter
    from genmask_sdk.runtime import devices

    monkeypatch.setattr(devices, "cuda_device_count", lambda: (0, "test"))
    with InstanceSegmenter.from_engines(engines_copy, threads=1) as seg:
        info = seg.describe()
    assert info["device"] == "cpu" and info["precision"] == "fp32" and info["colorizer"]["threads"] == 1
    assert "no CUDA GPU is visible" in info["fallbacks"][0]["reason"]
    assert "precision=None: fp32" in info["precision_choice"]["reason"]
    monkeypatch.setattr(devices, "cuda_device_count", lambda: (1, "test"))
    with pytest.raises(BackendUnavailableError):  # a visible GPU is chosen; this onnxruntime has no CUDA provider
        InstanceSegmenter.from_engines(engines_copy)


def test_bad_open_arguments_are_typed_errors(engines_copy, tmp_path):
    import onnxruntime

    with pytest.raises(BackendUnavailableError, match="no TensorRT plans"):
        open_colorizer(engines_copy, backend="tensorrt", device="cuda")
    with pytest.raises(BackendUnavailableError, match="runs on a CUDA GPU"):
        open_colorizer(engines_copy, backend="tensorrt")
    with pytest.raises(BackendUnavailableError):
        open_colorizer(engines_copy, backend="torch")
    for kwargs in ({"backend": "trt"}, {"precision": "fp8"}, {"device": "gpu"}):
        with pytest.raises(ConfigError):
            open_colorizer(engines_copy, **kwargs)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendUnavailableError):
            open_colorizer(engines_copy, device="cuda")
    with pytest.raises(ArtifactNotFoundError):
        open_colorizer(tmp_path / "nowhere")
    colorizer = open_colorizer(engines_copy)
    colorizer.close()
    with pytest.raises(InvalidStateError):
        colorizer.color_map(np.zeros((8, 8, 3), np.uint8))
    _edit(engines_copy, lambda d: d["sets"].pop("fp16"))
    with pytest.raises(BackendUnavailableError, match="has only the sets"):
        open_colorizer(engines_copy, precision="fp16")


def test_build_errors_are_typed(sd_checkpoint, mae_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="fp8"):
        build_gen2seg_engines(sd_checkpoint, tmp_path / "x", ["fp8"])
    with pytest.raises(ConfigError, match="tensorrt"):
        build_gen2seg_engines(sd_checkpoint, tmp_path / "x", tensorrt="yes")
    with pytest.raises(ConfigError, match="calib_size"):
        build_gen2seg_engines(sd_checkpoint, tmp_path / "x", calib_size=0)
    with pytest.raises(ConfigError, match="multiple of 8"):
        build_gen2seg_engines(sd_checkpoint, tmp_path / "x", size=60, log=lambda line: None)
    with pytest.raises(ConfigError):
        build_gen2seg_engines(mae_checkpoint, tmp_path / "x", size=64, log=lambda line: None)
    with pytest.raises(ArtifactNotFoundError):
        build_gen2seg_engines(tmp_path / "missing", tmp_path / "x")
    genmask_like = tmp_path / "genmask"
    genmask_like.mkdir()
    (genmask_like / "genmask_config.json").write_text("{}")
    with pytest.raises(ArtifactMismatchError):
        build_gen2seg_engines(genmask_like, tmp_path / "x", log=lambda line: None)
    assert not (tmp_path / "x").exists()


def test_a_graph_past_its_tolerance_aborts_and_keeps_the_previous_build(engines_copy, mae_checkpoint, monkeypatch):
    before = (engines_copy / "manifest.json").read_bytes()
    monkeypatch.setitem(gb.TOLERANCES, "fp32", (0.0, 0.0))
    with pytest.raises(FidelityError, match="mae.fp32.onnx"):
        build_gen2seg_engines(mae_checkpoint, engines_copy, ["fp32"], progress=False, log=lambda line: None,
                              check_samples=1)
    assert (engines_copy / "manifest.json").read_bytes() == before
    assert not [p for p in engines_copy.parent.iterdir() if ".build-" in p.name]
    load_manifest(engines_copy, verify=True)


# ------------------------------------------------------------------------------------------- cli
def test_cli_dispatch_is_torch_free_and_refuses_genmask_options(sd_checkpoint, mae_checkpoint, tmp_path, capsys):
    from genmask_sdk.cli.build import main
    from genmask_sdk.cli.build_gen2seg import CONFIG_NAME, KNOWN_HUB_IDS, is_gen2seg_checkpoint
    from genmask_sdk.families.gen2seg.modeling import (
        CONFIG_NAME as MODEL_CONFIG_NAME,
        KNOWN_HUB_IDS as MODEL_HUB_IDS,
    )

    assert CONFIG_NAME == MODEL_CONFIG_NAME and set(KNOWN_HUB_IDS) == set(MODEL_HUB_IDS)
    assert is_gen2seg_checkpoint(str(sd_checkpoint)) and is_gen2seg_checkpoint(str(mae_checkpoint))
    assert is_gen2seg_checkpoint("reachomk/gen2seg-sd") and not is_gen2seg_checkpoint("demo")
    assert not is_gen2seg_checkpoint(str(tmp_path))
    out = str(tmp_path / "cli")
    assert main(["--checkpoint", str(sd_checkpoint), "--out", out, "--max-prompt-tokens", "8"]) == 2
    assert "apply to GenMask checkpoints only" in capsys.readouterr().err
    assert main(["--checkpoint", str(sd_checkpoint), "--out", out, "--precisions", "fp8"]) == 2
    assert "gen2seg engines are built in" in capsys.readouterr().err
    assert main(["--checkpoint", str(mae_checkpoint), "--out", out, "--calib", str(tmp_path / "no-images")]) == 2
    assert "calibration folder" in capsys.readouterr().err
    assert main(["--checkpoint", str(mae_checkpoint), "--out", out, "--tensorrt", "on"]) == 2
    assert "--tensorrt on" in capsys.readouterr().err
    assert not Path(out).exists()
