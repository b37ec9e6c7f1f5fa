"""Sense-ResNet: the dilated, deep-stem ResNet of one VS-ReID MP2S stream.

Module and parameter names match the original ``sense_resnet`` so that ``MP2S.pth.tar`` loads strictly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Output stride -> (per-layer strides, per-layer dilations) of layer1..layer4.
STRIDES_AND_DILATIONS = {
    8: ((1, 2, 1, 1), (1, 1, 2, 4)),
    16: ((1, 2, 2, 1), (1, 1, 1, 2)),
}


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs; both are dilated (the original only ever used Bottleneck)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None, bn_momentum=0.05):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4 channels)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None, bn_momentum=0.05):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes, momentum=bn_momentum)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


ARCHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class SenseResNet(nn.Module):
    """Deep-stem dilated ResNet with a mask-prior input.

    ``forward(x [N,C,H,W], prob [N,1,H,W]) -> features [N, out_channels, ceil(H/s), ceil(W/s)]``, where ``s`` is the
    output stride (8 with the default strides/dilations). The prior is encoded by ``prob_encode`` and added to
    ``conv1_1(x)`` before ``bn1_1``. Convs are Kaiming-initialised (fan_out), BN weight 1 / bias 0.
    """

    def __init__(
        self,
        depth: int = 101,
        in_channels: int = 3,
        layers_stride: Sequence[int] = STRIDES_AND_DILATIONS[8][0],
        layers_dilation: Sequence[int] = STRIDES_AND_DILATIONS[8][1],
        bn_momentum: float = 0.05,
    ):
        super().__init__()
        if depth not in ARCHS:
            raise ValueError(f"depth {depth}: expected one of {sorted(ARCHS)}")
        block, blocks = ARCHS[depth]
        self.bn_momentum = bn_momentum
        self.prob_encode = nn.Conv2d(1, 64, 3, stride=2, padding=1, bias=False)
        self.conv1_1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
        self.bn1_1 = nn.BatchNorm2d(64, momentum=bn_momentum)
        self.conv1_2 = _conv3x3(64, 64)
        self.bn1_2 = nn.BatchNorm2d(64, momentum=bn_momentum)
        self.conv1_3 = _conv3x3(64, 128)
        self.bn1_3 = nn.BatchNorm2d(128, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 128
        for i, (n, stride, dilation) in enumerate(zip(blocks, layers_stride, layers_dilation)):
            layer, inplanes = self._make_layer(block, inplanes, 64 * 2**i, n, stride, dilation)
            setattr(self, f"layer{i + 1}", layer)
        self.out_channels = inplanes

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, inplanes, planes, n, stride, dilation):
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion, momentum=self.bn_momentum),
            )
        layers = [block(inplanes, planes, stride, dilation, downsample, self.bn_momentum)]
        inplanes = planes * block.expansion
        layers += [block(inplanes, planes, 1, dilation, None, self.bn_momentum) for _ in range(1, n)]
        return nn.Sequential(*layers), inplanes

    def forward(self, x: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1_1(self.conv1_1(x) + self.prob_encode(prob)))
        x = self.relu(self.bn1_2(self.conv1_2(x)))
        x = self.relu(self.bn1_3(self.conv1_3(x)))
        x = self.maxpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def sense_resnet(
    depth: int = 101, in_channels: int = 3, output_stride: int = 8, bn_momentum: float = 0.05
) -> SenseResNet:
    """Sense-ResNet-``depth`` with output stride 8 (paper) or 16."""
    if output_stride not in STRIDES_AND_DILATIONS:
        raise ValueError(f"output_stride {output_stride}: expected one of {sorted(STRIDES_AND_DILATIONS)}")
    strides, dilations = STRIDES_AND_DILATIONS[output_stride]
    return SenseResNet(depth, in_channels, strides, dilations, bn_momentum)
