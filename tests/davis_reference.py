"""Test oracle and bench baseline: a plain per-frame transcription of the DAVIS 2017 evaluation protocol.

Written from the protocol description (J = IoU, F = boundary F-measure on Martin's 1-px boundary maps with a disk
tolerance, per-object statistics Mean/Recall/Decay, semi-supervised first/last frame exclusion), one frame and one
object at a time, with no attempt at speed. It is deliberately independent of ``vsreid.metrics``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def disk(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 disk: ones where x^2 + y^2 <= r^2."""
    r = int(radius)
    out = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
    for y in range(-r, r + 1):
        for x in range(-r, r + 1):
            if x * x + y * y <= r * r:
                out[y + r, x + r] = 1
    return out


def boundary_map(seg: np.ndarray) -> np.ndarray:
    """Martin's boundary map of a binary (H, W) mask: (H, W) bool."""
    seg = seg.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def jaccard(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    keep = np.ones_like(gt) if void is None else ~void.astype(bool)
    inter = np.sum(pred & gt & keep)
    union = np.sum((pred | gt) & keep)
    return 1.0 if union == 0 else inter / union


def f_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008) -> float:
    keep = np.ones(gt.shape, bool) if void is None else ~void.astype(bool)
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*gt.shape))
    kernel = disk(radius)
    pred_b = boundary_map(pred.astype(bool) & keep)
    gt_b = boundary_map(gt.astype(bool) & keep)
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel)
    n_pred, n_gt = pred_b.sum(), gt_b.sum()
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(pred_b * gt_dil) / float(n_pred)
        recall = np.sum(gt_b * pred_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame values, with the toolkit's uint8 bin indices (numpy-1 slicing)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = np.nanmean(values)
    recall = np.nanmean(values > 0.5)
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [values[int(ids[i]):int(ids[i + 1]) + 1] for i in range(4)]
    with np.errstate(all="ignore"):
        first = np.nanmean(bins[0]) if bins[0].size else math.nan
        last = np.nanmean(bins[3]) if bins[3].size else math.nan
    return float(mean), float(recall), float(first - last)


def evaluate_sequence(pred: np.ndarray, gt: np.ndarray, semi_supervised: bool = True):
    """Per-object per-frame J and F, each (N, T') float64, for (T, H, W) uint8 label maps."""
    gt = gt.astype(np.int64)
    void = gt == 255
    gt = np.where(void, 0, gt)
    n_objects = int(gt[0].max())
    frames = list(range(1, gt.shape[0] - 1)) if semi_supervised else list(range(gt.shape[0]))
    n_pred = max([int(pred[t].max()) for t in frames], default=0)
    if n_pred > n_objects:
        raise ValueError(f"prediction has id {n_pred}, ground truth has {n_objects} objects")
    j = np.zeros((n_objects, len(frames)))
    f = np.zeros((n_objects, len(frames)))
    for k in range(n_objects):
        for i, t in enumerate(frames):
            v = None if semi_supervised else void[t]
            j[k, i] = jaccard(pred[t] == k + 1, gt[t] == k + 1, v)
            f[k, i] = f_measure(pred[t] == k + 1, gt[t] == k + 1, v)
    return j, f


def global_results(per_object: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Global table from ``{"seq_k": (j_frames, f_frames)}``: means over objects of each statistic."""
    js = np.array([statistics(j) for j, _ in per_object.values()])
    fs = np.array([statistics(f) for _, f in per_object.values()])
    jm, jr, jd = js.mean(axis=0)
    fm, fr, fd = fs.mean(axis=0)
    return {"J&F-Mean": (jm + fm) / 2, "J-Mean": jm, "J-Recall": jr, "J-Decay": jd,
            "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}
