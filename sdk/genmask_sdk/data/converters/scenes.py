"""The procedural scenes (``genmask_sdk.data``) as prepared samples, for tests and smoke runs.

Nothing is read from disk: segmentation samples are the referring expressions of
``generate_scene(seed, i, size)``, i = 0, 1, ...; generation samples are
``generate_captioned_image(seed, i, size)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain, count as naturals, islice

from genmask_sdk.errors import ConfigError
from genmask_sdk.data.captions import generate_captioned_image
from genmask_sdk.data.prepared import PreparedSample
from genmask_sdk.data.scenes import check_scene_arguments, generate_scene


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}.")


def _expression_samples(seed: int, size: int) -> Iterator[PreparedSample]:
    """Every referring expression of scenes 0, 1, 2, ... (endless)."""
    for index in naturals():
        scene = generate_scene(seed, index, size)
        for k, expression in enumerate(scene.expressions):
            yield PreparedSample(id=f"scenes/{seed}/{index}/{k}", image=scene.image, instruction=expression.text,
                                 task="seg", source="scenes", mask=expression.mask)


def _caption_samples(seed: int, size: int, captions: int) -> Iterator[PreparedSample]:
    for index in range(captions):
        sample = generate_captioned_image(seed, index, size)
        yield PreparedSample(id=f"scenes/{seed}/caption{index}", image=sample.image, instruction=sample.caption,
                             task="gen", source="scenes")


def scene_samples(count: int, *, seed: int = 0, size: int = 128, captions: int = 0) -> Iterator[PreparedSample]:
    """Exactly ``count`` "seg" samples, then ``captions`` "gen" samples, source ``"scenes"``.

    Yields:
        ``PreparedSample(id="scenes/{seed}/{scene}/{k}", image, expression text, "seg", "scenes",
        mask)``: every expression of scenes 0, 1, ... in order until ``count`` are out (uint8
        ``(size, size, 3)`` image, bool ``(size, size)`` mask); then
        ``PreparedSample(id="scenes/{seed}/caption{i}", image, caption, "gen", "scenes")`` for
        ``i < captions``. Deterministic in the arguments; bad arguments raise here, not on
        first iteration.
    """
    _check_count("count", count)
    _check_count("captions", captions)
    check_scene_arguments(seed, 0, size)
    return chain(islice(_expression_samples(seed, size), count), _caption_samples(seed, size, captions))
