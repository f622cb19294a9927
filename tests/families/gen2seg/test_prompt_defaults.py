"""A checkpoint's own prompt defaults (``prompt_config.json``): file format and typed errors, the
order caller > checkpoint > published defaults, and the path checkpoint -> build -> manifest ->
``InstanceSegmenter.from_engines``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genmask_sdk.errors import ArtifactMismatchError
from genmask_sdk.families.gen2seg.prompt_defaults import (
    PROMPT_CONFIG_FILE,
    prompt_config_from_mapping,
    prompt_defaults_json,
    read_prompt_defaults,
)
from genmask_sdk.families.gen2seg.prompts import PromptConfig
from genmask_sdk.families.gen2seg.segmenter import InstanceSegmenter

SELECTION = {"metric": "single_point_miou", "chosen": {"threshold": 10.0}, "chosen_score": 0.6}


def test_round_trip(tmp_path):
    config = PromptConfig(threshold=10, refine=False, bilateral_d=5)
    (tmp_path / PROMPT_CONFIG_FILE).write_text(prompt_defaults_json(config, SELECTION))
    assert read_prompt_defaults(tmp_path) == (config, SELECTION)
    assert read_prompt_defaults(tmp_path / "elsewhere") is None  # no file: the published defaults apply


@pytest.mark.parametrize("data, match", [
    ([1, 2], "JSON object"),
    ({"threshold": 10, "colour": 1}, "unknown PromptConfig field"),
    ({"refine": "yes"}, "refine must be true or false"),
    ({"threshold": "10"}, "threshold must be a number"),
    ({"threshold": True}, "threshold must be a number"),
    ({"bilateral_d": 4.5}, "bilateral_d must be an integer"),
    ({"threshold": 300}, r"threshold must be a number in \[0, 255\)"),
])
def test_bad_configs_name_the_field_and_the_file(data, match):
    with pytest.raises(ArtifactMismatchError, match=match) as info:
        prompt_config_from_mapping(data, "ckpt/prompt_config.json")
    assert "ckpt/prompt_config.json" in str(info.value)


@pytest.mark.parametrize("text, match", [
    ("{not json", "not readable JSON"),
    (json.dumps({"threshold": 10}), "no 'prompt_config' object"),
    (json.dumps({"prompt_config": {}, "selection": []}), "'selection' must be a JSON object"),
])
def test_a_broken_file_is_an_error_not_the_defaults(tmp_path, text, match):
    (tmp_path / PROMPT_CONFIG_FILE).write_text(text)
    with pytest.raises(ArtifactMismatchError, match=match):
        read_prompt_defaults(tmp_path)


class Flat:
    """A colorizer double: a black map; ``prompt_defaults`` as an engines colorizer carries them."""

    def __init__(self, prompt_defaults=None) -> None:
        self.prompt_defaults, self.closed = prompt_defaults, False

    def color_map(self, rgb):
        return np.zeros_like(rgb)

    def describe(self):
        return {"backend": "fake"}

    def close(self):
        self.closed = True


def test_selection_picks_the_best_candidate_on_the_given_scenes():
    from genmask_sdk.data.instances import InstanceDataset
    from genmask_sdk.families.gen2seg.eval.demo import select_prompt_config
    from genmask_sdk.errors import ConfigError

    class Truth:  # colours every instance of the scene exactly: any threshold below 255 is perfect...
        def __init__(self, scenes):
            self.maps = {id(s.image): s for s in scenes}

        def colorize(self, image):
            scene, out = self.maps[id(image)], np.zeros(image.shape, dtype=np.uint8)
            for k, obj in enumerate(scene.objects):
                out[obj.mask] = (40 + 25 * k, 200 - 20 * k, 90 + 15 * k)
            return out

    scenes = list(InstanceDataset(1, 3, 64))
    config, record = select_prompt_config(Truth(scenes), scenes, {"threshold": [3, 254.9]}, PromptConfig(refine=False))
    # ...except 254.9, where only exact-colour pixels pass and the Gaussian-averaged query may miss
    assert [c["threshold"] for c in record["candidates"]] == [3.0, 254.9]
    assert record["chosen"] == {"threshold": 3.0} and config == PromptConfig(threshold=3.0, refine=False)
    assert record["chosen_score"] == max(c["score"] for c in record["candidates"]) > 0.95
    assert record["instances"] == sum(len(s.objects) for s in scenes)
    with pytest.raises(ConfigError, match="unknown"):
        select_prompt_config(Truth(scenes), scenes, {"colour": [1]})


def test_caller_beats_checkpoint_beats_published():
    mine, theirs = PromptConfig(threshold=20), PromptConfig(threshold=10)
    cases = [(mine, theirs, mine, "caller"), (None, theirs, theirs, "checkpoint (prompt_config.json)"),
             (None, None, PromptConfig(), "published gen2seg defaults")]
    for given, checkpoint, expected, source in cases:
        segmenter = InstanceSegmenter(Flat(), given, checkpoint_prompts=checkpoint)
        assert segmenter.prompt_config == expected
        assert segmenter.describe()["prompt_config_source"] == source


# ------------------------------------------------------------------ checkpoint -> engines -> runtime
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from genmask_sdk.families.gen2seg.train.demo import Gen2SegDemoConfig, build_model

    directory = tmp_path_factory.mktemp("prompted") / "ck"
    build_model(Gen2SegDemoConfig.tiny()).eval().save_pretrained(directory)
    (directory / PROMPT_CONFIG_FILE).write_text(prompt_defaults_json(PromptConfig(threshold=10), SELECTION))
    return directory


def test_from_pretrained_uses_the_checkpoint_defaults(checkpoint, tmp_path):
    with InstanceSegmenter.from_pretrained(checkpoint) as segmenter:
        assert segmenter.prompt_config.threshold == 10
    with InstanceSegmenter.from_pretrained(checkpoint, prompt_config=PromptConfig()) as segmenter:
        assert segmenter.prompt_config.threshold == 3

    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(checkpoint, broken)
    (broken / PROMPT_CONFIG_FILE).write_text(json.dumps({"prompt_config": {"threshold": -1}}))
    with pytest.raises(ArtifactMismatchError, match="threshold"):
        InstanceSegmenter.from_pretrained(broken)


def test_the_build_carries_them_to_the_engines(checkpoint, tmp_path):
    from genmask_sdk.families.gen2seg.export.build import build_gen2seg_engines

    out = tmp_path / "engines"
    build_gen2seg_engines(checkpoint, out, ("fp32",), check_samples=1, progress=False, log=lambda line: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prompt_config"]["threshold"] == 10 and manifest["prompt_config_selection"] == SELECTION
    with InstanceSegmenter.from_engines(out) as segmenter:
        assert segmenter.prompt_config == PromptConfig(threshold=10)
        assert segmenter.describe()["prompt_config_source"] == "checkpoint (prompt_config.json)"

    manifest["prompt_config"]["refine"] = "yes"  # a hand-edited manifest: refused, the engines are closed
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactMismatchError, match="refine must be true or false"):
        InstanceSegmenter.from_engines(out)
