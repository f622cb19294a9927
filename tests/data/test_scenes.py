"""Tests of the procedural referring-segmentation data (genmask_sdk.data).

The unambiguity test re-reads every expression with a parser written here, independently of the
generator, and re-evaluates it against the scene's object list.
"""

from __future__ import annotations

import collections
import math
import re
import time

import numpy as np
import pytest

from genmask_sdk.data import (
    ABSENT_KIND,
    BACKGROUND_KINDS,
    COLOURS,
    EXPRESSION_KINDS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZE_CLASSES,
    SUPERLATIVES,
    CaptionedImage,
    ReferringDataset,
    Scene,
    generate_captioned_image,
    generate_scene,
    shape_area,
    shape_outline,
)
from genmask_sdk.errors import InputTypeError, InvalidInputError

SEED = 2024
N_SCENES = 300

# The contract the generator promises (see genmask_sdk.data.expressions), restated here.
POSITION_MARGIN = 0.15
RELATION_MARGIN = 0.12
SUPERLATIVE_RATIO = 1.5
MIN_VISIBLE_FRACTION = 0.6
MIN_VISIBLE_AREA_128 = 60


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [generate_scene(SEED, i) for i in range(N_SCENES)]


def all_expressions(scenes):
    """Every expression with a target in the scene (absent-target ones are tested apart)."""
    return [(scene, e) for scene in scenes for e in scene.expressions if e.kind != ABSENT_KIND]


def absent_expressions(scenes):
    return [(scene, e) for scene in scenes for e in scene.expressions if e.kind == ABSENT_KIND]


def eroded(mask: np.ndarray) -> np.ndarray:
    """``mask`` shrunk by one pixel (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def dilated(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` grown by ``steps`` pixels (3 x 3 square neighbourhood)."""
    grown = mask.copy()
    for _ in range(steps):
        vertical = grown.copy()
        vertical[1:] |= grown[:-1]
        vertical[:-1] |= grown[1:]
        grown = vertical.copy()
        grown[:, 1:] |= vertical[:, :-1]
        grown[:, :-1] |= vertical[:, 1:]
    return grown


# ------------------------------------------------------------------------------------------------
# Independent parser and checker for the expression grammar
# ------------------------------------------------------------------------------------------------

SIZE_WORDS = ("small", "large")
ON_PHRASES = {"on the left": "left", "on the right": "right", "at the top": "top",
              "at the bottom": "bottom"}
MOST_WORDS = {"leftmost": "left", "rightmost": "right", "topmost": "top", "bottommost": "bottom"}
RELATION_WORDS = {"above": "top", "below": "bottom", "left of": "left", "right of": "right"}
UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}


def parse_description(phrase: str) -> dict[str, str]:
    """``"[small|large] [colour] (shape|SHAPE)"`` -> required attribute values."""
    words = phrase.split()
    assert words, "empty description"
    head = words.pop()
    assert head in SHAPES or head == "shape", f"bad head noun in {phrase!r}"
    constraints = {} if head == "shape" else {"shape": head}
    if words and words[0] in SIZE_WORDS:
        constraints["size_class"] = words.pop(0)
    if words and words[0] in COLOURS:
        constraints["colour"] = words.pop(0)
    assert not words, f"unparsed words {words} in {phrase!r}"
    return constraints


def matching(scene: Scene, constraints: dict[str, str]) -> list[int]:
    return [i for i, o in enumerate(scene.objects)
            if all(getattr(o, k) == v for k, v in constraints.items())]


def offset(scene: Scene, i: int, j: int, direction: str) -> tuple[float, float]:
    """(along, across) displacement of object i from object j for ``direction``."""
    (xi, yi), (xj, yj) = scene.objects[i].center_xy, scene.objects[j].center_xy
    ux, uy = UNIT[direction]
    along = (xi - xj) * ux + (yi - yj) * uy
    across = abs((xi - xj) * uy - (yi - yj) * ux)
    return along, across


