"""Synthetic deformation of a binary mask into a plausible previous-frame prior (the original Caffe ``Transform_aug``):
a thin-plate-spline warp moving 5 contour points by up to +-10% of the box, 1-5 random-walk brush strokes that add
(radius 2) or erase (radius 8) about 2-5% of the area each, and an elliptical dilation with a 3, 7 or 11 px kernel.
The original always dilates, so its priors are about 30% larger than the object (median on the DAVIS 2016 train
subset) and a network trained on them learns to shrink every prior; ``erode_share`` turns that share of the
dilations into erosions with the same kernels.

OpenCV's ``ThinPlateSplineShapeTransformer`` lives in the contrib ``shape`` module, absent from opencv-python-headless,
so the spline is solved with numpy here.
"""
from __future__ import annotations

import cv2
import numpy as np

TPS_GRID_STEP = 8  # the spline is evaluated every 8 px and interpolated bilinearly (it is smooth)


def _tps_kernel(d2: np.ndarray) -> np.ndarray:
    """U(r) = r^2 log r^2 from squared distances, U(0) = 0."""
    return np.where(d2 > 0, d2 * np.log(np.maximum(d2, 1e-12)), 0.0)


def tps_fit(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin-plate spline g with g(src_i) = dst_i for (n, 2) point sets (x, y); returns (weights (n, 2),
    affine (3, 2)) for :func:`tps_apply`. Least squares, so repeated or collinear points do not fail."""
    n = len(src)
    k = _tps_kernel(((src[:, None] - src[None]) ** 2).sum(-1))
    p = np.hstack([np.ones((n, 1)), src])
    system = np.zeros((n + 3, n + 3))
    system[:n, :n], system[:n, n:], system[n:, :n] = k, p, p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = dst
    sol = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return sol[:n], sol[n:]


def tps_apply(params: tuple[np.ndarray, np.ndarray], src: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Evaluate the spline fitted on control points ``src`` at (..., 2) points; returns (..., 2)."""
    weights, affine = params
    d2 = ((pts[..., None, :] - src) ** 2).sum(-1)
    return affine[0] + pts @ affine[1:] + _tps_kernel(d2) @ weights


def _contour_points(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)


def _tps_warp(mask: np.ndarray, rng: np.random.Generator, n_points: int, max_shift: float) -> np.ndarray:
    """Move ``n_points`` evenly spaced contour points by up to ``max_shift`` of the box size; (h, w) bool."""
    contour = _contour_points(mask)
    start = rng.integers(len(contour))
    ctrl = contour[(start + np.arange(n_points) * len(contour) // n_points) % len(contour)]
    box = contour.max(0) - contour.min(0) + 1
    moved = ctrl + rng.uniform(-max_shift, max_shift, (n_points, 2)) * box
    params = tps_fit(moved, ctrl)  # output pixel -> where to read the input
    h, w = mask.shape
    gh, gw = max(2, -(-h // TPS_GRID_STEP)), max(2, -(-w // TPS_GRID_STEP))
    # coarse samples placed where cv2.resize's bilinear upsampling expects them, so the interpolation is aligned
    gy = (np.arange(gh) + 0.5) * h / gh - 0.5
    gx = (np.arange(gw) + 0.5) * w / gw - 0.5
    grid = np.stack(np.meshgrid(gx, gy), -1)
    coarse = tps_apply(params, moved, grid).astype(np.float32)
    maps = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.remap(mask.astype(np.uint8) * 255, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out > 127


def _strokes(mask: np.ndarray, rng: np.random.Generator, max_strokes: int, area_range: tuple[float, float],
             add_radius: int, erase_radius: int) -> np.ndarray:
    """Random-walk strokes (a persistent walk with step = radius) starting on the contour; (h, w) bool."""
    out = mask.astype(np.uint8)
    area = int(mask.sum())
    contour = _contour_points(mask)
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        add = bool(rng.random() < 0.5)
        radius = add_radius if add else erase_radius
        length = rng.uniform(*area_range) * area / (2 * radius)  # a stroke covers about 2r x length pixels
        steps = int(np.clip(round(length / radius), 1, 500))
        angles = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.6, steps))
        walk = np.cumsum(radius * np.stack([np.cos(angles), np.sin(angles)], -1), 0)
        pts = np.vstack([[0.0, 0.0], walk]) + contour[rng.integers(len(contour))]
        cv2.polylines(out, [np.round(pts).astype(np.int32)], False, 1 if add else 0, thickness=2 * radius)
    return out.astype(bool)


def deform_mask(mask: np.ndarray, rng: np.random.Generator, n_points: int = 5, max_shift: float = 0.1,
                max_strokes: int = 5, area_range: tuple[float, float] = (0.02, 0.05), add_radius: int = 2,
                erase_radius: int = 8, kernels: tuple[int, ...] = (3, 7, 11), erode_share: float = 0.0) -> np.ndarray:
    """Deform an (H, W) binary mask (TPS warp, brush strokes, elliptical dilation, or erosion with probability
    ``erode_share``; 0 is the original); returns (H, W) bool.

    Deterministic given ``rng``. An empty input is returned as it is; a draw that would empty the mask returns the
    input instead. Work is done in a window around the object, so the cost follows the object's size.
    """
    mask = np.asarray(mask).astype(bool)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return mask.copy()
    h, w = mask.shape
    margin = int(max(rows[-1] - rows[0], cols[-1] - cols[0])) // 2 + 16
    y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)
    x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)
    win = mask[y0:y1, x0:x1]
    warped = _tps_warp(win, rng, n_points, max_shift)
    if warped.any():
        warped = _strokes(warped, rng, max_strokes, area_range, add_radius, erase_radius)
    k = int(rng.choice(kernels))
    morph = cv2.erode if erode_share and rng.random() < erode_share else cv2.dilate
    warped = morph(warped.view(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))).astype(bool)
    if not warped.any():
        return mask.copy()
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = warped
    return out
