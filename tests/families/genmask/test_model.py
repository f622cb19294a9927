"""GenMask reference model: diffusers compatibility, one-step forward, checkpoints."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from genmask_sdk.families.genmask.config import EMBEDDERS, GenMaskConfig
from genmask_sdk.errors import ArtifactNotFoundError
from genmask_sdk.families.genmask.modeling import GenMaskModel, OneStepDiT, wan_velocity
from genmask_sdk.families.genmask.modeling.model import TEXT_PROJECTION_KEY, fixed_noise
from genmask_sdk.families.genmask.modeling.vae import VaeEncoder, encode_mean, single_frame_convolutions

# Wan2.1-T2V-1.3B as diffusers' conversion script defines it (text_dim 4096 = UMT5).
WAN21_13B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                 out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                 qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None)


def test_real_size_state_dict_matches_diffusers_on_meta():
    config = GenMaskConfig.preset("wan2.1-1.3b", embedder="qwen2.5-vl-7b")
    model = GenMaskModel.from_config(config, device="meta")
    assert all(p.is_meta for p in model.parameters())
    with torch.device("meta"):
        reference = WanTransformer3DModel(**WAN21_13B)
    ours = {k: tuple(v.shape) for k, v in model.transformer.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours.keys() == theirs.keys()
    differing = {k for k in ours if ours[k] != theirs[k]}
    assert differing == {TEXT_PROJECTION_KEY + ".weight"}
    assert ours[TEXT_PROJECTION_KEY + ".weight"] == (1536, 3584)
    count = sum(p.numel() for p in model.transformer.parameters())
    assert 1.40e9 < count < 1.43e9  # 1.418 B with a 3584-wide text projection


def _tokens_per_frame(h, w):
    return (h // 2) * (w // 2)


def test_forward_matches_diffusers_per_token_timesteps(tiny_model):
    tf = tiny_model.transformer
    torch.manual_seed(1)
    batch, h, w = 2, 8, 6
    latents = torch.randn(batch, 16, 2, h, w)
    context = torch.randn(batch, 5, 384)
    t = torch.tensor([0.3, 0.9])
    per_token = torch.cat([torch.zeros(batch, _tokens_per_frame(h, w)),
                           (1000 * t)[:, None].expand(-1, _tokens_per_frame(h, w))], dim=1)
    with torch.no_grad():
        reference = tf(latents, per_token, context, return_dict=False)[0]
        ours = wan_velocity(tf, latents, torch.stack([torch.zeros(2), 1000 * t], 1), context)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_one_step_equals_x_t_minus_t_v(tiny_model):
    tf = tiny_model.transformer
    torch.manual_seed(2)
    noise = torch.randn(1, 16, 4, 4)
    z_img = torch.randn(3, 16, 4, 4)
    context = torch.randn(3, 4, 384)
    t_star = 0.8
    with torch.no_grad():
        x0 = OneStepDiT(tf, noise, t_star)(z_img, context)
        latents = torch.stack([z_img, (t_star * noise).expand(3, -1, -1, -1)], dim=2)
        v = wan_velocity(tf, latents, torch.tensor([[0.0, 1000 * t_star]] * 3), context)[:, :, 1]
    assert torch.allclose(x0, t_star * noise - t_star * v, atol=1e-5)


def test_padded_prompt_with_mask_equals_unpadded(tiny_model):
    torch.manual_seed(3)
    z_img = torch.randn(1, 16, 4, 4)
    context = torch.randn(1, 3, 384)
    padded = torch.cat([context, torch.randn(1, 4, 384)], dim=1)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    with torch.no_grad():
        a = tiny_model.predict_latent(z_img, context)
        b = tiny_model.predict_latent(z_img, padded, mask)
        c = tiny_model.predict_latent(z_img, padded)  # without the mask the padding does leak in
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)


def test_noise_is_seeded(tiny_config):
    assert torch.equal(fixed_noise(tiny_config), fixed_noise(tiny_config))
    assert not torch.equal(fixed_noise(tiny_config), fixed_noise(tiny_config.replace(noise_seed=1)))
    assert fixed_noise(tiny_config).shape == (1, 16, 4, 4)


def test_single_frame_convolutions_are_exact(tiny_model):
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        reference = encode_mean(tiny_model.vae, pixels)
        with single_frame_convolutions(tiny_model.vae):
            fast = encode_mean(tiny_model.vae, pixels)
    assert torch.allclose(reference, fast, atol=1e-5)


def test_single_frame_convolutions_touch_only_the_given_model(tiny_model):
    """No global patch: diffusers' class and every other VAE keep their 3-D convolutions."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
    from torch.utils.flop_counter import FlopCounterMode

    original = WanCausalConv3d.forward
    other = AutoencoderKLWan.from_config(tiny_model.vae.config).eval()
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1

    def conv_flops(vae):
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            encode_mean(vae, pixels)
        return sum(v for k, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(k))

    full = conv_flops(other)
    with single_frame_convolutions(tiny_model.vae) as swap:
        assert WanCausalConv3d.forward is original and swap.layers
        assert conv_flops(other) == full  # the other VAE still runs its 3-D convolutions
        assert conv_flops(tiny_model.vae) < full  # this one runs 2-D ones
    assert all("forward" not in vars(layer) for layer in swap.layers)
    assert conv_flops(tiny_model.vae) == full


