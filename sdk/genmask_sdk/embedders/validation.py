"""Input checks shared by the embedders."""

from __future__ import annotations

from typing import Sequence

from ..errors import InputTypeError, InvalidInputError


def check_targets(targets: Sequence[str]) -> list[str]:
    """Return ``targets`` as a list of str, or raise a clear error (not a list, empty, blank)."""
    if isinstance(targets, str) or not isinstance(targets, Sequence):
        raise InputTypeError(
            f"targets must be a list of strings, got {type(targets).__name__}; wrap a single prompt as [prompt]."
        )
    if len(targets) == 0:
        raise InvalidInputError("no prompts given; pass at least one phrase such as 'the red circle'.")
    for i, target in enumerate(targets):
        if not isinstance(target, str):
            raise InputTypeError(f"prompt {i} is a {type(target).__name__}, not a str; pass text phrases.")
        if not target.strip():
            raise InvalidInputError(
                f"prompt {i} is empty; name what to segment, e.g. 'the red circle'."
            )
    return list(targets)
