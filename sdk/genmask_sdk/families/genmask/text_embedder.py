"""The MiniLM text embedder as an engine: its ONNX graph under ONNX Runtime and its
``tokenizer.json`` under the ``tokenizers`` library. numpy only; no torch, no transformers.

Graph (written by ``genmask_sdk.families.genmask.export.embedder``)::

    input_ids (B, L) int64, attention_mask (B, L) int64, token_type_ids (B, L) int64
        -> states (B, L, 384) float32   (final-layer token states, = BERT's last_hidden_state)

Prompts are embedded one at a time (like the PyTorch ``MiniLMEmbedder``, so both give the same
states for the same prompt) and cached per prompt; ``[CLS]`` and ``[SEP]`` are part of the
sequence, as the tokenizer's post-processor adds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from genmask_sdk.errors import ArtifactMismatchError, InvalidInputError, InvalidStateError
from genmask_sdk.runtime.base import Runner
from genmask_sdk.runtime.prompt_cache import DEFAULT_CACHE_BYTES, PromptCache

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "states"


@dataclass(frozen=True)
class HostEmbedding:
    """Conditioning for a batch of prompts, on the host: ``states`` (B, L, D) float32 with zero
    rows past each prompt's length, ``mask`` (B, L) bool (True = real token)."""

    states: np.ndarray
    mask: np.ndarray


class OnnxTextEmbedder:
    """``encode_prompts(None, targets) -> HostEmbedding`` from an ONNX MiniLM and its tokenizer.

    Args:
        runner: a loaded ``Runner`` of the embedder graph (ONNX Runtime, CPU or GPU).
        tokenizer_file: the ``tokenizer.json`` the graph was exported with.
        hidden_size: D (384 for MiniLM-L6).
        prompt_template: how a target becomes the text (``"{target}"`` for the demo).
        max_prompt_tokens: longest tokenised prompt accepted ([CLS] and [SEP] included).
        cache_bytes: bound of the per-prompt states cache (least recently used first out; 64 MiB).
    """

    uses_image = False
    can_generate = False

    def __init__(self, runner: Runner, tokenizer_file: str | Path, hidden_size: int, prompt_template: str = "{target}",
                 max_prompt_tokens: int = 64, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        from tokenizers import Tokenizer

        self.runner = runner
        self.tokenizer_file = Path(tokenizer_file)
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ArtifactMismatchError(f"{tokenizer_file} is not a valid tokenizer.json ({exc}); rebuild the engines.") from None
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()  # a prompt longer than the limit is an error, never cut
        self.hidden_size = hidden_size
        self.prompt_template = prompt_template
        self.max_prompt_tokens = max_prompt_tokens
        self._cache = PromptCache(cache_bytes)

    @property
    def runs_on(self) -> str:
        """Where the embedder runs, for ``Segmenter.describe()``."""
        graph = Path(getattr(self.runner, "onnx_path", "?")).name
        return f"onnxruntime ({getattr(self.runner, 'provider', '?')}): {graph} + {self.tokenizer_file.name}"

    def encode_image(self, image=None) -> None:
        """Nothing depends on the image (text only): always None."""
        return None

    def encode_prompts(self, prefix, targets: Sequence[str]) -> HostEmbedding:
        """States of each target (``prefix`` is ignored), right-padded to the longest."""
        rows = [self._embed_one(self.prompt_template.format(target=t.strip())) for t in targets]
        length = max(r.shape[0] for r in rows)
        states = np.zeros((len(rows), length, self.hidden_size), dtype=np.float32)
        mask = np.zeros((len(rows), length), dtype=bool)
        for i, row in enumerate(rows):
            states[i, : row.shape[0]] = row
            mask[i, : row.shape[0]] = True
        return HostEmbedding(states, mask)

    def reason(self, prefix, instruction: str) -> str:
        raise InvalidStateError(
            "reasoning segmentation (reason=True) needs an embedder that can generate text (Qwen2.5-VL); "
            "this model's embedder is MiniLM, a text encoder. Pass the target phrase itself (reason=False)."
        )

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt).ids)

    def close(self) -> None:
        self.runner.close()
        self._cache.clear()

    def _embed_one(self, prompt: str) -> np.ndarray:
        cached = self._cache.get(prompt)
        if cached is not None:
            return cached
        encoding = self.tokenizer.encode(prompt)
        n = len(encoding.ids)
        if n > self.max_prompt_tokens:
            raise InvalidInputError(
                f"prompt {prompt[:60]!r} is {n} tokens long; this model accepts at most "
                f"{self.max_prompt_tokens}. Shorten the phrase (name the object and one or two attributes)."
            )
        feeds = {"input_ids": np.asarray([encoding.ids], dtype=np.int64),
                 "attention_mask": np.asarray([encoding.attention_mask], dtype=np.int64),
                 "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64)}
        states = np.asarray(self.runner.infer(feeds)[OUTPUT], dtype=np.float32)[0]
        self._cache.put(prompt, states)
        return states
