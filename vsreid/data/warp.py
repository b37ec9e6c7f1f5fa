"""Backward ("pull") warping of per-pixel values with a forward–backward flow consistency check.

This is the original VS-ReID warp: for a target pixel p, ``q = p + flow_to_source(p)`` is its position in the source
frame; ``flow_from_source`` (the opposite flow, on the source grid) is sampled bilinearly at q; p is kept only if q lies
inside the image and ``|q + flow_from_source(q) - p| < max_error``; the two estimates are averaged,
``q' = p + (flow_to_source(p) - flow_from_source(q)) / 2``, and the source value is taken at ``round(q')`` (nearest).
Rejected pixels get 0 in every channel, so an argmax over a (background, objects...) stack makes them background.
"""
from __future__ import annotations

import numpy as np

DEFAULT_MAX_ERROR = 100.0


def _sample_bilinear(field: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``field`` (H, W, C) sampled at float coordinates (y, x) of shape (H, W); indices clipped to the image."""
    h, w = field.shape[:2]
    y0, x0 = np.floor(y).astype(np.intp), np.floor(x).astype(np.intp)
    out = np.zeros(y.shape + field.shape[2:], np.float32)
    for dy in (0, 1):
        for dx in (0, 1):
            yi, xi = np.clip(y0 + dy, 0, h - 1), np.clip(x0 + dx, 0, w - 1)
            weight = np.abs((1 - np.abs(yi - y)) * (1 - np.abs(xi - x))).astype(np.float32)
            out += weight[..., None] * field[yi, xi]
    return out


def warp_backward(values: np.ndarray, flow_to_source: np.ndarray, flow_from_source: np.ndarray,
                  max_error: float = DEFAULT_MAX_ERROR) -> np.ndarray:
    """Pull ``values`` from the source frame onto the target frame's grid.

    Args:
        values: (H, W) or (H, W, C) source-frame values (probabilities, labels, ...).
        flow_to_source: (H, W, 2) flow (u, v) in pixels on the target grid, pointing into the source frame
            (for the step t-1 -> t this is ``t.rflo``; for t+1 -> t it is ``t.flo``).
        flow_from_source: (H, W, 2) opposite flow on the source grid (``(t-1).flo``, resp. ``(t+1).rflo``).
        max_error: forward–backward consistency threshold in pixels (100 in the original).

    Returns:
        Warped values, same shape and dtype as ``values``; inconsistent or out-of-image pixels are 0.
    """
    h, w = values.shape[:2]
    if flow_to_source.shape[:2] != (h, w) or flow_from_source.shape[:2] != (h, w):
        raise ValueError(f"flow sizes {flow_to_source.shape[:2]} / {flow_from_source.shape[:2]} differ from the "
                         f"values' {(h, w)}")
    gy, gx = np.indices((h, w), dtype=np.float32)
    qy = gy + flow_to_source[..., 1]
    qx = gx + flow_to_source[..., 0]
    valid = (qy >= 0) & (qy < h - 1) & (qx >= 0) & (qx < w - 1)
    back = _sample_bilinear(flow_from_source, qy, qx)
    valid &= np.hypot(qx + back[..., 0] - gx, qy + back[..., 1] - gy) < max_error
    ry = gy + (flow_to_source[..., 1] - back[..., 1]) / 2
    rx = gx + (flow_to_source[..., 0] - back[..., 0]) / 2
    valid &= (ry >= 0) & (ry < h - 1) & (rx >= 0) & (rx < w - 1)
    out = np.zeros_like(values)
    out[valid] = values[np.round(ry[valid]).astype(np.intp), np.round(rx[valid]).astype(np.intp)]
    return out
