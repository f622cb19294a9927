import json

import pytest

from genmask_sdk.families.genmask.config import EMBEDDERS, EmbedderSpec, GenMaskConfig
from genmask_sdk.errors import ArtifactNotFoundError, ConfigError


def test_real_preset_has_wan21_13b_numbers():
    cfg = GenMaskConfig.preset("wan2.1-1.3b", embedder="qwen2.5-vl-7b")
    t = cfg.transformer
    assert (t["num_layers"], t["num_attention_heads"], t["attention_head_dim"], t["ffn_dim"]) == (30, 12, 128, 8960)
    assert t["patch_size"] == [1, 2, 2] and t["text_dim"] == 3584 and t["freq_dim"] == 256
    assert cfg.vae["base_dim"] == 96 and cfg.vae["z_dim"] == 16
    assert cfg.resolution == 512 and cfg.tokens_per_frame == 1024 and cfg.latent_size == 64
    assert GenMaskConfig.preset("wan2.1-1.3b", embedder="qwen2.5-vl-3b").transformer["text_dim"] == 2048


@pytest.mark.parametrize("preset", ["wan2.1-1.3b", "demo", "tiny"])
def test_json_round_trip(preset, tmp_path):
    cfg = GenMaskConfig.preset(preset, embedder="minilm", t_star=0.9, noise_seed=7)
    assert GenMaskConfig.from_json(cfg.to_json()) == cfg
    cfg.save(tmp_path)
    assert GenMaskConfig.load(tmp_path) == cfg
    assert json.loads((tmp_path / "genmask_config.json").read_text())["t_star"] == 0.9


def test_config_is_frozen():
    cfg = GenMaskConfig.preset("tiny", embedder="minilm")
    with pytest.raises(Exception):
        cfg.t_star = 0.5


@pytest.mark.parametrize("change, words", [
    ({"resolution": 100}, "multiple of 16"),
    ({"t_star": 0.0}, "t_star"),
    ({"mask_decoder": "crf"}, "mask_decoder"),
])
def test_invalid_values_raise(change, words):
    with pytest.raises(ConfigError, match=words):
        GenMaskConfig.preset("tiny", embedder="minilm", **change)


def test_text_dim_must_match_embedder():
    cfg = GenMaskConfig.preset("tiny", embedder="minilm")
    with pytest.raises(ConfigError, match="text_dim"):
        cfg.replace(embedder=EMBEDDERS["qwen2.5-vl-3b"])


def test_embedder_spec_validation():
    with pytest.raises(ConfigError, match="target"):
        EmbedderSpec("minilm", "x", 384, prompt_template="no placeholder")
    with pytest.raises(ConfigError, match="kind"):
        EmbedderSpec("clip", "x", 384)
    with pytest.raises(ConfigError, match="unknown preset"):
        GenMaskConfig.preset("huge")


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="save_pretrained"):
        GenMaskConfig.load(tmp_path)
    (tmp_path / "genmask_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid"):
        GenMaskConfig.load(tmp_path)
