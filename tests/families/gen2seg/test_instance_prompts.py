"""gen2seg host-side prompts (genmask_sdk.families.gen2seg): point prompts and segment-everything on
synthetic instance colour maps (flat colours on black), input validation, the OpenCV-contrib
requirement of the refinement, and the package importing without torch or cv2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

import genmask_sdk
from genmask_sdk.errors import (
    BackendUnavailableError,
    ConfigError,
    GenMaskError,
    InputTypeError,
    InvalidInputError,
)
from genmask_sdk.families.gen2seg import (
    InstanceMask,
    PromptConfig,
    point_prompt_mask,
    query_color,
    segment_everything,
    similarity,
)

H, W = 64, 96


def region_masks() -> dict[str, np.ndarray]:
    """Five flat regions on a 64×96 canvas (two of them touching), as bool masks."""
    yy, xx = np.mgrid[:H, :W]
    masks = {name: np.zeros((H, W), dtype=bool) for name in ("red", "green", "blue_disc", "yellow", "grey")}
    masks["red"][5:25, 5:30] = True
    masks["green"][5:25, 30:55] = True          # touches red along x = 29 | 30
    masks["blue_disc"][(yy - 45) ** 2 + (xx - 72) ** 2 <= 12 ** 2] = True
    masks["yellow"][35:60, 5:25] = True
    masks["grey"][40:52, 36:48] = True
    return masks


COLOURS = {"red": (220, 40, 40), "green": (40, 220, 40), "blue_disc": (40, 40, 230), "yellow": (230, 200, 30),
           "grey": (200, 200, 200)}
INSIDE = {"red": (15, 15), "green": (42, 14), "blue_disc": (72, 45), "yellow": (14, 47), "grey": (41, 45)}


def paint(masks: dict[str, np.ndarray], colours: dict[str, tuple[int, int, int]]) -> np.ndarray:
    image = np.zeros((H, W, 3), dtype=np.uint8)
    for name, mask in masks.items():
        image[mask] = colours[name]
    return image


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    masks = region_masks()
    return paint(masks, COLOURS), masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1)


# ---------------------------------------------------------------------------------------------
# (1) a point inside a flat region selects exactly that region
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("refine", [False, True])
def test_point_inside_each_region_gives_its_exact_mask(scene, refine):
    color_map, masks = scene
    for name, point in INSIDE.items():
        mask, score = point_prompt_mask(color_map, [point], config=PromptConfig(refine=refine))
        assert mask.dtype == bool and mask.shape == (H, W)
        assert score.dtype == np.float32 and score.shape == (H, W)
        assert 0.0 <= score.min() and score.max() <= 1.0
        assert np.array_equal(mask, masks[name]), f"{name}: {np.count_nonzero(mask ^ masks[name])} pixels differ"
        if refine:   # the refined score is the filter's uint8 output / 255; mask = that value > 3
            assert np.array_equal(mask, np.rint(score.astype(np.float64) * 255) > 3)


def test_float_colour_map_and_one_bare_point_are_accepted(scene):
    color_map, masks = scene
    mask, _ = point_prompt_mask(color_map.astype(np.float32), INSIDE["blue_disc"], labels=[1])
    assert np.array_equal(mask, masks["blue_disc"])


def test_query_colour_is_the_region_colour_inside_and_a_blend_on_an_edge(scene):
    color_map, _ = scene
    assert np.allclose(query_color(color_map, INSIDE["red"]), COLOURS["red"], atol=1e-3)
    # x = 29.5 is halfway between the last red column and the first green one: an equal blend
    blend = query_color(color_map, (29.5, 15))
    assert np.allclose(blend, (np.array(COLOURS["red"]) + COLOURS["green"]) / 2, atol=1e-3)
    # a tiny sigma does not underflow to black: the nearest pixel's colour
    assert np.allclose(query_color(color_map, (10.3, 7.7), sigma=1e-5), COLOURS["red"], atol=1e-3)


# ---------------------------------------------------------------------------------------------
# (2) several positive points: the union
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("refine", [False, True])
def test_positive_points_on_two_objects_give_their_union(scene, refine):
    color_map, masks = scene
    mask, score = point_prompt_mask(color_map, [INSIDE["red"], INSIDE["blue_disc"]], labels=[1, 1],
                                    config=PromptConfig(refine=refine))
    assert np.array_equal(mask, masks["red"] | masks["blue_disc"])
    assert score[masks["red"]].min() > 0.9 and score[masks["blue_disc"]].min() > 0.9


# ---------------------------------------------------------------------------------------------
# (3) a negative point on a similar-coloured neighbour removes it
# ---------------------------------------------------------------------------------------------

SIMILAR = {"a": (200, 60, 60), "b": (225, 80, 50)}   # 33.5 RGB units apart


@pytest.fixture(scope="module")
def similar_neighbours() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.zeros((H, W), dtype=bool)
    b = np.zeros((H, W), dtype=bool)
    a[10:50, 10:40] = True
    b[10:50, 40:80] = True
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[a], image[b] = SIMILAR["a"], SIMILAR["b"]
    return image, a, b


@pytest.mark.parametrize("refine", [False, True])
def test_negative_point_removes_a_similar_neighbour_with_the_clamped_similarity(similar_neighbours, refine):
    image, a, b = similar_neighbours
    config = PromptConfig(refine=refine, clamp_similarity=True)
    alone, _ = point_prompt_mask(image, [(20, 30)], config=config)
    assert np.array_equal(alone, a | b)   # clamped: colours within ~65-85 RGB units pass the threshold
    mask, score = point_prompt_mask(image, [(20, 30), (60, 30)], labels=[1, 0], config=config)
    assert np.array_equal(mask, a)        # the filter cannot smear b back in: vetoed pixels stay 0
    assert score[b].max() == 0.0


@pytest.mark.parametrize("refine", [False, True])
def test_negative_point_removes_a_neighbour_selected_by_an_edge_point(similar_neighbours, refine):
    image, a, b = similar_neighbours
    config = PromptConfig(refine=refine)
    on_edge = (39.5, 30)   # the query is the blend of a and b: both are nearest colours
    union, _ = point_prompt_mask(image, [on_edge], config=config)
    assert np.array_equal(union, a | b)
    mask, _ = point_prompt_mask(image, [on_edge, (60, 30)], labels=[1, 0], config=config)
    assert np.array_equal(mask, a)


def test_negative_point_on_the_positive_region_removes_it(scene):
    color_map, masks = scene
    mask, _ = point_prompt_mask(color_map, [INSIDE["red"], (20, 20), INSIDE["green"]], labels=[1, 0, 1],
                                config=PromptConfig(refine=False))
    assert np.array_equal(mask, masks["green"])   # a negative wins ties


# ---------------------------------------------------------------------------------------------
# (4) segment everything
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("refine", [False, True])
def test_segment_everything_finds_every_flat_region_once(scene, refine):
    color_map, masks = scene
    found = segment_everything(color_map, config=PromptConfig(refine=refine))
    assert len(found) == len(masks)
    assert all(isinstance(item, InstanceMask) for item in found)
    for name, truth in masks.items():
        matches = [item for item in found if iou(item.mask, truth) >= 0.95]
        assert len(matches) == 1, f"{name} matched {len(matches)} masks"
    areas = [item.area for item in found]
    assert areas == sorted(areas, reverse=True)
    for item in found:
        x0, y0, x1, y1 = item.bbox
        ys, xs = np.nonzero(item.mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert item.area == np.count_nonzero(item.mask)
        assert item.mask[item.point[1], item.point[0]]
        assert 0.9 <= item.stability <= 1.0 and 0.9 <= item.score <= 1.0


def test_segment_everything_finds_a_bar_narrower_than_the_query_window():
    # sigma = 0.01 of the width is ~1 px here; a 3-px bar has no point whose Gaussian window lies
    # inside it, so its grid points prompt with their own pixel's colour (edge points)
    bar = np.zeros((H, W), dtype=bool)
    bar[10:50, 60:63] = True
    block = np.zeros((H, W), dtype=bool)
    block[10:50, 63:90] = True
    color_map = np.zeros((H, W, 3), dtype=np.uint8)
    color_map[bar], color_map[block] = (230, 60, 200), (40, 200, 90)
    found = segment_everything(color_map, config=PromptConfig(refine=False), min_area=16)
    assert len(found) == 2
    assert iou(found[0].mask, block) == 1.0 and iou(found[1].mask, bar) == 1.0


def test_segment_everything_on_an_all_black_map_finds_nothing():
    assert segment_everything(np.zeros((H, W, 3), dtype=np.uint8)) == []


def test_segment_everything_drops_regions_below_min_area(scene):
    color_map, masks = scene
    found = segment_everything(color_map, config=PromptConfig(refine=False), min_area=200)
    assert len(found) == len(masks) - 1 and all(item.area >= 200 for item in found)   # grey is 144 px


def test_segment_everything_rejects_bad_parameters(scene):
    with pytest.raises(ConfigError, match="grid"):
        segment_everything(scene[0], grid=0)
    with pytest.raises(ConfigError, match="iou_dedup"):
        segment_everything(scene[0], iou_dedup=1.5)
    with pytest.raises(ConfigError, match="max_overlap"):
        segment_everything(scene[0], max_overlap=-0.1)


@pytest.fixture(scope="module")
def twins() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two separate squares of one colour, plus a speck of that colour (3 px) elsewhere."""
    left, right = np.zeros((H, W), dtype=bool), np.zeros((H, W), dtype=bool)
    left[10:30, 10:30], right[30:55, 60:85] = True, True
    color_map = np.zeros((H, W, 3), dtype=np.uint8)
    color_map[left | right] = (200, 120, 40)
    color_map[58, 5:8] = (200, 120, 40)
    return color_map, left, right


