"""Referring-segmentation metrics (mIoU/gIoU, oIoU/cIoU, Pr@X) and COCO RLE mask encoding.

See :mod:`genmask_sdk.metrics.iou` for which name means what in the literature.
"""

from genmask_sdk.metrics.iou import (
    DEFAULT_PRECISION_THRESHOLDS,
    EMPTY_UNION_IOU,
    SegmentationScores,
    intersection_union,
    iou_from_counts,
    mask_iou,
)
from genmask_sdk.metrics.rle import RLE, decode_rle, encode_rle

__all__ = [
    "DEFAULT_PRECISION_THRESHOLDS",
    "EMPTY_UNION_IOU",
    "RLE",
    "SegmentationScores",
    "decode_rle",
    "encode_rle",
    "intersection_union",
    "iou_from_counts",
    "mask_iou",
]
