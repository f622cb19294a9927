"""Input checks shared by the runners, with Polygraphy-style messages.

Shapes use ``None`` (or a negative number, TensorRT style) for a dynamic axis.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from genmask_sdk.errors import InvalidInputError


def check_feed_names(runner: str, feeds: Mapping[str, object], expected: Collection[str]) -> None:
    """Raise InvalidInputError unless ``feeds`` has exactly the ``expected`` input names."""
    missing = [n for n in expected if n not in feeds]
    extra = [n for n in feeds if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"feed_dict is missing inputs: {missing}")
        if extra:
            parts.append(f"feed_dict contains extra inputs: {extra}")
        raise InvalidInputError(
            f"{runner}: " + "; ".join(parts) + f".\nNote: Expected inputs: {list(expected)}. "
            "Pass one array per graph input, keyed by input name."
        )


def dtype_error(name: str, received: object, expected: object) -> InvalidInputError:
    return InvalidInputError(
        f"Input tensor: {name} | Received unexpected dtype: {received}.\n"
        f"Note: Expected type: {expected}. Cast the input before calling infer()."
    )


def shape_is_compatible(shape: Sequence[int], expected: Sequence[int | None]) -> bool:
    """True when ranks match and every static axis of ``expected`` equals ``shape``'s."""
    if len(shape) != len(expected):
        return False
    return all(e is None or e < 0 or int(s) == e for s, e in zip(shape, expected))


def shape_error(
    name: str, received: Sequence[int], expected: Sequence[int | None]
) -> InvalidInputError:
    shown = tuple("?" if e is None or e < 0 else e for e in expected)
    return InvalidInputError(
        f"Input tensor: {name} | Received incompatible shape: {tuple(received)}.\n"
        f"Note: Expected a shape compatible with: {shown} ('?' = dynamic axis)."
    )


def profile_error(
    name: str, received: Sequence[int], lo: Sequence[int], hi: Sequence[int]
) -> InvalidInputError:
    return InvalidInputError(
        f"Input tensor: {name} | Received shape {tuple(received)} outside the engine's "
        f"optimization profile.\nNote: Expected every axis between min {tuple(lo)} and max "
        f"{tuple(hi)}. Use a shape in range, or rebuild the engine with a profile that covers it."
    )
