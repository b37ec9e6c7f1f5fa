"""Object boxes and square crops, as in the original VS-ReID test code (``gen_bbox``, ``cv2.resize`` of box crops).

Boxes are ``(x1, y1, x2, y2)`` int pixels, half-open: the crop is ``array[y1:y2, x1:x2]``.
"""
from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]
ABSENT_BOX: Box = (0, 0, 1, 1)


def object_box(mask: np.ndarray, box_enlargement: float = 0.15, ratio: float = 1.0) -> Box:
    """The original ``gen_bbox`` for one object.

    Args:
        mask: (H, W) bool, the object's pixels.
        box_enlargement: fraction of the box width/height added on each side (0.15 at test time).
        ratio: quantile of the sorted pixel coordinates taken as the extent (0.99: a robust 1st-99th percentile box).

    Returns:
        ``(x1, y1, x2, y2)``: the tight box enlarged, clipped to ``0 <= x1 <= W-1``, ``x1+1 <= x2 <= W`` (same for y)
        and truncated to int; ``(0, 0, 1, 1)`` for an absent object.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return ABSENT_BOX
    h, w = mask.shape
    lo, hi = int((ys.size - 1) * (1 - ratio)), int((ys.size - 1) * ratio)
    xs = np.partition(xs, (lo, hi))  # order statistics equal those of the sorted list
    ys = np.partition(ys, (lo, hi))
    x1, x2 = int(xs[lo]), int(xs[hi]) + 1
    y1, y2 = int(ys[lo]), int(ys[hi]) + 1
    bw, bh = x2 - x1, y2 - y1
    fx1 = float(np.clip(x1 - box_enlargement * bw, 0, w - 1))
    fx2 = float(np.clip(x2 + box_enlargement * bw, fx1 + 1, w))
    fy1 = float(np.clip(y1 - box_enlargement * bh, 0, h - 1))
    fy2 = float(np.clip(y2 + box_enlargement * bh, fy1 + 1, h))
    return int(fx1), int(fy1), int(fx2), int(fy2)


def boxes_from_labels(labels: np.ndarray, object_ids, box_enlargement: float = 0.15, ratio: float = 1.0
                      ) -> np.ndarray:
    """One :func:`object_box` per value in ``object_ids`` of an (H, W) uint8 map: an id map with object ids, or an
    index map with ``range(1, N + 1)``; returns (N, 4) int64 rows ``x1, y1, x2, y2``."""
    return np.array([object_box(labels == i, box_enlargement, ratio) for i in object_ids], np.int64).reshape(-1, 4)


def grown_box(box: Box, margin: int, shape: tuple[int, int]) -> Box:
    """``box`` widened by ``margin`` px on every side, clipped to an (H, W) image."""
    x1, y1, x2, y2 = box
    h, w = shape
    return max(x1 - margin, 0), max(y1 - margin, 0), min(x2 + margin, w), min(y2 + margin, h)


def scale_box(box: Box, sx: float, sy: float) -> Box:
    """A box on another resolution (e.g. 480p -> Full-Resolution), rounded like the original: ``int(0.5 + x * s)``."""
    x1, y1, x2, y2 = box
    return int(0.5 + x1 * sx), int(0.5 + y1 * sy), int(0.5 + x2 * sx), int(0.5 + y2 * sy)


def crop_resize(array: np.ndarray, box: Box, size: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``cv2.resize`` of ``array[y1:y2, x1:x2]`` to (size, size[, C]).

    Bilinear (default) for images, probabilities and flow (flow vectors are not rescaled, as in the original);
    ``cv2.INTER_NEAREST`` for id maps. Bool input is returned as bool; a trailing channel axis is kept even when C=1.
    """
    x1, y1, x2, y2 = box
    patch = array[y1:y2, x1:x2]
    out = cv2.resize(patch.view(np.uint8) if patch.dtype == bool else patch, (size, size), interpolation=interpolation)
    if array.dtype == bool:
        out = out.astype(bool)
    return out.reshape((size, size) + array.shape[2:])


def paste_back(patch: np.ndarray, box: Box, out_shape: tuple[int, int], fill=0.0,
               interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Resize a (S, S[, C]) patch to the box and write it into a new array of (H, W) = ``out_shape``.

    Outside the box the result is ``fill`` (a scalar, or one value per channel). Returns (H, W[, C]) of the patch's
    dtype.
    """
    x1, y1, x2, y2 = box
    resized = cv2.resize(patch, (x2 - x1, y2 - y1), interpolation=interpolation).reshape(
        (y2 - y1, x2 - x1) + patch.shape[2:])
    out = np.empty(tuple(out_shape[:2]) + patch.shape[2:], patch.dtype)
    out[...] = fill
    out[y1:y2, x1:x2] = resized
    return out


def box_intersection(a, b) -> float:
    """Area shared by two boxes (x1, y1, x2, y2) with continuous coordinates (x2 exclusive)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def box_iou(a, b) -> float:
    """Intersection over union of two boxes (x1, y1, x2, y2) with continuous coordinates (x2 exclusive); 0 when
    both are empty."""
    inter = box_intersection(a, b)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def share_inside(box, outer) -> float:
    """The share of ``box``'s area (x1, y1, x2, y2) that lies inside ``outer``; 0 for an empty box."""
    area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
    return box_intersection(box, outer) / area if area > 0 else 0.0
