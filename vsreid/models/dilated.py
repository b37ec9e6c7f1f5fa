"""Dilated stride-1 convolutions whose backward pass is built from forward-speed operations.

On CPU, PyTorch's backward of a dilated convolution is 4-20x its forward (the depthwise 5x5 at dilation 2 of
EfficientNet-Lite0's last stages: 0.5 ms forward, 14 ms backward at 21x21 x 1152 channels; the ASPP branches at
dilations 6-24), where a convolution's backward should cost about two forwards. :class:`DilatedConv2d` computes the
same gradients another way (``bench/bench_speed.py --sections finetune`` gives the ratio):

- input gradient: the convolution of the output gradient with the flipped (and, dense, transposed) kernel at the same
  dilation and padding (a "same" convolution is its own transpose up to that flip);
- kernel gradient, depthwise: per channel, the correlation of the padded input with the output gradient taken at
  stride = dilation (one grouped convolution);
- kernel gradient, dense: one matrix product per kernel tap over the output pixels whose tap lands inside the input
  (taps entirely in the padding, most of them at dilation 18-24 on a 21x21 map, cost nothing).

The forward pass is ``F.conv2d`` itself, so outputs (and inference, and BatchNorm folding) are unchanged. Dense
convolutions at a dilation small against the map gain nothing (the ResNet stages' 3x3 at dilation 2-4 on 57x57:
x0.8-1.1), so the ResNet backbones keep ``nn.Conv2d``. Undilated, it pays for the depthwise 5x5 (EfficientNet-Lite0's
stride-1 5x5 at 21-41 px: x1.9-2.1 a backward, and PyTorch's takes 10-20x its usual time now and then; the Lite
finetuning step x1.04, session 30), not for the 3x3 (x0.1-0.35: its kernel gradient is a correlation with a kernel
as large as the map).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _SameDilatedConv(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, 1, padding, dilation, groups)`` with ``padding = dilation * (k - 1) // 2``."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding: int, dilation: int, groups: int):
        ctx.save_for_backward(x, weight)
        ctx.conf = padding, dilation, groups
        return F.conv2d(x, weight, bias, 1, padding, dilation, groups)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        padding, dilation, groups = ctx.conf
        depthwise = groups > 1
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            flipped = weight.flip(2, 3) if depthwise else weight.transpose(0, 1).flip(2, 3)
            grad_x = F.conv2d(grad, flipped, None, 1, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            grad_w = (_depthwise_kernel_grad if depthwise else _dense_kernel_grad)(x, grad, weight, padding, dilation)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None


def _depthwise_kernel_grad(x, grad, weight, padding: int, dilation: int) -> torch.Tensor:
    """[C,1,k,k]: per channel, sum over the batch of the padded input correlated with the output gradient at the
    kernel's tap offsets (stride = dilation). The batch is folded into the channels: one conv with C groups."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4).transpose(0, 1).reshape(1, c * n, h + 2 * padding, w + 2 * padding)
    kernels = grad.transpose(0, 1).reshape(c, n, h, w)
    return F.conv2d(padded, kernels, None, dilation, 0, 1, c).reshape(weight.shape)


def _dense_kernel_grad(x, grad, weight, padding: int, dilation: int) -> torch.Tensor:
    """[Co,Ci,k,k]: for each kernel tap, (output gradient)^T @ (input shifted by the tap) over the output pixels
    whose tap lands inside the input; taps that land only in the padding get 0."""
    n, ci, h, w = x.shape
    co, _, kh, kw = weight.shape
    out = weight.new_zeros(weight.shape)
    x_last, grad_last = x.permute(0, 2, 3, 1), grad.permute(0, 2, 3, 1)  # free views when channels_last
    for a in range(kh):
        dy = dilation * a - padding
        y0, y1 = max(0, -dy), min(h, h - dy)
        for b in range(kw):
            dx = dilation * b - padding
            x0, x1 = max(0, -dx), min(w, w - dx)
            if y0 < y1 and x0 < x1:
                g = grad_last[:, y0:y1, x0:x1].reshape(-1, co)
                out[:, :, a, b] = g.t() @ x_last[:, y0 + dy:y1 + dy, x0 + dx:x1 + dx].reshape(-1, ci)
    return out


class DilatedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state-dict keys) for stride-1 convolutions with "same" padding
    (odd ``kernel``, ``padding = dilation * (kernel - 1) // 2``), dense or depthwise, whose backward pass is
    :class:`_SameDilatedConv`'s. Without gradients, and under autocast, it is plain ``nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, groups: int = 1,
                 bias: bool = True):
        if groups not in (1, in_channels) or (groups > 1 and out_channels != in_channels) or kernel_size % 2 == 0:
            raise ValueError(f"DilatedConv2d: needs an odd kernel ({kernel_size}) and groups 1 or in_channels = "
                             f"out_channels (groups {groups}, {in_channels} -> {out_channels})")
        super().__init__(in_channels, out_channels, kernel_size, 1, dilation * (kernel_size - 1) // 2, dilation,
                         groups, bias)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        needs_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        if not torch.is_grad_enabled() or not needs_grad or torch.is_autocast_enabled(x.device.type):
            return super()._conv_forward(x, weight, bias)
        return _SameDilatedConv.apply(x, weight, bias, self.padding[0], self.dilation[0], self.groups)