@pytest.mark.parametrize("refine", [False, True])
def test_a_point_selects_only_the_connected_part_it_lies_on(twins, refine):
    color_map, left, right = twins
    mask, score = point_prompt_mask(color_map, [(20, 20)], config=PromptConfig(refine=refine))
    assert iou(mask, left) >= 0.98 and not (mask & right).any()
    assert np.array_equal(mask, score * 255 > 3)  # the score is 0 outside the kept parts
    published, _ = point_prompt_mask(color_map, [(20, 20)], config=PromptConfig(refine=refine, connected=False))
    assert published[left].all() and published[right].all() and published[58, 5:8].all()
    both, _ = point_prompt_mask(color_map, [(20, 20), (70, 40)], config=PromptConfig(refine=refine))
    assert iou(both, left | right) >= 0.98


def test_a_point_just_outside_its_mask_takes_the_nearest_part(twins):
    from genmask_sdk.families.gen2seg.prompts import parts_holding

    _, left, right = twins
    near_left = parts_holding(left | right, np.array([[31.0, 20.0]]))  # one pixel right of the left square
    assert np.array_equal(near_left, left)
    assert not parts_holding(np.zeros((H, W), dtype=bool), np.array([[3.0, 3.0]])).any()


def test_segment_everything_gives_same_coloured_objects_one_mask_each(twins):
    color_map, left, right = twins
    found = segment_everything(color_map, config=PromptConfig(refine=False), min_area=16)
    assert len(found) == 2
    assert np.array_equal(found[0].mask, right) and np.array_equal(found[1].mask, left)
    merged = segment_everything(color_map, config=PromptConfig(refine=False, connected=False), min_area=16)
    assert len(merged) == 1 and merged[0].mask[left].all() and merged[0].mask[right].all()


