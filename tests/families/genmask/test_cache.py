"""The frozen-stage cache (``python -m genmask_sdk.families.genmask.train.cache``): contents, resume, refusals.

The data-parallel run (two processes under ``accelerate launch``) is exercised by test_finetune.py,
whose training set is cached that way.
"""

from __future__ import annotations

import json

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from genmask_sdk.families.genmask.config import GenMaskConfig
from genmask_sdk.errors import ArtifactMismatchError, ArtifactNotFoundError, ConfigError
from genmask_sdk.families.genmask.modeling import GenMaskModel

pytest.importorskip("datasets")

from genmask_sdk.data.converters.scenes import scene_samples  # noqa: E402
from genmask_sdk.data.prepared import open_prepared, write_prepared  # noqa: E402
from genmask_sdk.families.genmask.train import cache  # noqa: E402
from genmask_sdk.families.genmask.train.cache_encode import engine_mask, engine_pixels  # noqa: E402
from genmask_sdk.families.genmask.train.cache_format import (
    COMPLETE_FILE,
    CacheInfo,
    cache_dir,
    rank_shards,
    shard_name,
)  # noqa: E402
from genmask_sdk.families.genmask.train.cache_reader import open_cache  # noqa: E402
from genmask_sdk.families.genmask.train.cache_source import resolve_source  # noqa: E402