def test_vae_encoder_normalises_with_config_stats(tiny_model):
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        raw = encode_mean(tiny_model.vae, pixels)
        z = VaeEncoder(tiny_model.vae)(pixels)
    mean = torch.tensor(tiny_model.vae.config.latents_mean).view(1, -1, 1, 1)
    std = torch.tensor(tiny_model.vae.config.latents_std).view(1, -1, 1, 1)
    assert torch.allclose(z, (raw - mean) / std, atol=1e-5)


def test_segment_returns_logits_at_original_size(tiny_model):
    image = (np.random.default_rng(0).random((40, 70, 3)) * 255).astype(np.uint8)
    logits = tiny_model.segment(image, ["the red circle", "the large blue star on the left"])
    assert logits.shape == (2, 40, 70) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    single = tiny_model.segment(image, "the red circle")
    assert torch.allclose(single[0], logits[0], atol=1e-4)


def test_vae_decoder_mask_path(tiny_config):
    torch.manual_seed(0)
    model = GenMaskModel.from_config(tiny_config.replace(mask_decoder="vae_decoder"))
    logits = model.decode_mask(torch.randn(2, 16, 4, 4))
    assert logits.shape == (2, 1, 32, 32) and torch.isfinite(logits).all()
    assert logits.abs().max() <= 1.0


def test_save_load_round_trip_gives_identical_logits(tiny_model, tmp_path):
    image = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    before = tiny_model.segment(image, ["the green square"])
    tiny_model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "genmask_config.json", "mask_head.safetensors", "transformer", "vae"]
    loaded = GenMaskModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == tiny_model.config
    assert torch.equal(loaded.segment(image, ["the green square"]), before)
    assert not list(tmp_path.glob(".ckpt*")), "staging directory left behind"


def test_save_is_atomic_when_interrupted(tiny_model, tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    tiny_model.save_pretrained(target)
    before = sorted(p.name for p in target.rglob("*"))

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tiny_model.vae, "save_pretrained", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_model.save_pretrained(target)
    assert sorted(p.name for p in target.rglob("*")) == before  # old checkpoint untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_from_backbones_loads_wan_and_reinitialises_text_projection(tmp_path):
    torch.manual_seed(0)
    tiny = GenMaskConfig.preset("tiny", embedder="minilm")
    wan_kwargs = dict(tiny.transformer, text_dim=40)  # a "Wan" whose text encoder is 40 wide
    wan_transformer = WanTransformer3DModel(**wan_kwargs)
    wan_vae = AutoencoderKLWan(**tiny.vae)
    wan_transformer.save_pretrained(tmp_path / "wan" / "transformer")
    wan_vae.save_pretrained(tmp_path / "wan" / "vae")
    model = GenMaskModel.from_backbones(tmp_path / "wan", vlm=EMBEDDERS["minilm"], resolution=32)
    assert model.config.transformer["text_dim"] == 384
    loaded = model.transformer.state_dict()
    for key, value in wan_transformer.state_dict().items():
        if key == TEXT_PROJECTION_KEY + ".weight":
            assert loaded[key].shape == (value.shape[0], 384)
        elif key == TEXT_PROJECTION_KEY + ".bias":  # the whole input layer is new
            assert loaded[key].shape == value.shape
        else:
            assert torch.equal(loaded[key], value), key
    assert all(torch.equal(a, b) for a, b in zip(model.vae.state_dict().values(), wan_vae.state_dict().values()))
    model.save_pretrained(tmp_path / "genmask")  # the result is a normal checkpoint
    assert GenMaskModel.from_pretrained(tmp_path / "genmask").config.transformer["text_dim"] == 384


def test_missing_checkpoint_errors(tmp_path, monkeypatch):
    with pytest.raises(ArtifactNotFoundError, match="not a checkpoint directory"):
        GenMaskModel.from_pretrained(tmp_path / "nope")

    def offline(repo_id, **kwargs):
        raise OSError("network unreachable")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ArtifactNotFoundError, match="local directory"):
        GenMaskModel.from_pretrained("someone/genmask-7b")


def test_state_dict_has_no_cached_modules(tiny_model):
    tiny_model.one_step_dit()
    assert not any(k.startswith("_") for k in tiny_model.state_dict())
