"""Checks of prompt text, shared by the embedders at inference and by data preparation (a sentence
stored for training must be one inference accepts). Torch-free, no family."""

from __future__ import annotations

import unicodedata
from typing import Sequence

from genmask_sdk.errors import InputTypeError, InvalidInputError

#: Longest prompt accepted, in characters (the token limit of the engines applies too). Long texts
#: tokenize to few unknown tokens with some tokenizers, so the token limit alone does not bound them.
MAX_PROMPT_CHARS = 1000


def check_targets(targets: Sequence[str]) -> list[str]:
    """Return ``targets`` as a list of str, or raise a clear error: not a list, empty, blank or invisible
    (only spaces / zero-width characters), control characters (NUL, ...), over ``MAX_PROMPT_CHARS``."""
    if isinstance(targets, str) or not isinstance(targets, Sequence):
        raise InputTypeError(
            f"targets must be a list of strings, got {type(targets).__name__}; wrap a single prompt as [prompt]."
        )
    if len(targets) == 0:
        raise InvalidInputError("no prompts given; pass at least one phrase such as 'the red circle'.")
    for i, target in enumerate(targets):
        if not isinstance(target, str):
            raise InputTypeError(f"prompt {i} is a {type(target).__name__}, not a str; pass text phrases.")
        if len(target) > MAX_PROMPT_CHARS:
            raise InvalidInputError(
                f"prompt {i} is {len(target)} characters long; prompts are short phrases (at most {MAX_PROMPT_CHARS} "
                "characters), e.g. 'the red circle'."
            )
        surrogates = sorted({f"U+{ord(c):04X}" for c in target if unicodedata.category(c) == "Cs"})
        if surrogates:
            raise InvalidInputError(
                f"prompt {i} is not valid text: it holds lone surrogate code points ({', '.join(surrogates[:4])}), "
                "which is what bytes that are not UTF-8 become; pass UTF-8 text."
            )
        controls = sorted({f"U+{ord(c):04X}" for c in target if unicodedata.category(c) == "Cc" and c not in "\t\n\r"})
        if controls:
            raise InvalidInputError(
                f"prompt {i} contains control characters ({', '.join(controls)}); pass plain text."
            )
        if not target.strip():
            raise InvalidInputError(f"prompt {i} is empty; name what to segment, e.g. 'the red circle'.")
        if not any(unicodedata.category(c)[0] in "LNPS" for c in target):
            raise InvalidInputError(
                f"prompt {i} ({target!r}) has no visible characters; name what to segment, e.g. 'the red circle'."
            )
    return list(targets)
