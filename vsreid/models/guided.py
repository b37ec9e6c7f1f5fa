"""Colour guided filter (He et al., "Guided Image Filtering"): snaps a soft mask to the image's edges.

Used as the last layer of the CPU MP2S variant (not in the paper). A flow-warped mask is right to within a few
pixels but its boundary follows the smooth flow field, not the object's edges; filtering it under the guidance of the
current frame moves the boundary onto the nearest colour edge and fills small holes left by the warp's consistency
check. The filter is differentiable, so the network is trained through it.
"""
from __future__ import annotations

import torch
from torch import nn

from .box import box_mean

#: The 6 distinct (i, j) entries of a symmetric 3x3 colour covariance, in the order rr, rg, rb, gg, gb, bb.
_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


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
            # centred (the filter is invariant to shifting either input): smaller float32 cancellation in the
            # variances and covariances
            guide = guide.float() - guide.float().mean((2, 3), keepdim=True)
            p = p.float() - 0.5
            first, second = [i for i, _ in _PAIRS], [j for _, j in _PAIRS]
            # every first-pass box mean in one call: I (3), p (1), I p (3), I_i I_j (6)
            means = box_mean(torch.cat([guide, p, guide * p, guide[:, first] * guide[:, second]], 1), r)
            mean_i, mean_p, mean_ip, mean_ii = means[:, 0:3], means[:, 3:4], means[:, 4:7], means[:, 7:13]
            cov = mean_ip - mean_i * mean_p  # [N,3,H,W]
            # the 6 distinct entries of each pixel's 3x3 colour covariance, + eps on the diagonal
            var = mean_ii - mean_i[:, first] * mean_i[:, second]
            rr, rg, rb, gg, gb, bb = (var[:, k:k + 1] + (self.eps if i == j else 0.0)
                                      for k, (i, j) in enumerate(_PAIRS))
            # its inverse by the adjugate (symmetric), elementwise: far faster than a batched solve on CPU
            i_rr, i_rg, i_rb = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
            i_gg, i_gb, i_bb = rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg
            det = rr * i_rr + rg * i_rg + rb * i_rb
            c_r, c_g, c_b = cov[:, 0:1], cov[:, 1:2], cov[:, 2:3]
            a = torch.cat([i_rr * c_r + i_rg * c_g + i_rb * c_b,
                           i_rg * c_r + i_gg * c_g + i_gb * c_b,
                           i_rb * c_r + i_gb * c_g + i_bb * c_b], 1) / det
            b = mean_p - (a * mean_i).sum(1, keepdim=True)
            mean_ab = box_mean(torch.cat([a, b], 1), r)
            return (mean_ab[:, :3] * guide).sum(1, keepdim=True) + mean_ab[:, 3:] + 0.5
