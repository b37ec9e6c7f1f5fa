"""ASPP head of an MP2S stream (the original ``ASPP_simple``; names match its checkpoint keys)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .dilated import DilatedConv2d


class ASPP(nn.Module):
    """Parallel dilated 3x3 convs (with bias; :class:`DilatedConv2d` for a faster backward), concatenated, fused by a
    3x3 conv + BN + ReLU.

    ``forward(x [N,in_channels,H,W]) -> [N,channels,H,W]``. Convs are initialised N(0, 0.01), biases 0.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 512,
        dilations: Sequence[int] = (6, 12, 18, 24, 1),
        bn_momentum: float = 0.05,
    ):
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            DilatedConv2d(in_channels, channels, 3, d) if d > 1 else nn.Conv2d(in_channels, channels, 3, padding=1)
            for d in dilations
        )
        self.out_conv2d = nn.Conv2d(len(dilations) * channels, channels, 3, padding=1, bias=False)
        self.out_bn2d = nn.BatchNorm2d(channels, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = channels

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([conv(x) for conv in self.conv2d_list], dim=1)
        return self.relu(self.out_bn2d(self.out_conv2d(x)))