def position_referents(scene, constraints, direction, need_two):
    size = scene.image.shape[0]
    candidates = matching(scene, constraints)
    if need_two and len(candidates) < 2:
        return [], []
    centre = (size - 1) / 2
    ux, uy = UNIT[direction]
    clear = []
    for c in candidates:
        x, y = scene.objects[c].center_xy
        in_half = (x - centre) * ux + (y - centre) * uy > 0
        beats_all = all(offset(scene, c, o, direction)[0] >= POSITION_MARGIN * size
                        for o in candidates if o != c)
        if in_half and beats_all:
            clear.append(c)
    return clear, []


def relation_referents(scene, target_constraints, relation, anchor_constraints):
    size = scene.image.shape[0]
    anchors = matching(scene, anchor_constraints)
    if len(anchors) != 1:
        return [], anchors  # an ambiguous or missing anchor is never acceptable
    anchor = anchors[0]
    direction = RELATION_WORDS[relation]
    candidates = [c for c in matching(scene, target_constraints) if c != anchor]
    clear, unclear = [], []
    for c in candidates:
        along, across = offset(scene, c, anchor, direction)
        if along >= RELATION_MARGIN * size and along >= across:
            clear.append(c)
        elif along > 0:
            unclear.append(c)
    return clear, unclear


def superlative_referents(scene, constraints, word):
    candidates = matching(scene, constraints)
    if len(candidates) < 2:
        return [], []
    area = {c: scene.objects[c].area_px for c in candidates}
    clear = []
    for c in candidates:
        others = [area[o] for o in candidates if o != c]
        if word == "largest" and area[c] >= SUPERLATIVE_RATIO * max(others):
            clear.append(c)
        if word == "smallest" and SUPERLATIVE_RATIO * area[c] <= min(others):
            clear.append(c)
    return clear, []


def evaluate(scene: Scene, text: str) -> tuple[str, list[int], list[int]]:
    """Parse ``text`` and return (kind, clearly matching objects, borderline objects)."""
    assert text.startswith("the "), text
    body = text[len("the "):]
    first, _, rest = body.partition(" ")
    if first in SUPERLATIVES:
        constraints = parse_description(rest)
        assert "size_class" not in constraints, text
        return ("superlative", *superlative_referents(scene, constraints, first))
    if first in MOST_WORDS:
        return ("position", *position_referents(scene, parse_description(rest), MOST_WORDS[first],
                                                need_two=True))
    for phrase, direction in ON_PHRASES.items():
        if body.endswith(" " + phrase):
            constraints = parse_description(body[: -len(phrase) - 1])
            return ("position", *position_referents(scene, constraints, direction, need_two=False))
    match = re.fullmatch(r"(.+?) (above|below|left of|right of) the (.+)", body)
    if match:
        target, relation, anchor = match.groups()
        return ("relation", *relation_referents(scene, parse_description(target), relation,
                                                parse_description(anchor)))
    return "attribute", matching(scene, parse_description(body)), []


def target_and_anchor(text: str) -> tuple[dict[str, str], dict[str, str] | None]:
    """The constraints of the target DESC of ``text`` in any phrasing, and of its relation anchor."""
    body = text[len("the "):]
    first, _, rest = body.partition(" ")
    if first in SUPERLATIVES or first in MOST_WORDS:
        return parse_description(rest), None
    for phrase in ON_PHRASES:
        if body.endswith(" " + phrase):
            return parse_description(body[: -len(phrase) - 1]), None
    match = re.fullmatch(r"(.+?) (above|below|left of|right of) the (.+)", body)
    if match:
        return parse_description(match.group(1)), parse_description(match.group(3))
    return parse_description(body), None


def visible_fraction(obj) -> float:
    return obj.area_px / shape_area(obj.shape, obj.radius_px)


# ------------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------------


def assert_same_scene(a: Scene, b: Scene):
    assert np.array_equal(a.image, b.image)
    assert [e.text for e in a.expressions] == [e.text for e in b.expressions]
    assert [(e.kind, e.target) for e in a.expressions] == [
        (e.kind, e.target) for e in b.expressions]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.expressions, b.expressions))
    assert [(o.colour, o.shape, o.size_class, o.center_xy, o.radius_px, o.area_px)
            for o in a.objects] == [(o.colour, o.shape, o.size_class, o.center_xy, o.radius_px,
                                     o.area_px) for o in b.objects]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a.objects, b.objects))