def test_fragments_inside_a_kept_mask_are_suppressed():
    from genmask_sdk.families.gen2seg.everything import _Candidate, _suppress, mask_bbox

    def item(mask, score):  # a candidate cropped to its box, as segment_everything keeps them
        x0, y0, x1, y1 = bbox = mask_bbox(mask)
        return _Candidate(crop=mask[y0:y1, x0:x1], bbox=bbox, shape=mask.shape, score=score, stability=1.0,
                          point=(0, 0), area=int(mask.sum()), order=0)

    whole = np.zeros((H, W), dtype=bool)
    whole[10:40, 10:40] = True
    fragment = np.zeros((H, W), dtype=bool)
    fragment[30:45, 30:45] = True   # 100 of its 225 px (44 %) inside `whole`
    inside = np.zeros((H, W), dtype=bool)
    inside[12:20, 12:20] = True     # wholly inside `whole`
    kept = _suppress([item(whole, 0.9), item(fragment, 0.8), item(inside, 0.7)], iou_dedup=0.7, max_overlap=0.5)
    assert [k.area for k in kept] == [900, 225]
    kept = _suppress([item(whole, 0.9), item(fragment, 0.8)], iou_dedup=0.7, max_overlap=0.4)
    assert [k.area for k in kept] == [900]


