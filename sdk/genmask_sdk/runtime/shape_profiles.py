"""Shape profiles for dynamic inputs, shared by the TensorRT builder and the ORT TensorRT EP.

A profile maps an input name to three shapes ``(min, opt, max)``: the smallest and largest shape
the engine must accept, and the shape it is tuned for. Example::

    {"latents": ((1, 16, 1, 64, 64), (1, 16, 1, 64, 64), (4, 16, 1, 64, 64)),
     "text_states": ((1, 1, 384), (1, 32, 384), (4, 128, 384))}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from genmask_sdk.errors import ConfigError

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]  # (min, opt, max)


def normalize_profiles(
    profiles: Mapping[str, Sequence[Sequence[int]]] | None,
) -> dict[str, ShapeRange]:
    """Return a copy of ``profiles`` as ``{name: (min, opt, max)}`` tuples, or raise ConfigError.

    Checks that each entry has exactly three shapes of the same rank, made of non-negative ints,
    with ``min <= opt <= max`` on every axis.
    """
    if profiles is None:
        return {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(
            "profiles must be a dict of input name -> (min_shape, opt_shape, max_shape), got "
            f"{type(profiles).__name__}; e.g. {{'x': ((1, 3, 64, 64), (2, 3, 64, 64), "
            "(4, 3, 64, 64))}."
        )
    return {str(name): _normalize_range(str(name), shapes) for name, shapes in profiles.items()}


def _normalize_range(name: str, shapes: Sequence[Sequence[int]]) -> ShapeRange:
    if isinstance(shapes, (str, bytes)) or len(shapes) != 3:
        raise ConfigError(
            f"Profile for input '{name}' must be three shapes (min, opt, max), got {shapes!r}; "
            f"e.g. ((1, 3, 64, 64), (2, 3, 64, 64), (4, 3, 64, 64))."
        )
    try:
        lo, opt, hi = (tuple(int(d) for d in s) for s in shapes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"Profile for input '{name}' must contain integer shapes, got {shapes!r} ({exc})."
        ) from None
    if not len(lo) == len(opt) == len(hi):
        raise ConfigError(
            f"Profile for input '{name}': min {lo}, opt {opt} and max {hi} must have the same rank."
        )
    if any(d < 0 for d in lo):
        raise ConfigError(f"Profile for input '{name}': min shape {lo} has a negative dimension.")
    bad_axes = [i for i in range(len(lo)) if not lo[i] <= opt[i] <= hi[i]]
    if bad_axes:
        raise ConfigError(
            f"Profile for input '{name}': need min <= opt <= max on every axis, but axes "
            f"{bad_axes} violate it (min {lo}, opt {opt}, max {hi}). Reorder or fix the shapes."
        )
    return lo, opt, hi


def format_shape(shape: Sequence[int], sep: str = "x") -> str:
    """``(1, 3, 64, 64)`` -> ``"1x3x64x64"`` (trtexec and ORT TensorRT EP syntax)."""
    return sep.join(str(int(d)) for d in shape)


def format_profile_shapes(profiles: Mapping[str, ShapeRange], which: int) -> str:
    """``"a:1x3,b:1x8"`` for ``which`` = 0 (min), 1 (opt) or 2 (max); used by trtexec and ORT."""
    return ",".join(f"{name}:{format_shape(ranges[which])}" for name, ranges in profiles.items())