def test_same_arguments_give_identical_scene_regardless_of_call_order():
    first = generate_scene(7, 3)
    for i in (5, 0, 3, 9):  # unrelated calls in between must not matter
        generate_scene(7, i)
        generate_captioned_image(7, i)
    assert_same_scene(first, generate_scene(7, 3))
    assert (first.seed, first.index) == (7, 3)


def test_different_index_or_seed_gives_different_scene():
    base = generate_scene(7, 3)
    for other in (generate_scene(7, 4), generate_scene(8, 3)):
        assert not np.array_equal(base.image, other.image)


def test_records_are_immutable(scenes):
    scene = scenes[0]
    with pytest.raises(AttributeError):
        scene.seed = 1  # frozen dataclass
    with pytest.raises(ValueError):
        scene.image[0, 0, 0] = 0  # read-only array
    with pytest.raises(ValueError):
        scene.objects[0].mask[0, 0] = True


# ------------------------------------------------------------------------------------------------
# Images and masks
# ------------------------------------------------------------------------------------------------


def test_image_and_mask_formats(scenes):
    for scene in scenes[:50]:
        assert scene.image.dtype == np.uint8 and scene.image.shape == (128, 128, 3)
        assert 1 <= len(scene.objects) <= 6
        for obj in scene.objects:
            assert obj.mask.dtype == np.bool_ and obj.mask.shape == (128, 128)
            assert obj.area_px == int(obj.mask.sum())


def test_object_masks_are_disjoint(scenes):
    for scene in scenes:
        stacked = np.stack([o.mask for o in scene.objects]).astype(np.int32)
        assert stacked.sum(axis=0).max() <= 1


def test_expression_mask_is_target_visible_mask(scenes):
    for scene, e in all_expressions(scenes):
        assert np.array_equal(e.mask, scene.objects[e.target].mask)
        assert e.mask.any()


def test_mean_colour_under_target_mask_is_the_named_colour(scenes):
    palette = np.array(list(COLOURS.values()), dtype=np.float64)
    names = list(COLOURS)
    for scene, e in all_expressions(scenes):
        obj = scene.objects[e.target]
        inner = eroded(obj.mask)
        pixels = scene.image[inner if inner.sum() >= 10 else obj.mask].astype(np.float64)
        mean = pixels.mean(axis=0)
        assert np.abs(mean - COLOURS[obj.colour]).max() <= 20, (e.text, mean)
        assert names[np.linalg.norm(palette - mean, axis=1).argmin()] == obj.colour


def test_unoccluded_mask_matches_analytic_shape(scenes):
    """The last-drawn object is never occluded: its mask area and centroid must match geometry."""
    for scene in scenes:
        top = scene.objects[-1]
        analytic = shape_area(top.shape, top.radius_px)
        assert abs(top.area_px - analytic) <= 0.07 * analytic + 3, (top.shape, top.area_px)
        rows, cols = np.nonzero(top.mask)
        assert abs(cols.mean() - top.center_xy[0]) < 0.6
        assert abs(rows.mean() - top.center_xy[1]) < 0.6


def test_visible_areas_are_bounded_by_full_areas(scenes):
    for scene in scenes:
        for obj in scene.objects:
            assert 0.35 <= visible_fraction(obj) <= 1.08 + 3 / obj.area_px


def test_occlusion_actually_happens(scenes):
    occluded = [o for s in scenes for o in s.objects[:-1] if visible_fraction(o) < 0.9]
    assert len(occluded) >= 0.05 * sum(len(s.objects) for s in scenes)


def test_edges_are_anti_aliased():
    from genmask_sdk.data.rendering import polygon_coverage

    box, coverage = polygon_coverage(shape_outline("circle", (30.3, 40.7), 10.0), 64)
    assert coverage.dtype == np.float32
    assert ((coverage > 0.05) & (coverage < 0.95)).sum() >= 30
    assert abs(coverage.sum() - math.pi * 100) < 0.03 * math.pi * 100


