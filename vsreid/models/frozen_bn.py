"""Training through frozen BatchNorm at the cost of the convolutions alone.

A frozen BN (eval mode, not trained) after a convolution is a fixed per-channel affine map:
``BN(conv(x; w, b)) = conv(x; w * s, b * s + t)`` with ``s = g / sqrt(v + eps)`` and ``t = beta - m * s``. Inside
:func:`batchnorm_in_weights` each such pair runs as that one convolution, its weight and bias scaled in the graph, so
the parameters and their gradients are those of the conv as it is (the same training up to float rounding), while
autograd no longer keeps the BN's input (for one 321 px sample of the Lite network's image stream 189 instead of
261 MB), and there is no BN pass forward or backward (one finetuning step x1.25, ``bench/bench_speed.py --sections
finetune``).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .inference_graph import batchnorm_scale, conv_bn_pairs, probe_mp2s


class ConvFrozenBN(nn.Module):
    """``bn(conv(x))`` for a frozen ``bn``, computed as one convolution with weight ``w * s`` and bias
    ``b * s + t`` (``s``, ``t`` from ``bn``'s statistics and affine parameters, fixed). ``conv`` keeps its
    parameters: they train as they would before the BN."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d):
        super().__init__()
        if bn.training or any(p.requires_grad for p in bn.parameters()):
            raise ValueError("ConvFrozenBN: the BN must be frozen (eval mode, no trained parameters)")
        self.conv = conv
        with torch.no_grad():
            scale = batchnorm_scale(bn)
            self.register_buffer("scale", scale.clone())
            self.register_buffer("shift", bn.bias - bn.running_mean * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.shift if self.conv.bias is None else self.conv.bias * self.scale + self.shift
        return self.conv._conv_forward(x, self.conv.weight * self.scale.view(-1, 1, 1, 1), bias)


@contextmanager
def batchnorm_in_weights(net: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every frozen BN of MP2S ``net`` that directly follows a convolution is an ``nn.Identity``
    and its convolution a :class:`ConvFrozenBN`; afterwards ``net`` has its own modules back (the convolutions with
    whatever they learned meanwhile, the BNs as they were). The pairs are found by one small pass in eval mode (no
    statistics updated, no random draws). Yields ``net``."""
    modes = {m: m.training for m in net.modules()}
    net.eval()  # the probe pass: no BN statistics updated, no dropout drawn
    try:
        pairs = [(parent, name, conv, bn) for parent, name, conv, bn in conv_bn_pairs(net, probe_mp2s)
                 if not modes[bn] and not any(p.requires_grad for p in bn.parameters())]
    finally:
        for m, training in modes.items():
            m.training = training
    owner = {child: (parent, name) for parent in net.modules() for name, child in parent.named_children()}
    for parent, name, conv, bn in pairs:
        conv_parent, conv_name = owner[conv]
        setattr(conv_parent, conv_name, ConvFrozenBN(conv, bn))
        setattr(parent, name, nn.Identity())
    try:
        yield net
    finally:
        for parent, name, conv, bn in pairs:
            conv_parent, conv_name = owner[conv]
            setattr(conv_parent, conv_name, conv)
            setattr(parent, name, bn)
