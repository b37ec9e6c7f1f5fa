"""ImageNet ResNet weights for the Sense-ResNet streams of the paper MP2S, from a torchvision or timm state dict.

The layers (``layer1``..``layer4``) have the same names in all three layouts. The stem differs: timm's deep-stem
ResNets with a 64-64-128 stem (``resnet*s``, ``gluon_resnet*_v1s``) name it ``conv1.0/1/3/4/6`` and ``bn1`` and map
one to one onto ``conv1_1/bn1_1/conv1_2/bn1_2/conv1_3/bn1_3``; torchvision's single 7x7 ``conv1`` has no counterpart,
so with it the stem and the two first-block convs that read the 128-channel stem keep their initialisation. The flow
stream gets the same weights with its first conv adapted to two input channels (the mean of the RGB kernels, the
cross-modality initialisation of two-stream networks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from vsreid.data.errors import DataError

from .safe_load import load_checkpoint_file

TIMM_DEEP_STEM = {"conv1.0": "conv1_1", "conv1.1": "bn1_1", "conv1.3": "conv1_2", "conv1.4": "bn1_2",
                  "conv1.6": "conv1_3", "bn1": "bn1_3"}
MIN_SHARE = 0.9  # of a stream's layer tensors that must be found in the file


@dataclass
class BackboneLoad:
    """What ``load_backbone_weights`` did: tensors loaded per stream, and stream tensors that kept their init."""

    loaded: dict[str, int] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)


def _renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys in Sense-ResNet names: the timm deep stem renamed, everything else as it is."""
    out = {}
    for key, value in state.items():
        for old, new in TIMM_DEEP_STEM.items():
            if key.startswith(old + "."):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def load_backbone_weights(net: nn.Module, path: str | Path) -> BackboneLoad:
    """Load an ImageNet ResNet state dict (torchvision or timm layout, optionally under ``state_dict``/``model``)
    into ``net.backbone`` and ``net.flow_backbone`` (Sense-ResNets) in place; raises :class:`DataError` naming the
    file when it is not a ResNet of the streams' depth (under 90% of their layer tensors fit)."""
    state = load_checkpoint_file(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not any(str(k).startswith("layer1.") for k in state):
        raise DataError(path, "not a ResNet state dict (no layer1.* weights; expected torchvision or timm layout)")
    weights = _renamed({str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)})
    report = BackboneLoad()
    for name in ("backbone", "flow_backbone"):
        stream = getattr(net, name)
        if not hasattr(stream, "layer1"):
            raise DataError(path, f"backbone weights are for ResNet streams; this network's {name} is "
                                  f"{type(stream).__name__}")
        target = stream.state_dict()
        loaded = 0
        for key, tensor in target.items():
            value = weights.get(key)
            if value is not None and key == "conv1_1.weight" and value.shape[1] != tensor.shape[1]:
                value = value.mean(1, keepdim=True).expand(-1, tensor.shape[1], -1, -1)  # flow: 2 input channels
            if value is None or value.shape != tensor.shape:
                report.kept.append(f"{name}.{key}")
                continue
            tensor.copy_(value.to(tensor.dtype))
            loaded += 1
        layers = [k for k in target if k.startswith("layer")]
        fitted = sum(f"{name}.{k}" not in report.kept for k in layers)
        if fitted < MIN_SHARE * len(layers):
            raise DataError(path, f"only {fitted} of the {len(layers)} layer tensors of {name} fit: not an ImageNet "
                                  f"ResNet of this depth")
        report.loaded[name] = loaded
    return report