@pytest.mark.parametrize("shape", SHAPES)
def test_coverage_sums_to_the_analytic_area(shape):
    """Anti-aliased coverage is unbiased: summed over the image it equals the shape's area."""
    from genmask_sdk.data.rendering import polygon_coverage

    rng = np.random.default_rng(0)
    for _ in range(20):
        center, radius, turn = rng.uniform(30, 34, 2), rng.uniform(8, 20), rng.uniform(-0.3, 0.3)
        _, coverage = polygon_coverage(shape_outline(shape, center, radius, turn), 64)
        assert abs(coverage.sum() / shape_area(shape, radius) - 1) < 0.025


def test_backgrounds_are_neutral_and_shapes_saturated(scenes):
    for scene in scenes[:100]:
        union = np.any([o.mask for o in scene.objects], axis=0)
        spread = scene.image.max(axis=2).astype(int) - scene.image.min(axis=2)
        background = spread[~dilated(union, 2)]
        assert background.max() <= 45
        for obj in scene.objects:
            inner = eroded(obj.mask)
            if inner.sum() >= 10:
                assert np.median(spread[inner]) >= 90


def test_size_classes_follow_radius_bands(scenes):
    for scene in scenes:
        for obj in scene.objects:
            low, high = SIZE_CLASSES[obj.size_class]
            assert low - 1e-9 <= obj.radius_px / 128 <= high + 1e-9


# ------------------------------------------------------------------------------------------------
# Expressions
# ------------------------------------------------------------------------------------------------


def test_every_expression_refers_to_exactly_one_object(scenes):
    for scene, e in all_expressions(scenes):
        kind, clear, unclear = evaluate(scene, e.text)
        assert kind == e.kind, e.text
        assert clear == [e.target] and not unclear, (e.text, clear, unclear, scene.index)


def test_checker_rejects_ambiguous_text(scenes):
    """Sanity check of the checker itself: bare "the shape" is ambiguous in multi-object scenes."""
    multi = [s for s in scenes if len(s.objects) > 1]
    assert all(len(evaluate(s, "the shape")[1]) > 1 for s in multi)


def test_targets_are_visible_enough(scenes):
    for scene, e in all_expressions(scenes):
        target = scene.objects[e.target]
        assert target.area_px >= MIN_VISIBLE_AREA_128
        assert visible_fraction(target) >= MIN_VISIBLE_FRACTION


def test_expression_counts_and_uniqueness(scenes):
    counts = [sum(e.kind != ABSENT_KIND for e in s.expressions) for s in scenes]
    assert max(counts) <= 4 and np.mean([c >= 1 for c in counts]) >= 0.97
    assert all(sum(e.kind == ABSENT_KIND for e in s.expressions) <= 1 for s in scenes)
    assert np.mean(counts) >= 2.0
    for scene in scenes:
        texts = [e.text for e in scene.expressions]
        assert len(set(texts)) == len(texts)


def test_every_kind_is_frequent(scenes):
    kinds = collections.Counter(e.kind for _, e in all_expressions(scenes))
    total = sum(kinds.values())
    assert set(kinds) == set(EXPRESSION_KINDS)
    for kind in EXPRESSION_KINDS:
        assert kinds[kind] / total >= 0.12, kinds


def test_absent_targets_are_about_ten_percent_and_match_nothing(scenes):
    absent = absent_expressions(scenes)
    total = sum(len(s.expressions) for s in scenes)
    assert 0.06 <= len(absent) / total <= 0.15, (len(absent), total)
    phrasings = collections.Counter()
    for scene, e in absent:
        assert e.target == -1 and e.mask.dtype == np.bool_ and not e.mask.any()
        assert e.mask.shape == scene.image.shape[:2]
        target, anchor = target_and_anchor(e.text)
        assert matching(scene, target) == [], (e.text, scene.index)  # nothing in the scene is the target
        if anchor is not None:  # a relation's anchor does exist, once
            assert len(matching(scene, anchor)) == 1, (e.text, scene.index)
        phrasings[evaluate(scene, e.text)[0]] += 1
    assert set(phrasings) == set(EXPRESSION_KINDS), phrasings  # absent ones come in every phrasing


