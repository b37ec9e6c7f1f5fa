"""Colour guided filter (He et al., "Guided Image Filtering"): snaps a soft mask to the image's edges.

Used as the last layer of the CPU MP2S variant (not in the paper). A flow-warped mask is right to within a few
pixels but its boundary follows the smooth flow field, not the object's edges; filtering it under the guidance of the
current frame moves the boundary onto the nearest colour edge and fills small holes left by the warp's consistency
check. The filter is differentiable, so the network is trained through it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window around each pixel, windows clipped at the border. ``x``: [N,C,H,W]."""
    k = 2 * r + 1  # separable: a clipped window's pixel count is the product of its row and column counts
    x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, r), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=1, padding=(r, 0), count_include_pad=False)


class GuidedFilter(nn.Module):
    """``forward(guide, p) -> q``: the colour guided filter of ``p`` [N,1,H,W] under ``guide`` [N,3,H,W] (both in
    [0, 1]), window radius ``radius`` px, regularisation ``eps`` (in squared guide units). Runs in float32."""

    def __init__(self, radius: int, eps: float = 1e-4):
        super().__init__()
        if radius < 1:
            raise ValueError(f"guided filter radius must be >= 1, got {radius}")
        self.radius, self.eps = radius, eps

    def forward(self, guide: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        r = self.radius
        with torch.autocast(guide.device.type, enabled=False):
            guide, p = guide.float(), p.float()
            mean_i, mean_p = _mean(guide, r), _mean(p, r)
            cov = _mean(guide * p, r) - mean_i * mean_p  # [N,3,H,W]
            # the 6 distinct entries of each pixel's 3x3 colour covariance, + eps on the diagonal
            rr, rg, rb, gg, gb, bb = (_mean(guide[:, i:i + 1] * guide[:, j:j + 1], r) - mean_i[:, i:i + 1] *
                                      mean_i[:, j:j + 1] + (self.eps if i == j else 0.0)
                                      for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)))
            # its inverse by the adjugate (symmetric), elementwise: far faster than a batched solve on CPU
            i_rr, i_rg, i_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
            i_gg, i_gb, i_bb = rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg
            det = rr * i_rr + rg * i_rg + rb * i_rb
            c_r, c_g, c_b = cov[:, 0:1], cov[:, 1:2], cov[:, 2:3]
            a = torch.cat([i_rr * c_r + i_rg * c_g + i_rb * c_b,
                           i_rg * c_r + i_gg * c_g + i_gb * c_b,
                           i_rb * c_r + i_gb * c_g + i_bb * c_b], 1) / det
            b = mean_p - (a * mean_i).sum(1, keepdim=True)
            return (_mean(a, r) * guide).sum(1, keepdim=True) + _mean(b, r)
