"""Typed one-line errors for bad arguments to both segmenters (issue 34's probe), grouped by area."""

from __future__ import annotations

from pathlib import Path

import pytest

from genmask_sdk import InstanceSegmenter, PromptConfig, Segmenter
from genmask_sdk.errors import ConfigError, InputTypeError, InvalidInputError, InvalidStateError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "engines_0.2.0"


@pytest.mark.parametrize("cls", [Segmenter, InstanceSegmenter])
@pytest.mark.parametrize("directory", [None, b"engines/demo", 3])
def test_from_engines_needs_a_str_or_path(cls, directory):
    with pytest.raises(InputTypeError, match="str or Path"):
        cls.from_engines(directory)


@pytest.mark.parametrize("fields, words", [
    (dict(sigma=1e-300), "sigma must be >= 1e-06"),
    (dict(bilateral_d=10**6), r"bilateral_d must be an integer in \[1, 65\]"),
    (dict(refine="no"), "refine must be True or False"),
    (dict(connected=1), "connected must be True or False"),
    (dict(clamp_similarity=None), "clamp_similarity must be True or False"),
])
def test_prompt_config_refuses_values_that_would_fail_deep_inside(fields, words):
    with pytest.raises(ConfigError, match=words):
        PromptConfig(**fields)


@pytest.mark.parametrize("prompt", ["a \ud800 b", "caf\udce9"])  # a lone surrogate; argv bytes that were not UTF-8
def test_prompts_that_are_not_valid_text_are_typed_errors(prompt):
    from genmask_sdk.runtime.text_checks import check_targets

    with pytest.raises(InvalidInputError, match="lone surrogate"):
        check_targets([prompt])


def test_a_closed_segmenter_says_so_even_with_reason():
    segmenter = Segmenter.from_engines(FIXTURES / "genmask_tiny", backend="onnxruntime", device="cpu")
    segmenter.close()
    for reason in (False, True):
        with pytest.raises(InvalidStateError, match="this Segmenter was closed"):
            segmenter.predict("x.png", "the red circle", reason=reason)