# ----------------------------------------------------------------------------------- helpers
def tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random tiny GenMask checkpoint (MiniLM embedder, 32 px): the frozen stages of the tests."""
    torch.manual_seed(seed)
    return GenMaskModel.from_config(GenMaskConfig.preset("tiny", embedder="minilm")).save_pretrained(path)


def _landscape(samples):
    """Pad every scene with a grey band at the bottom (H = 4/3 W), so the letterbox has padding to handle."""
    for s in samples:
        band = s.image.shape[0] // 3
        image = np.concatenate([s.image, np.full((band, s.image.shape[1], 3), 90, np.uint8)])
        mask = None if s.mask is None else np.concatenate([s.mask, np.zeros((band, s.mask.shape[1]), bool)])
        yield dataclasses.replace(s, image=image, mask=mask)


def prepare_scenes(out: Path, seg: int, gen: int, seed: int = 0, size: int = 48) -> Path:
    """A prepared set of ``seg`` referring expressions and ``gen`` captioned images (portrait, not square)."""
    samples = _landscape(scene_samples(seg, seed=seed, size=size, captions=gen))
    return write_prepared(samples, out, description="test scenes", progress=False)


def run_cache(data: Path, checkpoint: Path, *extra: str) -> Path:
    return cache.run(cache.parse_args(["--data", str(data), "--checkpoint", str(checkpoint), "--shard-rows", "8",
                                       "--batch", "8", "--no-progress", *extra]))


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    checkpoint = tiny_checkpoint(root / "ckpt")
    data = prepare_scenes(root / "data", seg=14, gen=6)
    run_cache(data, checkpoint)
    return data, checkpoint


# ------------------------------------------------------------------------------------- tests
def test_cache_holds_the_frozen_stages_outputs(cached, minilm):
    data, checkpoint = cached
    reader = open_cache(data, identity=resolve_source(checkpoint=str(checkpoint)).identity)
    prepared = open_prepared(data)
    assert len(reader) == len(prepared) == 20 and reader.info.shards == 3
    assert list(reader.indices("seg")) == list(prepared.indices("seg"))
    assert list(reader.indices("gen")) == list(prepared.indices("gen"))

    model = GenMaskModel.from_pretrained(checkpoint)
    rows = [0, 9, 17]  # two segmentation rows (shards 0 and 1), one generation row (shard 2)
    batch = reader.batch(rows)
    assert batch.z_image.shape == (3, 16, 4, 4) and batch.z_image.dtype == torch.float32
    for i, row in enumerate(rows):
        sample = prepared[row]
        with torch.no_grad():
            z = model.encode_image(engine_pixels(sample.image, 32)[None])[0]
        torch.testing.assert_close(batch.z_image[i], z, atol=1e-5, rtol=1e-5)
        expected = minilm(None, [sample.instruction]).states[0]
        length = int(batch.mask[i].sum())
        assert length == expected.shape[0]
        torch.testing.assert_close(batch.states[i, :length], expected.to(torch.bfloat16).float())
        assert tuple(batch.sizes[i].tolist()) == sample.image.shape[:2]
        if sample.task == "seg":
            assert torch.equal(reader.masks([row])[0], engine_mask(sample.mask, 32))
            assert reader.masks([row])[0].any() and batch.z_mask[i].abs().sum() > 0
        else:
            assert not reader.masks([row])[0].any() and batch.z_mask[i].abs().sum() == 0
    assert reader.null_states().shape == (2, 384)  # MiniLM's "" -> [CLS] [SEP]
    assert (cache_dir(data) / "vae" / "config.json").is_file()


def test_interrupted_cache_resumes_and_skips_finished_shards(cached):
    data, checkpoint = cached
    out = cache_dir(data)
    done = {k: (out / shard_name(k, 3)).stat().st_mtime_ns for k in (0, 2)}
    (out / shard_name(1, 3)).unlink()
    (out / COMPLETE_FILE).unlink()
    with pytest.raises(ArtifactNotFoundError, match="unfinished"):
        open_cache(data)
    run_cache(data, checkpoint)
    assert (out / shard_name(1, 3)).is_file() and (out / COMPLETE_FILE).is_file()
    assert {k: (out / shard_name(k, 3)).stat().st_mtime_ns for k in (0, 2)} == done
    assert len(open_cache(data)) == 20


def test_a_truncated_shard_is_computed_again_not_trusted(cached, capsys):
    """Issue 34: a shard that does not match its record (size + SHA-256 written after it) is computed
    again on resume; a finished cache whose shard changed size is refused with a typed error."""
    data, checkpoint = cached
    out = cache_dir(data)
    shard = out / shard_name(1, 3)
    original = shard.read_bytes()
    shard.write_bytes(original[: len(original) // 2])
    with pytest.raises(ArtifactMismatchError, match="size differs"):
        open_cache(data)
    (out / COMPLETE_FILE).unlink()
    run_cache(data, checkpoint)
    assert "recomputing 1 shard(s)" in capsys.readouterr().out
    assert shard.read_bytes() == original and len(open_cache(data)) == 20
    complete = json.loads((out / COMPLETE_FILE).read_text())
    assert all({"bytes", "sha256"} <= set(entry) for entry in complete["shards"])


@pytest.mark.parametrize("args, words", [
    (["--data", "/nonexistent", "--checkpoint", "demo"], "is not a prepared dataset"),
    (["--data", "DATA"], "name the frozen stages"),
    (["--data", "DATA", "--checkpoint", "demo", "--shard-rows", "0"], "--shard-rows and --batch must be >= 1"),
    (["--data", "DATA", "--checkpoint", "CKPT", "--shard-rows", "4"], "differs in shard_rows, shards"),
])
def test_cache_command_user_errors_are_one_line(cached, capsys, args, words):
    data, checkpoint = cached
    names = {"DATA": str(data), "CKPT": str(checkpoint)}
    assert cache.main([names.get(a, a) for a in args] + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_cache_of_other_frozen_stages_is_refused(cached, tmp_path):
    data, _ = cached
    other = tiny_checkpoint(tmp_path / "other", seed=1)
    with pytest.raises(ArtifactMismatchError, match="identity"):
        run_cache(data, other)
    with pytest.raises(ArtifactMismatchError, match="other frozen stages"):
        open_cache(data, identity=resolve_source(checkpoint=str(other)).identity)


def test_overwrite_replaces_a_cache_of_other_inputs(cached, tmp_path):
    data, _ = cached
    copy = tmp_path / "cache"
    shutil.copytree(cache_dir(data), copy)
    other = dataclasses.replace(CacheInfo.load(copy), resolution=48)
    with pytest.raises(ArtifactMismatchError, match="resolution"):
        cache.claim(copy, other, overwrite=False)
    cache.claim(copy, other, overwrite=True)
    assert sorted(p.name for p in copy.iterdir()) == ["cache_info.json"]
    assert CacheInfo.load(copy).resolution == 48


def test_missing_cache_and_bad_sources_are_typed_errors(tmp_path):
    with pytest.raises(ArtifactNotFoundError, match="train.cache"):
        open_cache(tmp_path)
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_source()
    with pytest.raises(ConfigError, match="exactly one"):
        resolve_source(checkpoint="demo", vae="Wan-AI/x")
    with pytest.raises(ConfigError, match="multiple of 16"):
        resolve_source(checkpoint="demo", resolution=30)


def test_a_prepared_set_changed_after_caching_is_refused(cached, tmp_path):
    data, _ = cached
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    assert len(open_cache(copy)) == 20
    info = copy / "prepare_info.json"
    info.write_text(info.read_text().replace("test scenes", "prepared again"))
    with pytest.raises(ArtifactMismatchError, match="prepared again.*--overwrite"):
        open_cache(copy)


class ImageEmbedder:
    """A stand-in for Qwen2.5-VL: states depend on the image (its mean grey level) and the text length."""

    uses_image, hidden_size = True, 3

    def __init__(self):
        self.images = []

    def __call__(self, images, targets):
        from genmask_sdk.families.genmask.modeling.embedders.base import Embedding
        from genmask_sdk.errors import InvalidInputError

        if any("too long" in t for t in targets):
            raise InvalidInputError("prompt too long")
        self.images.extend(images)
        states = torch.tensor([[float(np.asarray(im).mean()), len(t), 1.0] for im, t in zip(images, targets)])
        return Embedding(states[:, None].expand(-1, 2, -1).clone(), torch.ones(len(targets), 2, dtype=torch.bool))


def test_image_embedders_see_the_image_or_a_grey_one_for_captions():
    from genmask_sdk.data.prepared import PreparedSample
    from genmask_sdk.errors import InvalidSampleError
    from genmask_sdk.families.genmask.train.cache_encode import GREY, embed_rows, null_states

    image = np.full((4, 6, 3), 10, np.uint8)
    seg = PreparedSample("a", image, "the dot", "seg", "scenes", np.ones((4, 6), bool))
    gen = PreparedSample("b", image, "a dot", "gen", "scenes")
    embedder = ImageEmbedder()
    rows = embed_rows(embedder, [seg, gen])
    assert [r.shape for r in rows] == [(2, 3), (2, 3)]
    assert rows[0][0, 0] == 10 and rows[1][0, 0] == GREY[0]  # the caption's image is not shown
    assert embedder.images[1].size == (6, 4)
    assert torch.equal(null_states(embedder), torch.zeros(1, 3))  # no null_states(): one zero token
    bad = PreparedSample("scenes/7", image, "too long", "seg", "scenes", np.ones((4, 6), bool))
    with pytest.raises(InvalidSampleError, match="scenes/7"):
        embed_rows(embedder, [seg, bad])


def test_processes_fill_disjoint_shards_covering_all():
    shards = [rank_shards(11, rank, 3) for rank in range(3)]
    assert sorted(k for part in shards for k in part) == list(range(11))
    assert shards[0] == [0, 3, 6, 9]


def test_a_wan_backbone_directory_is_a_source(tmp_path, tiny_model):
    wan = tmp_path / "wan"
    tiny_model.vae.save_pretrained(wan / "vae")
    source = resolve_source(vae=str(wan), embedder="minilm", resolution=64)
    assert source.vae_dir == wan / "vae" and source.embedder.hidden_size == 384 and source.resolution == 64
    assert source.identity != resolve_source(vae=str(wan), embedder="qwen2.5-vl-3b").identity
    assert os.path.basename(source.label) == "wan"