def test_absent_expressions_leave_the_present_ones_unchanged(monkeypatch):
    """The absent expression is drawn after the present ones: those are what they were without it."""
    from genmask_sdk.data import expressions as grammar
    from genmask_sdk.data.scenes import render_layers, scene_rng

    scene = next(s for s in (generate_scene(0, i) for i in range(200)) if s.expressions[-1].kind == ABSENT_KIND)
    rng = scene_rng(0, scene.index)
    render_layers(rng, 128)  # the same draws generate_scene makes before the expressions
    monkeypatch.setattr(grammar, "ABSENT_PROBABILITY", 0.0)
    present = grammar.referring_expressions(rng, scene.objects, 128)
    assert [e.text for e in present] == [e.text for e in scene.expressions[:-1]]


def test_vocabulary_is_covered(scenes):
    words = collections.Counter(w for _, e in all_expressions(scenes) for w in e.text.split())
    text = " ".join(e.text for _, e in all_expressions(scenes))
    for word in (*COLOURS, *SHAPES, *SIZE_CLASSES, *POSITIONS, *SUPERLATIVES, *MOST_WORDS):
        assert words[word] >= 3, word
    for relation in RELATIONS:
        assert text.count(f" {relation} the ") >= 3, relation
    assert {s.background for s in scenes} == set(BACKGROUND_KINDS)
    assert {len(s.objects) for s in scenes} == set(range(1, 7))


# ------------------------------------------------------------------------------------------------
# Other sizes, dataset, captions, arguments, speed
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 96, 200])
def test_other_sizes(size):
    for index in range(15):
        scene = generate_scene(3, index, size=size)
        assert scene.image.shape == (size, size, 3) and scene.image.dtype == np.uint8
        for obj in scene.objects:
            assert obj.mask.shape == (size, size)
            low, high = SIZE_CLASSES[obj.size_class]
            assert low - 1e-9 <= obj.radius_px / size <= high + 1e-9
        for e in scene.expressions:
            if e.kind == ABSENT_KIND:
                assert matching(scene, target_and_anchor(e.text)[0]) == [] and not e.mask.any(), e.text
                continue
            kind, clear, unclear = evaluate(scene, e.text)
            assert kind == e.kind and clear == [e.target] and not unclear, e.text


def test_dataset_indexing_and_samples():
    dataset = ReferringDataset(seed=5, n_scenes=6, size=64)
    assert len(dataset) == 6
    assert_same_scene(dataset[2], generate_scene(5, 2, size=64))
    assert_same_scene(dataset[-1], dataset[5])
    with pytest.raises(IndexError):
        dataset[6]
    samples = list(dataset.iter_samples())
    assert len(samples) == sum(len(s.expressions) for s in dataset)
    for image, text, mask, kind in samples:
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64) and mask.dtype == np.bool_
        assert isinstance(text, str) and kind in (*EXPRESSION_KINDS, ABSENT_KIND)


def test_captions_mention_every_object():
    from genmask_sdk.data.captions import CAPTION_STREAM
    from genmask_sdk.data.scenes import render_layers, scene_rng

    for index in range(40):
        sample = generate_captioned_image(11, index)
        assert isinstance(sample, CaptionedImage) and sample.image.shape == (128, 128, 3)
        layers = render_layers(scene_rng(11, index, CAPTION_STREAM), 128)
        assert np.array_equal(layers.image, sample.image)
        named = collections.Counter(
            re.findall(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b", sample.caption))
        expected = collections.Counter((s.colour, s.shape) for s in layers.shapes)
        assert named == expected, sample.caption
        assert sample.caption.endswith("background")
    assert generate_captioned_image(11, 0).caption == generate_captioned_image(11, 0).caption


@pytest.mark.parametrize("args, error", [
    ((-1, 0), InvalidInputError), ((0, -2), InvalidInputError), ((0, 0, 16), InvalidInputError),
    ((0.5, 0), InputTypeError)])
def test_invalid_arguments_are_rejected(args, error):
    with pytest.raises(error):
        generate_scene(*args)


def test_generation_is_fast():
    """Loose bound (the target is >= 200 scenes/s on one core); catches order-of-magnitude
    regressions without being flaky on a shared machine."""
    start = time.process_time()
    for index in range(100):
        generate_scene(99, index)
    assert time.process_time() - start < 2.0
