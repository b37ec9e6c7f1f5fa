"""The network as inference runs it: a copy with every BatchNorm that directly follows a convolution folded into it,
every in-place ReLU / ReLU6 that directly follows a convolution fused into it (one oneDNN call with the activation
as a post-op on CPU), its weights in channels_last memory order (each measured faster on CPU by
``bench/bench_speed.py``).

In eval mode ``BN(conv(x)) = conv'(x)`` with ``w' = w * g / sqrt(v + eps)`` (per output channel) and
``b' = (b - m) * g / sqrt(v + eps) + beta``. The pairs are found by running the network once and recording which
BN layers receive, unchanged, the output tensor of a conv; a BN fed by anything else (a sum, a concatenation) stays.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from .mp2s import MP2S


def inference_graph(net: nn.Module, in_place: bool = False) -> nn.Module:
    """What prediction runs for ``net``: for an MP2S, a :func:`folded_copy` with channels_last weights (same outputs
    within float32 rounding; convolutions then compute channels_last); any other module as it is. ``in_place``
    folds ``net`` itself instead of a copy (for a network nothing else holds, such as a finetuned copy)."""
    if not isinstance(net, MP2S):
        return net
    folded = fold_batchnorm(net, probe_mp2s) if in_place else folded_copy(net, probe_mp2s)
    return fuse_activations(folded, probe_mp2s).to(memory_format=torch.channels_last)


def probe_mp2s(net: MP2S) -> None:
    """Calls MP2S ``net`` once on a zero 65x65 sample (with a residual when it reads one): the ``run`` the functions
    below observe an MP2S's conv->BN and conv->activation pairs with."""
    weight, size = next(net.parameters()), (1, 1, 65, 65)
    kind = {"device": weight.device, "dtype": weight.dtype}
    residual = torch.zeros(size, **kind) if net.uses_residual else None
    net(torch.zeros((1, 3) + size[2:], **kind), torch.zeros((1, 2) + size[2:], **kind), torch.zeros(size, **kind),
        residual)


def folded_copy(net: nn.Module, run: Callable[[nn.Module], object]) -> nn.Module:
    """A copy of ``net`` in eval mode, without gradients, whose conv->BN pairs are folded (the BN replaced by
    ``nn.Identity``). ``run(module)`` calls the module on the kinds of input inference gives it (a small size will
    do), so that the pairs can be observed. ``net`` is unchanged. Folding assumes that a conv's output feeds only its
    BN, as in every conv-BN block of MP2S."""
    return fold_batchnorm(copy.deepcopy(net), run)


def fold_batchnorm(net: nn.Module, run: Callable[[nn.Module], object]) -> nn.Module:
    """:func:`folded_copy` done on ``net`` itself, which it puts in eval mode without gradients; returns it."""
    net.eval().requires_grad_(False)
    for parent, name, conv, bn in conv_bn_pairs(net, run):
        _fold_into(conv, bn)
        setattr(parent, name, nn.Identity())
    return net


def _conv_feeders(net: nn.Module, run: Callable[[nn.Module], object], consumes: Callable[[nn.Module], bool]
                  ) -> dict[nn.Module, list[nn.Conv2d | None]]:
    """For each module ``consumes`` picks, the convolution whose output tensor was its input in each of its calls in
    one ``run(net)`` (None for a call fed by anything else; an ``nn.Identity`` passes the tensor on unchanged)."""
    produced: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}  # the outputs are kept: no id is reused meanwhile
    fed: dict[nn.Module, list[nn.Conv2d | None]] = {}

    def after_conv(module, inputs, output):
        produced[id(output)] = (module, output)

    def before_consumer(module, inputs):
        fed.setdefault(module, []).append(produced.get(id(inputs[0]), (None, None))[0])

    hooks = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(after_conv))
        elif consumes(m):
            hooks.append(m.register_forward_pre_hook(before_consumer))
    try:
        with torch.no_grad():
            run(net)
    finally:
        for h in hooks:
            h.remove()
    return fed


def conv_bn_pairs(net: nn.Module, run: Callable[[nn.Module], object]):
    """(parent of the BN, its attribute name, conv, bn) for every BN whose input was one conv's output in every call
    of one run (a BN fed by anything else at least once is left)."""
    fed = _conv_feeders(net, run, lambda m: isinstance(m, nn.BatchNorm2d))
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            convs = fed.get(child, [None])
            if isinstance(child, nn.BatchNorm2d) and convs[0] is not None and convs.count(convs[0]) == len(convs):
                yield parent, name, convs[0], child


def batchnorm_scale(bn: nn.BatchNorm2d) -> torch.Tensor:
    """[C] the factor eval-mode ``bn`` multiplies its centred input by: ``g / sqrt(v + eps)``."""
    return bn.weight / torch.sqrt(bn.running_var + bn.eps)


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = batchnorm_scale(bn)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)


#: oneDNN convolution with a fused elementwise post-op (the op inductor emits for conv + activation on CPU).
_FUSED_CONV = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() \
    else None


class ConvActivation(nn.Module):
    """``activation(conv(x))`` for a ReLU (``kind`` "relu") or ReLU6 ("hardtanh"): on CPU one oneDNN call with the
    activation as a post-op (no second pass over the output; x1.1-1.8 on the memory-bound layers of the Lite
    network), elsewhere the two ops. Same values."""

    def __init__(self, conv: nn.Conv2d, kind: str):
        super().__init__()
        self.conv, self.kind = conv, kind
        self.scalars = [0.0, 6.0] if kind == "hardtanh" else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        cpu = x.device.type == "cpu" and x.dtype == torch.float32
        if _FUSED_CONV is not None and cpu and c.padding_mode == "zeros":
            return _FUSED_CONV(x, c.weight, c.bias, list(c.padding), list(c.stride), list(c.dilation), c.groups,
                               self.kind, self.scalars, "")
        out = c(x)
        return torch.relu_(out) if self.kind == "relu" else out.clamp_(0.0, 6.0)


def fuse_activations(net: nn.Module, run: Callable[[nn.Module], object]) -> nn.Module:
    """``net`` (eval mode, BN folded) with every in-place ReLU / ReLU6 module whose input is, in each of its calls in
    one ``run(net)``, the output of a convolution (directly or through an ``nn.Identity``) replaced by
    ``nn.Identity`` and those convolutions by :class:`ConvActivation`. In place only: nothing else can read the
    convolution's output before the activation overwrites it. Returns ``net``."""
    kinds = {nn.ReLU: "relu", nn.ReLU6: "hardtanh"}
    fed = _conv_feeders(net, run, lambda m: type(m) in kinds and m.inplace)
    fused = {act: convs for act, convs in fed.items() if all(c is not None for c in convs)}
    feeding = [c for convs in fused.values() for c in convs]
    fused = {act: convs for act, convs in fused.items() if all(feeding.count(c) == 1 for c in convs)}
    wrap = {conv: kinds[type(act)] for act, convs in fused.items() for conv in convs}
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if child in wrap:
                setattr(parent, name, ConvActivation(child, wrap[child]))
            elif child in fused:
                setattr(parent, name, nn.Identity())
    return net