# ---------------------------------------------------------------------------------------------
# (5) bad inputs: typed errors that say what was wrong
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("points, labels, error, words", [
    ([(100, 10)], None, InvalidInputError, ["point 0", "x=100", "96x64", "[0, 95]"]),
    ([(10, 10), (5, -1)], None, InvalidInputError, ["point 1", "y=-1", "[0, 63]"]),
    ([], None, InvalidInputError, ["empty"]),
    ([(10, 10), (20, 20)], [1], InvalidInputError, ["1 labels for 2 point"]),
    ([(10, 10), (20, 20)], [0, 0], InvalidInputError, ["positive"]),
    ([(10, 10)], [2], InvalidInputError, ["label 0", "1 (positive) or 0 (negative)"]),
    ([(float("nan"), 10)], None, InvalidInputError, ["point 0", "finite"]),
    ([(10, float("inf"))], None, InvalidInputError, ["point 0", "finite"]),
    ([(10, 10, 3)], None, InvalidInputError, ["(x, y) pairs", "(1, 3)"]),
    ("10,10", None, InputTypeError, ["(x, y) pairs"]),
])
def test_bad_points_and_labels_raise_clear_typed_errors(scene, points, labels, error, words):
    with pytest.raises(error) as raised:
        point_prompt_mask(scene[0], points, labels, config=PromptConfig(refine=False))
    assert isinstance(raised.value, GenMaskError)
    for word in words:
        assert word in str(raised.value), f"{word!r} not in {raised.value}"


@pytest.mark.parametrize("color_map, error, words", [
    (np.zeros((H, W), dtype=np.uint8), InvalidInputError, ["(H, W, 3)", "(64, 96)"]),
    (np.zeros((H, W, 4), dtype=np.uint8), InvalidInputError, ["(H, W, 3)", "(64, 96, 4)"]),
    (np.zeros((H, W, 3), dtype=np.int32), InputTypeError, ["uint8", "int32"]),
    (np.full((H, W, 3), 300.0), InvalidInputError, ["0-255"]),
    (np.full((H, W, 3), np.nan, dtype=np.float32), InvalidInputError, ["NaN"]),
    (np.zeros((H, W, 3)).tolist(), InputTypeError, ["numpy array", "list"]),
])
def test_bad_colour_maps_raise_clear_typed_errors(color_map, error, words):
    with pytest.raises(error) as raised:
        point_prompt_mask(color_map, [(1, 1)], config=PromptConfig(refine=False))
    for word in words:
        assert word in str(raised.value), f"{word!r} not in {raised.value}"


