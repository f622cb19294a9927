"""gen2seg PyTorch reference (genmask_sdk.families.gen2seg.modeling): configs, schedule arithmetic, processing,
tiny SD and MAE models through the loaders, typed errors, and real-size configs on the meta device.

Everything is offline: tiny random components are saved in the published layouts and loaded back.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError
from genmask_sdk.families.gen2seg.modeling import (
    Gen2SegConfig,
    Gen2SegMAE,
    Gen2SegSD,
    MAEColorStage,
    alphas_cumprod,
    load_gen2seg,
    load_mae,
    load_sd,
    min_max_gamma,
    min_max_sd,
    one_step_inference_timestep,
    preprocess_sd,
    resize_to_original,
    unpad,
    unpatchify,
    x0_coefficients,
)
from genmask_sdk.families.gen2seg.modeling import configs
from genmask_sdk.families.gen2seg.modeling.configs import tiny_mae_config, tiny_sd_components

SD2_SCHEDULER = configs.SD2_SCHEDULER


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sd_parts():
    return tiny_sd_components(seed=0)


@pytest.fixture(scope="module")
def sd_model(sd_parts) -> Gen2SegSD:
    p = sd_parts
    return Gen2SegSD.from_components(p["vae"], p["unet"], p["text_encoder"], p["tokenizer"], p["scheduler_config"],
                                     Gen2SegConfig.sd(processing_size=64, name="tiny"))


@pytest.fixture(scope="module")
def sd_pipeline_dir(sd_parts, tmp_path_factory):
    """The published gen2seg-sd layout: a diffusers pipeline folder (model_index.json, vae/, unet/,
    text_encoder/, tokenizer/, scheduler/), written by diffusers itself."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    p = sd_parts
    pipe = StableDiffusionPipeline(
        vae=p["vae"], text_encoder=p["text_encoder"], tokenizer=p["tokenizer"], unet=p["unet"],
        scheduler=DDPMScheduler(**p["scheduler_config"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    directory = tmp_path_factory.mktemp("published_sd")
    pipe.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def mae_model() -> Gen2SegMAE:
    torch.manual_seed(0)
    return Gen2SegMAE.from_config(tiny_mae_config())


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    return torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------------------- config
def test_config_defaults_per_variant_and_round_trip(tmp_path):
    sd, mae = Gen2SegConfig.sd(), Gen2SegConfig.mae()
    assert (sd.family, sd.processing_size, sd.timestep, sd.empty_prompt_padding, sd.gamma) == \
        ("gen2seg", 768, 999, "do_not_pad", 1.0)
    assert (mae.processing_size, mae.gamma) == (224, 0.7)
    custom = Gen2SegConfig.sd(empty_prompt_padding="max_length", processing_size=512, name="x")
    custom.save(tmp_path)
    assert json.loads((tmp_path / "gen2seg_config.json").read_text())["family"] == "gen2seg"
    assert Gen2SegConfig.load(tmp_path) == custom


@pytest.mark.parametrize("fields", [
    {"variant": "mae-b"}, {"empty_prompt_padding": "longest"}, {"gamma": 0}, {"gamma": True},
    {"processing_size": 4}, {"timestep": -1}, {"family": "genmask"},
    {"variant": "mae", "pixel_head_channels": -1}, {"variant": "mae", "pixel_head_channels": 8, "pixel_head_depth": 0},
    {"variant": "sd", "pixel_head_channels": 8},
])
def test_config_rejects_bad_values(fields):
    with pytest.raises(ConfigError):
        Gen2SegConfig(**fields)


def test_config_load_errors(tmp_path):
    with pytest.raises(ArtifactNotFoundError):
        Gen2SegConfig.load(tmp_path)
    (tmp_path / "gen2seg_config.json").write_text(json.dumps({"variant": "sd", "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown"):
        Gen2SegConfig.load(tmp_path)


# ------------------------------------------------------------------------------------- schedule
def test_sd2_v_to_x0_coefficients():
    alpha = float(alphas_cumprod(SD2_SCHEDULER)[999])
    assert alpha == pytest.approx(0.0046601, abs=5e-7)
    a, b = x0_coefficients(SD2_SCHEDULER, 999)
    assert a == pytest.approx(0.068265, abs=1e-6) and b == pytest.approx(-0.997667, abs=1e-6)
    eps_a, eps_b = x0_coefficients(dict(SD2_SCHEDULER, prediction_type="epsilon"), 999)
    assert eps_a == pytest.approx(1 / a) and eps_b == pytest.approx(b / a)


def test_alphas_match_diffusers():
    from diffusers import DDPMScheduler

    for schedule in ("scaled_linear", "linear"):
        config = dict(SD2_SCHEDULER, beta_schedule=schedule)
        ours = alphas_cumprod(config).float()
        assert torch.allclose(ours, DDPMScheduler(**config).alphas_cumprod, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError):
        alphas_cumprod(dict(SD2_SCHEDULER, beta_schedule="squaredcos_cap_v2"))
    with pytest.raises(ConfigError):
        x0_coefficients(SD2_SCHEDULER, 1000)


def test_one_step_timestep_depends_on_spacing():
    assert one_step_inference_timestep(SD2_SCHEDULER) == 999  # what gen2seg's train.py saves
    assert one_step_inference_timestep(dict(SD2_SCHEDULER, timestep_spacing="leading")) == 1  # SD 2's own


# ----------------------------------------------------------------------------------- processing
def test_preprocess_long_side_pad_and_unpad():
    image = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)  # H 375, W 500
    prepared = preprocess_sd(image, 768)
    assert prepared.pixels.shape == (1, 3, 576, 768) and prepared.pad == (0, 0)
    assert prepared.original_size == (375, 500)
    assert -1.0 <= float(prepared.pixels.min()) and float(prepared.pixels.max()) <= 1.0

    odd = preprocess_sd(np.zeros((333, 500, 3), np.uint8), 768)  # 333·768 // 500 = 511 -> pad 1 row
    assert odd.pixels.shape == (1, 3, 512, 768) and odd.pad == (1, 0)
    assert unpad(odd.pixels, odd.pad).shape[-2:] == (511, 768)
    colour = torch.full((3, 511, 768), 200.7)
    back = resize_to_original(colour, odd.original_size)
    assert back.shape == (333, 500, 3) and back.dtype == np.uint8 and int(back[100, 100, 0]) == 200


def test_preprocess_matches_marigold_processor():
    """Same numbers as diffusers' MarigoldImageProcessor, which the official SD pipeline calls."""
    from diffusers.pipelines.marigold.marigold_image_processing import MarigoldImageProcessor

    image = np.random.default_rng(1).integers(0, 256, (61, 90, 3), dtype=np.uint8)
    ours = preprocess_sd(image, 40)
    theirs, padding, original = MarigoldImageProcessor(vae_scale_factor=8).preprocess(
        image, 40, "bilinear", torch.device("cpu"), torch.float32)
    assert tuple(padding) == ours.pad and tuple(original) == ours.original_size
    torch.testing.assert_close(ours.pixels, theirs, atol=1e-6, rtol=0)


def test_colour_normalisations():
    image = torch.stack([torch.linspace(-1, 1, 48).view(3, 4, 4), torch.linspace(-4, 2, 48).view(3, 4, 4)])
    per_image = min_max_sd(image)
    assert torch.allclose(per_image.amin(dim=(1, 2, 3)), torch.zeros(2))
    assert torch.allclose(per_image.amax(dim=(1, 2, 3)), torch.full((2,), 255.0))
    per_batch = min_max_sd(image, per_image=False)  # upstream: one min/max for the whole batch
    assert torch.allclose(per_batch, (image + 4) / 6 * 255)
    assert torch.isfinite(min_max_sd(torch.zeros(1, 3, 2, 2))).all()

    x = image[1]
    expected = ((x + 4) / (2 + 4 + 1e-5)) ** 0.7 * 255
    assert torch.allclose(min_max_gamma(image, 0.7)[1], expected)


# --------------------------------------------------------------------------------------- tiny SD
def test_sd_empty_prompt_embedding_shapes(sd_parts, sd_model):
    p = sd_parts
    assert sd_model.empty_prompt_embedding.shape == (1, 2, configs.TINY_TEXT_WIDTH)  # [BOS, EOS]
    padded = Gen2SegSD.from_components(p["vae"], p["unet"], p["text_encoder"], p["tokenizer"], p["scheduler_config"],
                                       Gen2SegConfig.sd(empty_prompt_padding="max_length"))
    assert padded.empty_prompt_embedding.shape == (1, 77, configs.TINY_TEXT_WIDTH)
    # BOS sits at position 0 either way and CLIP attention is causal: the first two rows agree.
    torch.testing.assert_close(padded.empty_prompt_embedding[:, :2], sd_model.empty_prompt_embedding)


@torch.no_grad()
def test_sd_stages_match_diffusers(sd_parts, sd_model, latents):
    from diffusers import DDPMScheduler

    pixels = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    vae, unet = sd_parts["vae"], sd_parts["unet"]
    z = sd_model.encode(pixels)
    assert z.shape == (2, 4, 8, 6)
    torch.testing.assert_close(z, vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor)

    # The official one-step inference: set_timesteps(1) ("trailing" -> t = 999), step(v, t, z).
    scheduler = DDPMScheduler(**sd_parts["scheduler_config"])
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    states = sd_model.empty_prompt_embedding.expand(2, -1, -1)
    v = unet(latents, t, encoder_hidden_states=states).sample
    expected = scheduler.step(v, t, latents).pred_original_sample
    torch.testing.assert_close(sd_model.unet_x0(latents), expected, atol=1e-5, rtol=1e-5)

    # A scheduler config with clip_sample (diffusers' default when the key is absent) clamps x0.
    clipping = dict(sd_parts["scheduler_config"], clip_sample=True, clip_sample_range=0.5)
    clipped = Gen2SegSD(sd_model.config, vae, unet, clipping, sd_model.empty_prompt_embedding)
    expected = DDPMScheduler(**clipping).step(v, t, latents).pred_original_sample
    torch.testing.assert_close(clipped.unet_x0(latents), expected, atol=1e-5, rtol=1e-5)
    assert float(expected.abs().max()) == 0.5

    decoded = sd_model.decode(latents)
    torch.testing.assert_close(decoded, vae.decode(latents / vae.config.scaling_factor).sample)
    colour = sd_model(pixels)
    assert colour.shape == (2, 3, 64, 48) and float(colour.min()) == 0.0 and float(colour.max()) == 255.0


def test_sd_colorize_returns_original_size(sd_model):
    image = np.random.default_rng(3).integers(0, 256, (50, 37, 3), dtype=np.uint8)
    out = sd_model.colorize(image)
    assert out.shape == (50, 37, 3) and out.dtype == np.uint8


@torch.no_grad()
def test_sd_published_layout_loads(sd_pipeline_dir, sd_model, latents):
    loaded = load_gen2seg(sd_pipeline_dir, local_files_only=True)
    assert isinstance(loaded, Gen2SegSD) and loaded.config.variant == "sd"
    assert loaded.config.processing_size == 768 and loaded.config.timestep == 999
    torch.testing.assert_close(loaded.empty_prompt_embedding, sd_model.empty_prompt_embedding)
    torch.testing.assert_close(loaded.unet_x0(latents), sd_model.unet_x0(latents))
    training = Gen2SegSD.from_pretrained(sd_pipeline_dir, local_files_only=True, empty_prompt_padding="max_length")
    assert training.empty_prompt_embedding.shape[1] == 77


@torch.no_grad()
def test_sd_save_pretrained_round_trip_needs_no_clip(sd_model, tmp_path, latents):
    directory = sd_model.save_pretrained(tmp_path / "ours")
    names = {p.name for p in directory.iterdir()}
    assert {"gen2seg_config.json", "vae", "unet", "scheduler", "empty_prompt_embedding.safetensors"} <= names
    assert "text_encoder" not in names
    loaded = Gen2SegSD.from_pretrained(directory)
    assert loaded.config == sd_model.config
    torch.testing.assert_close(loaded.unet_x0(latents), sd_model.unet_x0(latents))
    # Another padding needs CLIP, which this checkpoint does not hold: a typed error says so.
    with pytest.raises(ArtifactNotFoundError, match="text_encoder"):
        Gen2SegSD.from_pretrained(directory, empty_prompt_padding="max_length")


def test_sd_export_stage_has_no_text_encoder(sd_model):
    exported = torch.export.export(sd_model.unet_stage(), (torch.randn(1, 4, 8, 8),))
    assert not any("text_model" in name for name in exported.state_dict)


# -------------------------------------------------------------------------------------- tiny MAE
@torch.no_grad()
def test_mae_forward_equals_transformers_identity_order(mae_model):
    mae = mae_model.mae
    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(4))
    count = 16  # (56 / 14)²
    reference = mae(pixel_values=pixels, noise=torch.arange(count).float().expand(2, count)).logits
    ours = mae_model(pixels)
    assert ours.shape == (2, count, 14 * 14 * 3)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)
    # Upstream's random shuffle (mask ratio 0) gives the same up to rounding.
    shuffled = mae(pixel_values=pixels).logits
    torch.testing.assert_close(ours, shuffled, atol=1e-5, rtol=1e-5)
    image = torch.randn(2, 3, 56, 56)
    torch.testing.assert_close(unpatchify(mae.patchify(image), 14), image)
    torch.testing.assert_close(mae_model.unpatchify(ours), mae.unpatchify(ours))


@torch.no_grad()
def test_mae_colour_map_and_export(mae_model):
    pixels = torch.rand(1, 3, 56, 56)
    colour = MAEColorStage(mae_model)(pixels)
    assert colour.shape == (1, 3, 56, 56) and 0.0 <= float(colour.min()) and float(colour.max()) < 255.0
    raw = mae_model.predict_image(pixels)
    normalised = (raw - raw.min()) / (raw.max() - raw.min() + 1e-5)  # the published formula when min < 0 < max
    assert float(raw.min()) < 0 < float(raw.max())
    torch.testing.assert_close(mae_model.color_map(raw), normalised**0.7 * 255, atol=1e-3, rtol=1e-5)
    exported = torch.export.export(mae_model, (pixels,))
    targets = " ".join(str(node.target) for node in exported.graph.nodes if node.op == "call_function")
    assert not any(op in targets for op in ("rand", "argsort", "sort", "gather"))
    out = mae_model.colorize(np.zeros((30, 40, 3), np.uint8))
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8


@torch.no_grad()
def test_mae_published_layout_and_round_trip(mae_model, tmp_path):
    pixels = torch.randn(1, 3, 56, 56)
    mae_model.mae.save_pretrained(tmp_path / "published")  # what reachomk/gen2seg-mae-h is: a transformers folder
    published = load_gen2seg(tmp_path / "published", local_files_only=True)
    assert isinstance(published, Gen2SegMAE) and published.config.processing_size == 56
    assert published.config.gamma == 0.7 and published.mae.config.mask_ratio == 0.0
    torch.testing.assert_close(published(pixels), mae_model(pixels))
    ours = Gen2SegMAE.from_pretrained(mae_model.save_pretrained(tmp_path / "ours"))
    assert ours.config == mae_model.config
    torch.testing.assert_close(ours(pixels), mae_model(pixels))


def headed_mae(seed: int = 0) -> Gen2SegMAE:
    """The tiny MAE with a pixel head whose output layer is random (a fresh head is the identity)."""
    torch.manual_seed(seed)
    model = Gen2SegMAE.from_config(tiny_mae_config(), Gen2SegConfig.mae(processing_size=56, pixel_head_channels=8,
                                                                         pixel_head_depth=2))
    torch.nn.init.normal_(model.pixel_head.out.weight, std=0.2)
    return model


def test_pixel_head_starts_as_identity_and_refines_at_full_resolution():
    torch.manual_seed(0)
    fresh = Gen2SegMAE.from_config(tiny_mae_config(), Gen2SegConfig.mae(processing_size=56, pixel_head_channels=8))
    pixels = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        coarse = fresh.unpatchify(fresh(fresh.normalise(pixels)))
        torch.testing.assert_close(fresh.predict_image(pixels), coarse)  # zero-initialised residual
        model = headed_mae()
        coarse = model.unpatchify(model(model.normalise(pixels)))
        refined = model.predict_image(pixels)
    assert refined.shape == coarse.shape == (2, 3, 56, 56)
    assert (refined - coarse).abs().max() > 1e-3  # the head changes pixels ...
    patch = coarse[:, :, :14, :14]  # ... inside a patch, which the ViT alone paints from one token
    assert (refined[:, :, :14, :14] - patch).flatten(2).std(-1).max() > 0


def test_pixel_head_round_trip_and_typed_errors(tmp_path):
    model = headed_mae()
    pixels = torch.rand(1, 3, 56, 56)
    saved = model.save_pretrained(tmp_path / "headed")
    assert (saved / "pixel_head.safetensors").is_file()
    loaded = Gen2SegMAE.from_pretrained(saved)
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_image(pixels), model.predict_image(pixels))
    (saved / "pixel_head.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactMismatchError, match="pixel head"):
        load_gen2seg(saved)
    (saved / "pixel_head.safetensors").unlink()
    with pytest.raises(ArtifactNotFoundError, match="pixel_head.safetensors"):
        load_gen2seg(saved)
    with pytest.raises(ArtifactMismatchError, match="pixel head"):  # a head of another width
        load_gen2seg(model.save_pretrained(tmp_path / "other"), pixel_head_channels=4)


# ---------------------------------------------------------------------------------------- errors
def test_loader_typed_errors(tmp_path, sd_pipeline_dir):
    from genmask_sdk.families.genmask.config import GenMaskConfig

    genmask = tmp_path / "genmask"
    genmask.mkdir()
    GenMaskConfig.preset("tiny", embedder="minilm").save(genmask)
    with pytest.raises(ArtifactMismatchError, match="GenMask"):
        load_gen2seg(genmask)
    with pytest.raises(ArtifactNotFoundError):
        load_gen2seg(tmp_path / "missing")
    with pytest.raises(ArtifactNotFoundError):
        load_gen2seg("./no/such/dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactMismatchError, match="not a gen2seg checkpoint"):
        load_gen2seg(empty)
    (empty / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ArtifactMismatchError, match="vit_mae"):
        load_gen2seg(empty)
    with pytest.raises(ArtifactMismatchError, match="gen2seg-sd"):
        load_mae(sd_pipeline_dir)
    with pytest.raises(ConfigError, match="image_size"):
        Gen2SegMAE.from_config(tiny_mae_config(), Gen2SegConfig.mae())  # 224 != the tiny 56


def test_hub_ids_offline_are_typed():
    from huggingface_hub import try_to_load_from_cache

    with pytest.raises(ArtifactNotFoundError):
        load_gen2seg("nobody/not-a-gen2seg-repo", local_files_only=True)
    if try_to_load_from_cache("reachomk/gen2seg-sd", "vae/config.json") is None:  # never load real weights here
        with pytest.raises(ArtifactNotFoundError):
            load_sd("reachomk/gen2seg-sd", local_files_only=True)


# ------------------------------------------------------------------------------- real-size (meta)
def test_sd2_real_size_on_meta():
    unet, vae = configs.build_sd2_unet(), configs.build_sd2_vae()
    # Parameter counts of stabilityai/stable-diffusion-2's UNet (865.91 M) and KL-f8 VAE (83.65 M),
    # as widely reported for SD 2.x; exact for these configs with diffusers 0.42.
    assert n_params(unet) == pytest.approx(865.91e6, rel=1e-4)
    assert n_params(vae) == pytest.approx(83.65e6, rel=1e-4)
    assert unet.conv_in.weight.shape == (320, 4, 3, 3)
    assert unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_k.weight.shape == (320, 1024)
    assert vae.quant_conv.weight.shape == (8, 8, 1, 1) and vae.config.scaling_factor == 0.18215
    model = Gen2SegSD(Gen2SegConfig.sd(), vae, unet, SD2_SCHEDULER, torch.zeros(1, 2, 1024, device="meta"))
    assert model.coefficients[0] == pytest.approx(0.068265, abs=1e-6)
    with pytest.raises(ConfigError, match="cross_attention_dim"):
        Gen2SegSD(Gen2SegConfig.sd(), vae, unet, SD2_SCHEDULER, torch.zeros(1, 2, 32, device="meta"))


def test_vit_mae_huge_real_size_on_meta():
    model = Gen2SegMAE(Gen2SegConfig.mae(), configs.build_vit_mae_huge())
    # ViT-H/14 encoder: 632 M in the ViT paper (with a 1000-class head of 1.28 M); without a head,
    # and with MAE's fixed 257-position table, 630.8 M. The MAE decoder (8 × 512) adds ~26.3 M.
    assert n_params(model.mae.vit) == pytest.approx(630.8e6, rel=2e-3)
    assert n_params(model.mae.decoder) == pytest.approx(26.3e6, rel=5e-3)
    assert model.mae.vit.embeddings.patch_embeddings.projection.weight.shape == (1280, 3, 14, 14)
    assert model.mae.vit.embeddings.position_embeddings.shape == (1, 257, 1280)
    assert model.mae.decoder.decoder_pred.weight.shape == (588, 512)  # 14·14·3 values per patch
    out = model(torch.zeros(1, 3, 224, 224, device="meta"))
    assert out.shape == (1, 256, 588) and model.unpatchify(out).shape == (1, 3, 224, 224)
