"""Procedural instance scenes (genmask_sdk.data.instances): determinism and mask correctness."""

from __future__ import annotations

import numpy as np
import pytest

from genmask_sdk.data import COLOURS, InstanceDataset, generate_instance_scene, shape_area
from genmask_sdk.data.instances import (
    HELD_OUT_SEED,
    INSTANCE_SIZE_CLASSES,
    MAX_OBJECTS,
    TRAIN_SEEDS,
    held_out_instance_scenes,
    size_class_of,
)
from genmask_sdk.data.vocabulary import BACKGROUND_KINDS
from genmask_sdk.errors import InvalidInputError

N_SCENES = 150


@pytest.fixture(scope="module")
def scenes():
    return list(InstanceDataset(0, N_SCENES))


def test_same_arguments_same_scene():
    a, b = generate_instance_scene(3, 17), generate_instance_scene(3, 17)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instance_ids, b.instance_ids)
    assert [o.center_xy for o in a.objects] == [o.center_xy for o in b.objects]
    other = generate_instance_scene(3, 18)
    assert not np.array_equal(a.image, other.image)
    assert not a.image.flags.writeable and not a.instance_ids.flags.writeable


def test_not_a_referring_scene():
    from genmask_sdk.data import generate_scene

    assert not np.array_equal(generate_instance_scene(0, 0).image, generate_scene(0, 0).image)


def test_ids_and_masks_agree(scenes):
    for scene in scenes:
        assert scene.image.shape == (128, 128, 3) and scene.image.dtype == np.uint8
        assert scene.instance_ids.dtype == np.uint8 and scene.instance_ids.shape == (128, 128)
        assert 1 <= len(scene.objects) <= MAX_OBJECTS
        assert set(np.unique(scene.instance_ids)) <= set(range(len(scene.objects) + 1))
        for number, obj in enumerate(scene.objects, start=1):
            assert np.array_equal(scene.instance_ids == number, obj.mask)
            assert obj.area_px == int(obj.mask.sum()) > 0
            assert obj.size_class == size_class_of(obj.area_px, 128 * 128)


def test_masks_show_their_shape_colour(scenes):
    """Inside each mask (away from its edge) the image shows the shape's palette colour (±jitter ±noise)."""
    from scipy import ndimage

    checked = 0
    for scene in scenes[:60]:
        for obj in scene.objects:
            core = ndimage.binary_erosion(obj.mask, iterations=2)
            if core.sum() < 5:
                continue
            mean = scene.image[core].astype(np.float64).mean(axis=0)
            assert np.abs(mean - np.asarray(COLOURS[obj.colour])).max() < 20, (scene.index, obj.colour, mean)
            checked += 1
    assert checked > 100


def test_variety(scenes):
    counts = {len(s.objects) for s in scenes}
    assert {1, MAX_OBJECTS} <= counts
    assert {s.background for s in scenes} == set(BACKGROUND_KINDS)
    sizes = [o.size_class for s in scenes for o in s.objects]
    for size in INSTANCE_SIZE_CLASSES:
        assert sizes.count(size) > 0.15 * len(sizes), (size, sizes.count(size), len(sizes))
    # occluded shapes are kept as their visible part
    occluded = [o for s in scenes for o in s.objects if o.area_px < 0.85 * shape_area(o.shape, o.radius_px)]
    assert len(occluded) > 10 and all(o.area_px > 0 for o in occluded)


def test_held_out_split():
    assert HELD_OUT_SEED not in TRAIN_SEEDS
    held = held_out_instance_scenes(3)
    assert len(held) == 3 and held[0].seed == HELD_OUT_SEED
    with pytest.raises(InvalidInputError):
        held_out_instance_scenes(3, seed=0)
    with pytest.raises(InvalidInputError):
        generate_instance_scene(0, 0, max_objects=0)
    with pytest.raises(IndexError):
        InstanceDataset(0, 2)[2]