def test_bad_config_values_raise_config_errors():
    for bad in ({"sigma": 0}, {"sigma": float("nan")}, {"threshold": 255}, {"bilateral_d": 0}, {"eps": -1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            PromptConfig(**bad)


# ---------------------------------------------------------------------------------------------
# (6) OpenCV contrib: optional at import, required for refine=True, never skipped silently
# ---------------------------------------------------------------------------------------------

def test_missing_opencv_with_refine_raises_backend_unavailable(scene, monkeypatch):
    color_map, masks = scene
    monkeypatch.setitem(sys.modules, "cv2", None)   # makes `import cv2` raise ImportError
    with pytest.raises(BackendUnavailableError) as raised:
        point_prompt_mask(color_map, [INSIDE["red"]])
    assert isinstance(raised.value, GenMaskError)
    assert "pip install opencv-contrib-python-headless" in str(raised.value)
    assert "refine=False" in str(raised.value)
    with pytest.raises(BackendUnavailableError):
        segment_everything(color_map)
    with pytest.raises(BackendUnavailableError, match="connected=False"):  # connected parts need cv2 too
        point_prompt_mask(color_map, [INSIDE["red"]], config=PromptConfig(refine=False))
    mask, _ = point_prompt_mask(color_map, [INSIDE["red"]], config=PromptConfig(refine=False, connected=False))
    assert np.array_equal(mask, masks["red"])


def test_opencv_without_contrib_with_refine_raises_backend_unavailable(scene, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", types.SimpleNamespace(__version__="4.10.0"))  # no ximgproc
    with pytest.raises(BackendUnavailableError, match="ximgproc") as raised:
        point_prompt_mask(scene[0], [INSIDE["red"]])
    assert "opencv-contrib-python-headless" in str(raised.value)


def test_package_imports_without_torch_and_without_cv2():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        sys.modules["cv2"] = None
        import numpy as np
        import genmask_sdk.families.gen2seg as instance
        color_map = np.zeros((8, 8, 3), dtype=np.uint8)
        color_map[2:6, 2:6] = (200, 30, 30)
        config = instance.PromptConfig(refine=False, connected=False)
        mask, _ = instance.point_prompt_mask(color_map, [(3, 3)], config=config)
        assert mask.sum() == 16, mask.sum()
        print("ok")
    """)
    sdk_root = str(Path(genmask_sdk.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([sdk_root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# ---------------------------------------------------------------------------------------------
# (7) the clamp option: the paper's min(1, 1/d) vs the code's 1/d
# ---------------------------------------------------------------------------------------------

def test_clamp_changes_the_similarity_as_documented():
    color_map = np.zeros((4, 6, 3), dtype=np.uint8)
    color_map[:, :2] = (100, 100, 100)       # the query colour
    color_map[:, 2:4] = (130, 100, 100)      # 30 RGB units away
    color_map[:, 4:] = (100, 100, 300 - 45)  # 155 units away: the farthest
    query = (100, 100, 100)
    eps = 1e-6

    unclamped = similarity(color_map, query, PromptConfig(clamp_similarity=False))
    low, high = 1 / (155 + eps), 1 / eps
    assert unclamped[0, 0] == pytest.approx(1.0)
    assert unclamped[0, 2] == pytest.approx((1 / (30 + eps) - low) / (high - low + eps), abs=1e-9)
    assert unclamped[0, 2] < 1e-7 and unclamped[0, 4] == 0.0   # only the exact colour counts

    clamped = similarity(color_map, query, PromptConfig(clamp_similarity=True))
    low, high = 1 / (155 + eps), 1.0
    assert clamped[0, 0] == pytest.approx((high - low) / (high - low + eps), rel=1e-6)   # 1 - ~1e-6
    assert clamped[0, 2] == pytest.approx((1 / (30 + eps) - low) / (high - low + eps), rel=1e-5)
    assert clamped[0, 4] == 0.0

    # with the default threshold (3 of 255): clamped accepts the colour 30 units away, unclamped does not
    masks = {clamp: point_prompt_mask(color_map, [(0, 1)],
                                      config=PromptConfig(refine=False, clamp_similarity=clamp))[0]
             for clamp in (False, True)}
    assert masks[False][:, :2].all() and not masks[False][:, 2:].any()
    assert masks[True][:, :4].all() and not masks[True][:, 4:].any()


def test_flat_single_colour_map_selects_everything():
    mask, score = point_prompt_mask(np.full((H, W, 3), 120, dtype=np.uint8), [(3, 3)])
    assert mask.all() and np.all(score == 1.0)


# ---------------------------------------------------------------------------------------------
# (6) bounded work and memory (issue 34): limits are typed errors at once; memory does not grow
#     with the number of points or of colours
# ---------------------------------------------------------------------------------------------

def test_too_many_points_and_too_large_grids_are_refused_at_once():
    import time

    from genmask_sdk.errors import ConfigError
    from genmask_sdk.families.gen2seg.everything import MAX_GRID
    from genmask_sdk.families.gen2seg.prompts import MAX_POINTS

    color_map = np.zeros((30, 40, 3), np.uint8)
    start = time.perf_counter()
    for points in ([(1.0, 1.0)] * 10**6, np.ones((10**6, 2)), [(1.0, 1.0)] * (MAX_POINTS + 1)):
        with pytest.raises(InvalidInputError, match=f"at most {MAX_POINTS}"):
            point_prompt_mask(color_map, points)
    for grid in (MAX_GRID + 1, 100000):
        with pytest.raises(ConfigError, match=rf"grid must be an integer in \[1, {MAX_GRID}\]"):
            segment_everything(color_map, grid=grid)
    assert time.perf_counter() - start < 1.0  # decided before any work


def test_an_outside_point_is_reported_with_its_exact_value():
    with pytest.raises(InvalidInputError, match=r"x=39\.000000001"):
        point_prompt_mask(np.zeros((30, 40, 3), np.uint8), [(39 + 1e-9, 0)])


def _blocks(size: int, cells: int) -> np.ndarray:
    """A size×size map of cells×cells flat colour blocks (every block its own colour)."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 255, (cells, cells, 3)).astype(np.uint8)
    return np.repeat(np.repeat(colours, size // cells, axis=0), size // cells, axis=1)


def test_many_points_take_the_memory_of_a_few_maps():
    """50 points on a 1 MP map: the maps are folded into running maxima, computed block by block
    (before: one float64 map per point plus H×W×3 temporaries, 793 MB traced; now ~53 MB)."""
    import tracemalloc

    color_map = _blocks(1000, 8)
    points = [(x * 125 + 60, y * 125 + 60) for y in range(8) for x in range(8)][:50]
    tracemalloc.start()
    try:
        mask, score = point_prompt_mask(color_map, points, config=PromptConfig(refine=False))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mask.shape == (1000, 1000) and mask.sum() == 50 * 125 * 125
    assert peak < 12 * 1000 * 1000 * 8, peak / 2**20  # a dozen float64 maps, whatever the number of points


def test_segment_everything_keeps_one_score_map_and_cropped_candidates():
    """64 objects on a 1 MP map: one full-size score map at a time, candidates cropped to their boxes
    (before: a map per colour and a full mask per candidate, 2256 MB traced with refinement)."""
    import tracemalloc

    color_map = _blocks(1000, 8)
    tracemalloc.start()
    try:
        found = segment_everything(color_map, PromptConfig(refine=False), grid=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(found) == 64 and all(f.area == 125 * 125 for f in found)
    # the 64 returned full-size masks (64 MB) plus a dozen float64 maps of work
    assert peak < 64 * 1000 * 1000 + 12 * 1000 * 1000 * 8, peak / 2**20
