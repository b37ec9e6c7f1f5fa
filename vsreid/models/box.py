"""Box mean: the mean over the (2r+1)^2 window around each pixel, the window clipped at the image border.

Two implementations of the same values (within float32 rounding): separable ``avg_pool2d`` with
``count_include_pad=False`` (differentiable, O(r) per pixel), used when a gradient is needed or off the CPU; and
OpenCV's running-sum ``boxFilter`` (O(1) per pixel whatever the radius, sums in float64), used for CPU inference,
where the band gate's and the guided filter's box means would otherwise be a third of the network's time.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean of ``x`` [N,C,H,W] over the (2r+1)^2 window around each pixel (``r`` >= 0 px), the window clipped at the
    image border; same shape and dtype. Differentiable when ``x`` requires grad."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or (x.requires_grad and torch.is_grad_enabled()):
        return pooled_box_mean(x, r)
    return running_box_mean(x, r)


def pooled_box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """:func:`box_mean` by two separable ``avg_pool2d`` (rows then columns): differentiable, any device."""
    k = 2 * r + 1  # separable: a clipped window's pixel count is the product of its row and column counts
    x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=1, padding=(r, 0), count_include_pad=False)


def running_box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """:func:`box_mean` of a float32 CPU tensor by OpenCV's running sums, one (H, W) plane at a time (no grad)."""
    n, c, h, w = x.shape
    planes = x.detach().contiguous().numpy().reshape(n * c, h, w)
    out = np.empty_like(planes)
    scale, k = _inverse_counts(h, w, r), 2 * r + 1
    for src, dst in zip(planes, out):
        cv2.boxFilter(src, -1, (k, k), dst=dst, normalize=False, borderType=cv2.BORDER_CONSTANT)
        np.multiply(dst, scale, out=dst)
    return torch.from_numpy(out).view(n, c, h, w)


@lru_cache(maxsize=32)
def _inverse_counts(h: int, w: int, r: int) -> np.ndarray:
    """(H, W) float32: 1 / the number of pixels of each clipped window (read-only, shared)."""
    def counts(n: int) -> np.ndarray:
        i = np.arange(n)
        return np.minimum(i + r + 1, n) - np.maximum(i - r, 0)
    scale = (1.0 / np.outer(counts(h), counts(w))).astype(np.float32)
    scale.flags.writeable = False
    return scale
