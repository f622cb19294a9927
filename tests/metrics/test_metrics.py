"""Tests of genmask_sdk.metrics: IoU, mIoU/oIoU accumulation, Pr@X and COCO RLE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from genmask_sdk.errors import InputTypeError, InvalidInputError
from genmask_sdk.metrics import SegmentationScores, decode_rle, encode_rle, intersection_union, mask_iou

# pycocotools 2.0.x decode under numpy 2 emits this DeprecationWarning from its own code (its
# Masks.__array__ lacks the `copy` keyword); users do not see it by default, only pytest does.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def box_mask(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# --- IoU ---------------------------------------------------------------------------------------


def test_iou_of_overlapping_boxes_is_hand_computed_value():
    pred = box_mask((10, 10), slice(0, 4), slice(0, 4))  # 16 pixels
    gt = box_mask((10, 10), slice(2, 6), slice(2, 6))  # 16 pixels, overlap 2x2 = 4
    assert intersection_union(pred, gt) == (4, 28)
    assert mask_iou(pred, gt) == pytest.approx(4 / 28)


def test_iou_identical_disjoint_and_nested():
    gt = box_mask((5, 7), slice(1, 3), slice(1, 5))  # 8 pixels
    assert mask_iou(gt, gt) == 1.0
    assert mask_iou(gt, box_mask((5, 7), slice(4, 5), slice(0, 7))) == 0.0
    inner = box_mask((5, 7), slice(1, 2), slice(1, 5))  # 4 pixels inside gt
    assert mask_iou(inner, gt) == 0.5


def test_iou_empty_conventions():
    empty = np.zeros((3, 4), dtype=bool)
    full = np.ones((3, 4), dtype=bool)
    assert intersection_union(empty, empty) == (0, 0)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(empty, full) == 0.0
    assert mask_iou(full, empty) == 0.0


def test_intersection_union_returns_python_ints():
    inter, union = intersection_union(np.ones((2, 2), bool), np.ones((2, 2), bool))
    assert type(inter) is int and type(union) is int


@pytest.mark.parametrize(
    ("pred", "error", "fragment"),
    [
        (np.zeros((4, 4), dtype=np.uint8), InputTypeError, "dtype bool"),
        (np.zeros((4, 4), dtype=np.float32), InputTypeError, "> 0.5"),
        ([[True, False]], InputTypeError, "numpy.ndarray"),
        (np.zeros((1, 4, 4), dtype=bool), InvalidInputError, "2-D"),
        (np.zeros((4,), dtype=bool), InvalidInputError, "2-D"),
        (np.zeros((0, 4), dtype=bool), InvalidInputError, "zero-length"),
    ],
)
def test_iou_rejects_bad_masks_with_helpful_message(pred, error, fragment):
    gt = np.zeros((4, 4), dtype=bool)
    with pytest.raises(error, match="pred") as info:
        mask_iou(pred, gt)
    assert fragment in str(info.value)


def test_iou_rejects_shape_mismatch():
    with pytest.raises(InvalidInputError, match="same"):
        mask_iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_errors_are_also_builtin_exceptions():
    with pytest.raises(TypeError):
        mask_iou(np.zeros((2, 2), np.uint8), np.zeros((2, 2), bool))
    with pytest.raises(ValueError):
        mask_iou(np.zeros((2, 2, 1), bool), np.zeros((2, 2), bool))


# --- SegmentationScores ------------------------------------------------------------------------


def add_big_good_and_small_bad(scores: SegmentationScores) -> None:
    """Sample 1: 100-pixel object, IoU 0.9. Sample 2: 10-pixel object, IoU 0.0."""
    big_gt = box_mask((20, 20), slice(0, 10), slice(0, 10))  # 100 pixels
    big_pred = box_mask((20, 20), slice(0, 9), slice(0, 10))  # 90 pixels inside: I=90, U=100
    small_gt = box_mask((20, 20), slice(15, 16), slice(0, 10))  # 10 pixels
    small_pred = box_mask((20, 20), slice(18, 19), slice(0, 10))  # disjoint: I=0, U=20
    assert scores.add(big_pred, big_gt, group="big") == pytest.approx(0.9)
    assert scores.add(small_pred, small_gt, group="small") == 0.0


def test_miou_and_oiou_differ_on_constructed_example():
    scores = SegmentationScores()
    add_big_good_and_small_bad(scores)
    assert scores.count == 2
    # mIoU / gIoU: mean of per-sample IoU = (0.9 + 0.0) / 2.
    assert scores.miou == pytest.approx(0.45)
    assert scores.giou == scores.miou
    # oIoU / cIoU: (90 + 0) / (100 + 20); the big object dominates.
    assert scores.oiou == pytest.approx(90 / 120)
    assert scores.ciou == scores.oiou
    np.testing.assert_allclose(scores.per_sample_ious(), [0.9, 0.0])


def test_groups_are_scored_separately():
    scores = SegmentationScores()
    add_big_good_and_small_bad(scores)
    scores.add(np.zeros((20, 20), bool), np.zeros((20, 20), bool))  # no group, IoU 1
    assert scores.groups == ("big", "small")
    summary = scores.summary()
    assert summary["count"] == 3
    assert summary["miou"] == pytest.approx(1.9 / 3)
    # The empty-vs-empty sample adds nothing to the cumulative totals.
    assert summary["oiou"] == pytest.approx(90 / 120)
    big, small = summary["groups"]["big"], summary["groups"]["small"]
    assert big["count"] == 1 and big["miou"] == pytest.approx(0.9)
    assert big["oiou"] == pytest.approx(0.9) and big["ciou"] == big["oiou"]
    assert small["count"] == 1 and small["giou"] == 0.0 and small["oiou"] == 0.0
    assert small["precision"]["Pr@0.5"] == 0.0
    assert "groups" not in big


def test_precision_at_default_and_custom_thresholds():
    scores = SegmentationScores()
    gt = box_mask((10, 10), slice(0, 10), slice(0, 10))  # 100 pixels
    for rows in (5, 6, 7, 8, 9, 10):  # IoU 0.5, 0.6, 0.7, 0.8, 0.9, 1.0
        scores.add(box_mask((10, 10), slice(0, rows), slice(0, 10)), gt, group="g")
    expected = {0.5: 6 / 6, 0.6: 5 / 6, 0.7: 4 / 6, 0.8: 3 / 6, 0.9: 2 / 6}
    for threshold, value in scores.precision_at().items():
        assert value == pytest.approx(expected[threshold])  # IoU >= X counts as a hit
    assert scores.precision_at(0.95) == {0.95: pytest.approx(1 / 6)}
    assert scores.precision_at([0.75], group="g") == {0.75: pytest.approx(3 / 6)}
    assert scores.summary()["precision"] == pytest.approx(
        {f"Pr@{k:g}": v for k, v in expected.items()}
    )


def test_empty_accumulator_reports_nan():
    scores = SegmentationScores()
    summary = scores.summary()
    assert summary["count"] == 0 and summary["groups"] == {}
    assert math.isnan(summary["miou"]) and math.isnan(summary["oiou"])
    assert math.isnan(summary["precision"]["Pr@0.5"])


def test_all_empty_samples_give_oiou_one():
    scores = SegmentationScores()
    scores.add(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    assert scores.miou == 1.0 and scores.oiou == 1.0


def test_precision_at_rejects_bad_thresholds_and_unknown_group():
    scores = SegmentationScores()
    scores.add(np.ones((2, 2), bool), np.ones((2, 2), bool), group="a")
    with pytest.raises(InvalidInputError, match="percentages"):
        scores.precision_at([50])
    with pytest.raises(InvalidInputError, match="finite"):
        scores.precision_at(float("nan"))
    with pytest.raises(InvalidInputError, match="unknown group 'b'"):
        scores.precision_at(group="b")


def test_add_validates_masks():
    with pytest.raises(InputTypeError):
        SegmentationScores().add(np.ones((2, 2), np.uint8), np.ones((2, 2), bool))
    scores = SegmentationScores()
    with pytest.raises(InvalidInputError):
        scores.add(np.ones((2, 2), bool), np.ones((3, 2), bool))
    assert scores.count == 0  # a rejected sample is not counted


# --- RLE ---------------------------------------------------------------------------------------

ODD_SHAPES = [(1, 1), (1, 7), (7, 1), (3, 5), (17, 31), (63, 65), (101, 37)]


def random_masks(seed: int = 0):
    rng = np.random.default_rng(seed)
    for shape in ODD_SHAPES:
        for density in (0.0, 0.03, 0.5, 0.97, 1.0):
            yield rng.random(shape) < density


def test_rle_round_trip_on_random_masks_of_odd_sizes():
    for mask in random_masks():
        rle = encode_rle(mask)
        assert rle["size"] == list(mask.shape)
        assert isinstance(rle["counts"], str)
        decoded = decode_rle(rle)
        assert decoded.dtype == np.bool_ and decoded.shape == mask.shape
        assert decoded.flags.c_contiguous
        np.testing.assert_array_equal(decoded, mask)


def test_encode_matches_pycocotools_and_pycocotools_decodes_ours():
    for mask in random_masks(seed=1):
        reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = encode_rle(mask)
        assert ours["counts"].encode("ascii") == reference["counts"]
        assert ours["size"] == list(reference["size"])
        ours_as_coco = {"size": ours["size"], "counts": ours["counts"].encode("ascii")}
        np.testing.assert_array_equal(coco_mask.decode(ours_as_coco).astype(bool), mask)


def test_encode_is_independent_of_memory_order():
    mask = np.random.default_rng(2).random((9, 13)) < 0.4
    assert encode_rle(mask) == encode_rle(np.asfortranarray(mask)) == encode_rle(mask.T.copy().T)


def test_rle_uses_column_major_order():
    mask = np.zeros((2, 3), dtype=bool)
    mask[0, 1] = True  # column-major index 2: runs [2 background, 1 foreground, 3 background]
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [2, 1, 3]}), mask)
    assert decode_rle(encode_rle(mask)).tolist() == mask.tolist()


def test_decode_accepts_str_and_bytes_counts():
    mask = np.random.default_rng(3).random((11, 5)) < 0.3
    rle = encode_rle(mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    np.testing.assert_array_equal(decode_rle(rle), mask)
    np.testing.assert_array_equal(decode_rle(as_bytes), mask)
    from_pycocotools = coco_mask.encode(np.asfortranarray(mask, np.uint8))  # bytes counts
    np.testing.assert_array_equal(decode_rle(from_pycocotools), mask)


def test_decode_accepts_uncompressed_counts():
    mask = np.random.default_rng(4).random((6, 9)) < 0.5
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    boundaries = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(boundaries).tolist()
    if flat[0]:
        runs = [0] + runs  # runs start with background
    np.testing.assert_array_equal(decode_rle({"size": [6, 9], "counts": runs}), mask)
    np.testing.assert_array_equal(decode_rle({"size": (6, 9), "counts": np.array(runs)}), mask)
    # Non-canonical but valid: zero-length runs in the middle.
    expected = np.zeros((2, 2), bool)
    expected[1, 1] = True
    np.testing.assert_array_equal(decode_rle({"size": [2, 2], "counts": [2, 0, 1, 1]}), expected)


@pytest.mark.parametrize(
    ("rle", "error", "fragment"),
    [
        ([{"size": [2, 2], "counts": "4"}], InputTypeError, "dict"),
        ({"counts": "4"}, InvalidInputError, "missing"),
        ({"size": [2], "counts": "4"}, InvalidInputError, "[H, W]"),
        ({"size": [0, 2], "counts": ""}, InvalidInputError, ">= 1"),
        ({"size": [2.0, 2], "counts": "4"}, InvalidInputError, "integers"),
        ({"size": [2, 2], "counts": 4}, InputTypeError, "list of ints"),
        ({"size": [2, 2], "counts": [1, 1]}, InvalidInputError, "covers 2 pixels"),
        ({"size": [2, 2], "counts": [1, -1, 4]}, InvalidInputError, "non-negative"),
        ({"size": [2, 2], "counts": "3"}, InvalidInputError, "covers 3 pixels"),  # too short
        ({"size": [2, 2], "counts": "5"}, InvalidInputError, "covers 5 pixels"),  # too long
        ({"size": [2, 2], "counts": "4~"}, InvalidInputError, "invalid character"),
        ({"size": [2, 2], "counts": "4é"}, InvalidInputError, "non-ASCII"),
        ({"size": [2, 2], "counts": "P"}, InvalidInputError, "truncated"),
    ],
)
def test_decode_rejects_malformed_rle(rle, error, fragment):
    with pytest.raises(error) as info:
        decode_rle(rle)
    assert fragment in str(info.value)


def test_decode_rejects_counts_of_another_size():
    rle = encode_rle(np.ones((4, 5), dtype=bool))
    with pytest.raises(InvalidInputError, match="20 pixels but size \\[5, 5\\]"):
        decode_rle({"size": [5, 5], "counts": rle["counts"]})


def test_encode_rejects_bad_masks():
    with pytest.raises(InputTypeError, match="dtype bool"):
        encode_rle(np.ones((3, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="2-D"):
        encode_rle(np.ones((2, 3, 3), dtype=bool))
