"""Boundary refinement head for the CPU MP2S variant (not in the paper).

The warped prior is usually right to within a few pixels; an output stride of 16 cannot move a boundary by that
little. ``BoundaryRefiner`` upsamples the summed stream logits in two steps (stride 4, then 2), mixing in the image
stream's early features and the prior at each step, and returns a correction to the coarse logits at stride 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, bn_momentum: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_ch, momentum=bn_momentum), nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def _cat_as(like: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
    """Channel concatenation in ``like``'s memory order: channels_last when ``like`` is (at inference), where a cat
    of maps of mixed orders would come out NCHW and the next convolution would copy it back (x1.03-1.16 on the
    Lite forward in A/B runs). Same values as ``torch.cat(maps, 1)``."""
    if like.shape[1] > 1 and like.is_contiguous(memory_format=torch.channels_last):
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
        # a one-channel map looks NCHW to cat, which then returns NCHW: converted once, as before
        return torch.cat(maps, 1).contiguous(memory_format=torch.channels_last)
    return torch.cat(maps, 1)


class BoundaryRefiner(nn.Module):
    """Two-step decoder: ``forward(logits, low4, low2, guide) -> logits`` at ``low2``'s size.

    - ``logits``: ``[N,C,h,w]`` coarse summed logits (any stride > 4);
    - ``low4`` / ``low2``: ``[N,c4,H/4,W/4]`` / ``[N,c2,H/2,W/2]`` image-stream features at stride 4 / 2;
    - ``guide``: ``[N,G,H,W]`` full-resolution maps mixed in at each step (``guide_channels`` = G: the prior in
      [0, 1], optionally with more maps after it);
    - returns ``[N,C,H/2,W/2]`` logits of the coarse prediction plus a correction; the correction's last conv is
      zero-initialised so that an untrained head returns the upsampled coarse logits.
    """

    def __init__(self, low4_channels: int, low2_channels: int, channels: int = 32, num_classes: int = 2,
                 bn_momentum: float = 0.05, guide_channels: int = 1):
        super().__init__()
        self.low4 = _conv_bn_relu(low4_channels, channels, 1, bn_momentum)
        self.fuse4 = nn.Sequential(_conv_bn_relu(channels + num_classes + guide_channels, channels, 3, bn_momentum),
                                   _conv_bn_relu(channels, channels, 3, bn_momentum))
        self.low2 = _conv_bn_relu(low2_channels, channels // 2, 1, bn_momentum)
        self.fuse2 = _conv_bn_relu(channels + channels // 2 + num_classes + guide_channels, channels, 3, bn_momentum)
        self.correction = nn.Conv2d(channels, num_classes, 1)
        nn.init.zeros_(self.correction.weight)
        nn.init.zeros_(self.correction.bias)

    def forward(self, logits: torch.Tensor, low4: torch.Tensor, low2: torch.Tensor,
                guide: torch.Tensor) -> torch.Tensor:
        size4, size2 = low4.shape[-2:], low2.shape[-2:]
        coarse4 = _resize(logits, size4)
        features4 = self.low4(low4)
        x = self.fuse4(_cat_as(features4, [features4, coarse4, _resize(guide, size4)]))
        coarse2 = _resize(coarse4, size2)
        features2 = self.low2(low2)
        x = self.fuse2(_cat_as(features2, [_resize(x, size2), features2, coarse2, _resize(guide, size2)]))
        return coarse2 + self.correction(x)
