"""Per-frame DAVIS measures on binary mask stacks: region similarity J and boundary measure F.

Both agree with the DAVIS 2017 toolkit (``db_eval_iou``, ``f_measure``) to the last bit. Speed comes from working on
the bounding box of ``pred | gt`` only, and from answering "is there a boundary pixel of the other mask within the
disk" at boundary pixels only: the disk is a union of a few rectangles, each tested with 4 look-ups in an integral
image of all frames' boundaries packed into one canvas.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

_CANVAS_PIXELS = 1 << 19


def disk(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 disk, 1 where x^2 + y^2 <= r^2 (as ``skimage.morphology.disk``)."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius).astype(np.uint8)


def boundary_radius(shape: tuple[int, int], bound_th: float = 0.008) -> int:
    """Tolerance radius in pixels: ``ceil(bound_th * ||(H, W)||)``, or ``bound_th`` itself when it is >= 1."""
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be an integer, got {bound_th}")
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(*shape))


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """1-px boundary (H, W) bool of a binary (H, W) mask, as the toolkit's ``_seg2bmap`` (D. Martin, BSDS).

    A pixel is a boundary when it differs from its east, south or south-east neighbour; on the last row only east
    counts, on the last column only south, and the bottom-right pixel is never a boundary.
    """
    seg = np.ascontiguousarray(seg, bool)
    if seg.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {seg.shape}")
    out = np.zeros_like(seg)
    _boundary_into(seg, out)
    return out


def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """J per frame, (T,) float64, for binary stacks (T, H, W): |P∩G| / |P∪G| outside ``void``, 1 if P∪G is empty."""
    pred, gt = _masked(pred, gt, void)
    return _jaccard(pred, gt, _boxes(pred, gt))


def boundary_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None,
                     bound_th: float = 0.008) -> np.ndarray:
    """F per frame, (T,) float64, for binary stacks (T, H, W), as the toolkit's ``f_measure``.

    Boundaries of ``pred`` and ``gt`` (void pixels removed first) match within a disk of radius
    :func:`boundary_radius`; precision and recall are 1 and 0 (or 0 and 1) when only the prediction (or only the
    ground truth) boundary is empty, both 1 when both are; F = 2PR / (P + R), or 0 when P + R = 0.
    """
    pred, gt = _masked(pred, gt, void)
    return _f_measure(pred, gt, _boxes(pred, gt), boundary_radius(pred.shape[1:], bound_th))


def jaccard_and_boundary(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None,
                         bound_th: float = 0.008) -> tuple[np.ndarray, np.ndarray]:
    """(J, F), each (T,) float64: :func:`region_similarity` and :func:`boundary_measure` sharing one pass."""
    pred, gt = _masked(pred, gt, void)
    boxes = _boxes(pred, gt)
    return _jaccard(pred, gt, boxes), _f_measure(pred, gt, boxes, boundary_radius(pred.shape[1:], bound_th))


def _masked(pred, gt, void):
    pred, gt = np.ascontiguousarray(pred, bool), np.ascontiguousarray(gt, bool)
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise ValueError(f"expected two (T, H, W) masks of one shape, got {pred.shape} and {gt.shape}")
    if void is not None:
        keep = ~np.asarray(void, bool)
        if keep.shape != gt.shape:
            raise ValueError(f"void mask shape {keep.shape} differs from the masks' {gt.shape}")
        pred, gt = pred & keep, gt & keep
    return pred, gt


def _boxes(pred, gt):
    """(T, 4) int64 rows (y0, y1, x0, x1), half-open: box of ``pred | gt`` grown by 1 px and clipped; zeros if empty."""
    height, width = pred.shape[1:]
    rows = pred.any(axis=2) | gt.any(axis=2)
    boxes = np.zeros((len(pred), 4), np.int64)
    for t in np.flatnonzero(rows.any(axis=1)):
        ys = np.flatnonzero(rows[t])
        y0, y1 = ys[0], ys[-1] + 1
        xs = np.flatnonzero(pred[t, y0:y1].any(axis=0) | gt[t, y0:y1].any(axis=0))
        boxes[t] = max(y0 - 1, 0), min(y1 + 1, height), max(xs[0] - 1, 0), min(xs[-1] + 2, width)
    return boxes


def _jaccard(pred, gt, boxes):
    j = np.ones(len(pred))
    for t in np.flatnonzero(boxes[:, 1]):
        y0, y1, x0, x1 = boxes[t]
        p, g = pred[t, y0:y1, x0:x1].view(np.uint8), gt[t, y0:y1, x0:x1].view(np.uint8)
        inter = cv2.countNonZero(cv2.bitwise_and(p, g))
        j[t] = inter / (cv2.countNonZero(p) + cv2.countNonZero(g) - inter)
    return j


def _boundary_into(seg, out):
    """Write the boundary of ``seg`` (h, w) bool into the zeroed ``out`` (h, w) bool (see :func:`boundary_map`)."""
    if min(seg.shape) < 2:
        out[-1, :-1] = seg[-1, :-1] ^ seg[-1, 1:]
        out[:-1, -1] = seg[:-1, -1] ^ seg[1:, -1]
        return
    seg, out = seg.view(np.uint8), out.view(np.uint8)
    east = cv2.bitwise_xor(seg[:, :-1], seg[:, 1:])
    cv2.bitwise_or(east[:-1], east[1:], dst=out[:-1, :-1])
    cv2.bitwise_or(out[:-1], cv2.bitwise_xor(seg[:-1], seg[1:]), dst=out[:-1])
    out[-1, :-1] = east[-1]


def _disk_rectangles(radius):
    """Half-sizes (a, b) of rectangles [-a, a] x [-b, b] whose union is :func:`disk`, largest first."""
    half_width = [math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1)]
    rects = [(half_width[dy], dy) for dy in range(radius + 1) if dy == radius or half_width[dy + 1] < half_width[dy]]
    return sorted(rects, key=lambda ab: -(2 * ab[0] + 1) * (2 * ab[1] + 1))


def _f_measure(pred, gt, boxes, radius):
    counts = np.zeros((4, len(pred)), np.int64)
    rects = _disk_rectangles(radius)
    for frames in _chunks(boxes, radius):
        _count_chunk(pred, gt, boxes, frames, radius, rects, counts)
    n_pred, n_gt, miss_pred, miss_gt = counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, np.where(n_gt > 0, (n_pred - miss_pred) / n_pred, 0.0), 1.0)
        recall = np.where(n_gt > 0, np.where(n_pred > 0, (n_gt - miss_gt) / n_gt, 0.0), 1.0)
        f = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return f


def _chunks(boxes, radius):
    """Frames with a box, ordered by box width, in groups whose canvas stays within ``_CANVAS_PIXELS`` (or 1 frame)."""
    frames = np.flatnonzero(boxes[:, 1])
    frames = frames[np.argsort(boxes[frames, 3] - boxes[frames, 2], kind="stable")]
    chunk, rows, stride = [], radius, 0
    for t in frames:
        y0, y1, x0, x1 = boxes[t]
        rows, stride = rows + y1 - y0 + radius, max(stride, x1 - x0 + 2 * radius + 1)
        if chunk and rows * stride > _CANVAS_PIXELS:
            yield np.array(chunk)
            chunk, rows, stride = [], radius + y1 - y0 + radius, x1 - x0 + 2 * radius + 1
        chunk.append(t)
    if chunk:
        yield np.array(chunk)


def _count_chunk(pred, gt, boxes, frames, radius, rects, counts):
    """Add boundary pixel counts and unmatched counts of ``frames`` to ``counts`` (4, T).

    Tiles (one per frame, boundaries of pred and gt on two canvases) are stacked vertically ``radius`` pixels apart
    with ``radius`` pixels of margin, so a disk around any tile pixel stays inside the canvas and its own tile.
    """
    y0, y1, x0, x1 = boxes[frames].T
    heights, widths = y1 - y0, x1 - x0
    width = int(widths.max()) + 2 * radius
    stride = width + 1
    tops = radius + np.concatenate(([0], np.cumsum(heights + radius)[:-1]))
    canvases = np.zeros((2, int(tops[-1] + heights[-1] + radius), stride), bool)
    for i, t in enumerate(frames):
        tile = (slice(tops[i], tops[i] + heights[i]), slice(radius, radius + widths[i]))
        crop = (t, slice(y0[i], y1[i]), slice(x0[i], x1[i]))
        _boundary_into(pred[crop], canvases[0][tile])
        _boundary_into(gt[crop], canvases[1][tile])
    points = [np.flatnonzero(c) for c in canvases]
    integrals = [cv2.integral(c[:, :width].view(np.uint8)).ravel() for c in canvases]
    for k, (pts, other) in enumerate(zip(points, integrals[::-1])):
        counts[k, frames] += np.bincount(_tile_of(pts, tops, stride), minlength=len(frames))
        missed = _unmatched(pts, other, stride, radius, rects)
        counts[k + 2, frames] += np.bincount(_tile_of(missed, tops, stride), minlength=len(frames))


def _unmatched(points, integral, stride, radius, rects):
    """The flat canvas indices among ``points`` with no pixel of ``integral``'s canvas in the disk around them.

    Rectangles are tried largest first; after the first, points with nothing in the bounding square are settled.
    """
    def box_sum(pts, a, b):
        below, above = (b + 1) * stride, -b * stride
        return integral[pts + (below + a + 1)] - integral[pts + (above + a + 1)] \
            - integral[pts + (below - a)] + integral[pts + (above - a)]

    points = points[box_sum(points, *rects[0]) == 0]
    near = box_sum(points, radius, radius) > 0
    missed, points = points[~near], points[near]
    for a, b in rects[1:]:
        points = points[box_sum(points, a, b) == 0]
    return np.concatenate((missed, points))


def _tile_of(points, tops, stride):
    return np.searchsorted(tops, points // stride, side="right") - 1
