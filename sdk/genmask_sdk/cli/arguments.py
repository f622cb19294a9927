"""Small argument helpers shared by the subcommands (parsing only)."""

from __future__ import annotations

from typing import Sequence


def parse_precisions(text: str | None, default: Sequence[str]) -> list[str]:
    """``--precisions`` as a list (``default`` when not given)."""
    if text is None:
        return list(default)
    return [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
