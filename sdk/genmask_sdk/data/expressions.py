"""Referring expressions that pick out exactly one object of a scene.

Grammar of the generated text (``DESC`` names a set of objects by attributes)::

    DESC        := [small|large] [COLOUR] (SHAPE | "shape")
    attribute   := "the" DESC
    position    := "the" DESC ("on the left" | "on the right" | "at the top" | "at the bottom")
                 | "the" ("leftmost" | "rightmost" | "topmost" | "bottommost") DESC
    relation    := "the" DESC ("above" | "below" | "left of" | "right of") "the" DESC
    superlative := "the" ("largest" | "smallest") [COLOUR] (SHAPE | "shape")

Semantics (``candidates`` = the objects matching the target's DESC; positions are object
centres; the image side is ``size``):

* attribute: exactly one object matches DESC.
* position: the target lies in the named half of the image, and every other candidate is at least
  ``POSITION_MARGIN * size`` less far in that direction. "leftmost" forms need >= 2 candidates.
* relation: the anchor DESC matches exactly one object; the target is displaced from the anchor in
  the named direction by >= ``RELATION_MARGIN * size``, and by at least as much as sideways; every
  other candidate is not displaced in that direction at all.
* superlative: >= 2 candidates; the target's visible area is >= ``SUPERLATIVE_RATIO`` times the
  full (unoccluded) area of every other candidate ("largest"), or its full area times the ratio is
  <= every other candidate's visible area ("smallest").

Targets (and relation anchors) must show >= ``MIN_VISIBLE_FRACTION`` of their full area and at
least ``MIN_VISIBLE_AREA`` pixels (scaled for a 128 x 128 image).

Absent targets (kind ``ABSENT_KIND``, empty mask, target -1): with probability
``ABSENT_PROBABILITY`` a scene gets one more expression in any of the four phrasings whose target
DESC matches no object at all (a near miss of a real object: one attribute changed), e.g. "the
green star" in a scene whose star is red. Relation anchors of absent expressions do exist. About
10 % of all expressions are absent ones; the present ones are the same with or without them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from genmask_sdk.data.geometry import shape_area
from genmask_sdk.data.records import Expression, SceneObject
from genmask_sdk.data.records import read_only
from genmask_sdk.data.vocabulary import ABSENT_KIND, COLOURS, EXPRESSION_KINDS, SHAPES, SIZE_CLASSES

MIN_VISIBLE_FRACTION = 0.6
MIN_VISIBLE_AREA = 60  # pixels at 128 x 128; scaled with the image area
POSITION_MARGIN = 0.15  # fraction of the image side
RELATION_MARGIN = 0.12  # fraction of the image side
SUPERLATIVE_RATIO = 1.5
MAX_EXPRESSIONS = 4
REDUNDANT_ATTRIBUTE_PROBABILITY = 0.25
AMBIGUOUS_DESCRIPTION_PREFERENCE = 0.7  # prefer options whose DESC alone would be ambiguous
ABSENT_PROBABILITY = 0.28  # scenes hold 2.5 present expressions on average: ~10 % are absent ones
ABSENT_TRIES = 20
# Attribute subsets an absent DESC names (always a colour or a shape, never the size alone).
ABSENT_SUBSETS = (("colour", "shape"), ("colour",), ("shape",), ("size_class", "colour", "shape"),
                  ("size_class", "shape"), ("size_class", "colour"))
ATTRIBUTE_VALUES = {"size_class": tuple(SIZE_CLASSES), "colour": tuple(COLOURS), "shape": SHAPES}

ATTRIBUTES = ("size_class", "colour", "shape")

#: Direction word -> (axis, sign): axis 0 is x, 1 is y; ``sign * coordinate`` grows that way.
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "top": (1, -1),
                                          "bottom": (1, 1)}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top",
                    "bottom": "at the bottom"}
EXTREME_WORDS = {"left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "bottommost"}
RELATION_DIRECTIONS = {"above": "top", "below": "bottom", "left of": "left", "right of": "right"}


def _attribute_subsets(names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """All subsets of ``names``, smallest first."""
    return tuple(c for k in range(len(names) + 1) for c in itertools.combinations(names, k))


_ATTRIBUTE_SUBSETS = _attribute_subsets(ATTRIBUTES)


@dataclass(frozen=True)
class Description:
    """A conjunction of attribute values; None means "any". Renders as ``[size] [colour] shape``."""

    size_class: str | None = None
    colour: str | None = None
    shape: str | None = None

    @classmethod
    def of(cls, obj: SceneObject, attributes: Sequence[str]) -> Description:
        """The description of ``obj`` that names only ``attributes`` (names from ATTRIBUTES)."""
        return cls(**{name: getattr(obj, name) for name in attributes})

    def words(self) -> tuple[str | None, str | None, str | None]:
        return (self.size_class, self.colour, self.shape)

    def named(self) -> list[str]:
        """Names of the attributes this description constrains."""
        return [name for name, value in zip(ATTRIBUTES, self.words()) if value is not None]

    def text(self) -> str:
        return " ".join(w for w in (self.size_class, self.colour, self.shape or "shape") if w)


@dataclass(frozen=True)
class _Option:
    """One valid expression before rendering: target index, its DESC, and kind-specific words."""

    kind: str
    target: int
    desc: Description
    ambiguous_desc: bool  # True when DESC alone matches several objects
    direction: str = ""  # position
    relation: str = ""  # relation
    anchor_desc: Description | None = None  # relation
    superlative: str = ""  # superlative


class _SceneFacts:
    """Per-scene lookups shared by the option finders: centres, full and visible areas,
    eligibility, and every attribute-subset description of every object with its matches."""

    def __init__(self, objects: Sequence[SceneObject], size: int):
        self.objects = objects
        self.size = size
        self.centers = [tuple(map(float, o.center_xy)) for o in objects]
        self.visible = np.array([o.area_px for o in objects], dtype=np.float64)
        # Full (unoccluded) area: analytic, but never below the visible pixel count.
        analytic = np.array([shape_area(o.shape, o.radius_px) for o in objects])
        self.full = np.maximum(analytic, self.visible)
        min_area = MIN_VISIBLE_AREA * (size / 128) ** 2
        self.eligible = [v >= min_area and v >= MIN_VISIBLE_FRACTION * f
                         for v, f in zip(self.visible, self.full)]
        self._described = [self._descriptions_of(t) for t in range(len(objects))]

    def _descriptions_of(self, target: int) -> list[tuple[Description, list[int]]]:
        sharing = {name: {i for i, o in enumerate(self.objects)
                          if getattr(o, name) == getattr(self.objects[target], name)}
                   for name in ATTRIBUTES}
        everyone = set(range(len(self.objects)))
        return [(Description.of(self.objects[target], subset),
                 sorted(everyone.intersection(*(sharing[name] for name in subset))))
                for subset in _ATTRIBUTE_SUBSETS]

    def described(self, target: int) -> list[tuple[Description, list[int]]]:
        """Every description of ``target`` (all attribute subsets, fewest attributes first) with
        the sorted indices of the objects it matches."""
        return self._described[target]

    def displacement(self, i: int, j: int, direction: str) -> tuple[float, float]:
        """(along, across): how far object i lies from object j towards ``direction``, and the
        absolute sideways offset, in pixels."""
        axis, sign = DIRECTIONS[direction]
        (xi, yi), (xj, yj) = self.centers[i], self.centers[j]
        delta = (xi - xj, yi - yj)
        return sign * delta[axis], abs(delta[1 - axis])


def minimal_unique_descriptions(facts: _SceneFacts, target: int) -> list[Description]:
    """Every non-empty description of ``target`` with the fewest attributes that matches no other
    object (empty list when the target cannot be told apart by attributes)."""
    unique = [d for d, matches in facts.described(target)[1:] if matches == [target]]
    return [d for d in unique if len(d.named()) == len(unique[0].named())] if unique else []


def attribute_options(facts: _SceneFacts) -> list[_Option]:
    """One option per minimal unique description of every eligible object."""
    return [_Option("attribute", t, desc, False)
            for t in range(len(facts.objects)) if facts.eligible[t]
            for desc in minimal_unique_descriptions(facts, t)]


def is_extreme(facts: _SceneFacts, target: int, candidates: list[int], direction: str) -> bool:
    """True when ``target`` is in the ``direction`` half of the image and beats every other
    candidate in that direction by at least ``POSITION_MARGIN`` of the image side."""
    axis, sign = DIRECTIONS[direction]
    if sign * (facts.centers[target][axis] - (facts.size - 1) / 2) <= 0:
        return False
    margin = POSITION_MARGIN * facts.size
    return all(facts.displacement(target, c, direction)[0] >= margin
               for c in candidates if c != target)


def position_options(facts: _SceneFacts) -> list[_Option]:
    """(DESC, direction) pairs for which an eligible target is the clear extreme."""
    options = []
    for t in range(len(facts.objects)):
        if not facts.eligible[t]:
            continue
        for desc, candidates in facts.described(t):
            options += [_Option("position", t, desc, len(candidates) > 1, direction=d)
                        for d in DIRECTIONS if is_extreme(facts, t, candidates, d)]
    return options


def relation_holds(facts: _SceneFacts, target: int, anchor: int, relation: str) -> bool:
    """True when ``target`` is clearly ``relation`` (e.g. "above") ``anchor``: displaced in that
    direction by >= ``RELATION_MARGIN`` of the image side, and at least as much as sideways."""
    along, across = facts.displacement(target, anchor, RELATION_DIRECTIONS[relation])
    return along >= RELATION_MARGIN * facts.size and along >= across


def relation_options(facts: _SceneFacts) -> list[_Option]:
    """(DESC, relation, anchor DESC) triples that single out an eligible target: the relation
    holds for the target, and no other DESC candidate lies in that direction at all."""
    options = []
    for a in range(len(facts.objects)):
        anchor_descs = minimal_unique_descriptions(facts, a) if facts.eligible[a] else []
        if not anchor_descs:
            continue
        for t, relation in itertools.product(range(len(facts.objects)), RELATION_DIRECTIONS):
            if t == a or not facts.eligible[t] or not relation_holds(facts, t, a, relation):
                continue
            direction = RELATION_DIRECTIONS[relation]
            for desc, candidates in facts.described(t):
                if all(facts.displacement(c, a, direction)[0] <= 0
                       for c in candidates if c != t):
                    options += [_Option("relation", t, desc, len(candidates) > 1,
                                        relation=relation, anchor_desc=d) for d in anchor_descs]
    return options


def is_superlative(facts: _SceneFacts, target: int, candidates: list[int], word: str) -> bool:
    """True when ``target`` is the ``word`` ("largest"/"smallest") of >= 2 ``candidates`` by a
    ``SUPERLATIVE_RATIO`` margin (see module docstring)."""
    others = [c for c in candidates if c != target]
    if not others:
        return False
    if word == "largest":
        return facts.visible[target] >= SUPERLATIVE_RATIO * facts.full[others].max()
    return SUPERLATIVE_RATIO * facts.full[target] <= facts.visible[others].min()


def superlative_options(facts: _SceneFacts) -> list[_Option]:
    """(colour/shape DESC, largest|smallest) pairs that single out an eligible target."""
    options = []
    for t in range(len(facts.objects)):
        if not facts.eligible[t]:
            continue
        for desc, candidates in facts.described(t):
            if desc.size_class is not None:
                continue
            options += [_Option("superlative", t, desc, True, superlative=word)
                        for word in ("largest", "smallest")
                        if is_superlative(facts, t, candidates, word)]
    return options


OPTION_FINDERS = {"attribute": attribute_options, "position": position_options,
                  "relation": relation_options, "superlative": superlative_options}


def _with_redundant_attribute(rng: np.random.Generator, obj: SceneObject, desc: Description):
    """``desc`` plus one more (true, hence redundant) attribute of ``obj``, when one is left."""
    missing = [name for name in ATTRIBUTES if name not in desc.named()]
    if not missing:
        return desc
    name = missing[rng.integers(len(missing))]
    return replace(desc, **{name: getattr(obj, name)})


def render_text(rng: np.random.Generator, option: _Option, objects: Sequence[SceneObject]) -> str:
    """English text of ``option``; adds random surface variety (redundant attributes in
    attribute expressions, "leftmost" vs "on the left" phrasing)."""
    desc = option.desc
    if option.kind == "attribute":
        if rng.random() < REDUNDANT_ATTRIBUTE_PROBABILITY:
            desc = _with_redundant_attribute(rng, objects[option.target], desc)
        return f"the {desc.text()}"
    if option.kind == "position":
        if option.ambiguous_desc and rng.random() < 0.5:
            return f"the {EXTREME_WORDS[option.direction]} {desc.text()}"
        return f"the {desc.text()} {POSITION_PHRASES[option.direction]}"
    if option.kind == "relation":
        return f"the {desc.text()} {option.relation} the {option.anchor_desc.text()}"
    return f"the {option.superlative} {desc.text()}"


def _pick(rng: np.random.Generator, options: list[_Option]) -> _Option:
    """A random option, preferring (with AMBIGUOUS_DESCRIPTION_PREFERENCE) those whose DESC alone
    is ambiguous, i.e. where the position, relation or superlative is really needed."""
    preferred = [o for o in options if o.ambiguous_desc]
    if preferred and len(preferred) < len(options):
        options = preferred if rng.random() < AMBIGUOUS_DESCRIPTION_PREFERENCE else \
            [o for o in options if not o.ambiguous_desc]
    return options[rng.integers(len(options))]


def matches_nothing(objects: Sequence[SceneObject], desc: Description) -> bool:
    """True when no object has every attribute ``desc`` names."""
    named = desc.named()
    return not any(all(getattr(o, n) == getattr(desc, n) for n in named) for o in objects)


def absent_description(rng: np.random.Generator, objects: Sequence[SceneObject],
                       subsets=ABSENT_SUBSETS) -> Description | None:
    """A near miss: a random object's description over a random subset of ``subsets`` with one
    named attribute changed, such that it matches no object; None after ``ABSENT_TRIES`` misses."""
    for _ in range(ABSENT_TRIES):
        base = objects[rng.integers(len(objects))]
        desc = Description.of(base, subsets[rng.integers(len(subsets))])
        name = desc.named()[rng.integers(len(desc.named()))]
        others = [v for v in ATTRIBUTE_VALUES[name] if v != getattr(desc, name)]
        desc = replace(desc, **{name: others[rng.integers(len(others))]})
        if matches_nothing(objects, desc):
            return desc
    return None


def absent_text(rng: np.random.Generator, facts: _SceneFacts) -> str | None:
    """An expression in one of the four phrasings whose target matches nothing in the scene."""
    phrasing = EXPRESSION_KINDS[rng.integers(len(EXPRESSION_KINDS))]
    if phrasing == "superlative":
        desc = absent_description(rng, facts.objects, tuple(s for s in ABSENT_SUBSETS if "size_class" not in s))
        word = ("largest", "smallest")[rng.integers(2)]
        return None if desc is None else f"the {word} {desc.text()}"
    desc = absent_description(rng, facts.objects)
    if desc is None:
        return None
    if phrasing == "position":
        direction = tuple(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        if rng.random() < 0.5:
            return f"the {EXTREME_WORDS[direction]} {desc.text()}"
        return f"the {desc.text()} {POSITION_PHRASES[direction]}"
    if phrasing == "relation":
        anchors = [d for a in range(len(facts.objects)) if facts.eligible[a]
                   for d in minimal_unique_descriptions(facts, a)]
        if anchors:
            relation = tuple(RELATION_DIRECTIONS)[rng.integers(len(RELATION_DIRECTIONS))]
            return f"the {desc.text()} {relation} the {anchors[rng.integers(len(anchors))].text()}"
    return f"the {desc.text()}"


def absent_expression(rng: np.random.Generator, facts: _SceneFacts) -> Expression | None:
    """An ``ABSENT_KIND`` expression (empty mask, target -1), or None when none was found."""
    text = absent_text(rng, facts) if facts.objects else None
    if text is None:
        return None
    return Expression(text, read_only(np.zeros((facts.size, facts.size), dtype=bool)), ABSENT_KIND, -1)


def referring_expressions(
    rng: np.random.Generator, objects: Sequence[SceneObject], size: int
) -> list[Expression]:
    """1..MAX_EXPRESSIONS unambiguous expressions for ``objects`` of a ``size x size`` scene,
    then (with ``ABSENT_PROBABILITY``) one absent-target expression.

    Kinds are visited round-robin in a random order so one scene mixes kinds; fewer expressions
    come back when the scene offers fewer distinct valid ones (possibly none). The absent
    expression is drawn after the present ones, so it never changes them.
    """
    facts = _SceneFacts(objects, size)
    wanted = int(rng.integers(1, MAX_EXPRESSIONS + 1))
    pools = {kind: OPTION_FINDERS[kind](facts) for kind in EXPRESSION_KINDS}
    order = [EXPRESSION_KINDS[k] for k in rng.permutation(len(EXPRESSION_KINDS))]
    expressions: list[Expression] = []
    while len(expressions) < wanted and any(pools.values()):
        for kind in order:
            if not pools[kind] or len(expressions) == wanted:
                continue
            option = _pick(rng, pools[kind])
            pools[kind].remove(option)
            text = render_text(rng, option, objects)
            if text not in {e.text for e in expressions}:
                mask = objects[option.target].mask
                expressions.append(Expression(text, mask, kind, option.target))
    if rng.random() < ABSENT_PROBABILITY:
        absent = absent_expression(rng, facts)
        if absent is not None:
            expressions.append(absent)
    return expressions
