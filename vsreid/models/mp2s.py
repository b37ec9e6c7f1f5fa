"""MP2S: the two-stream (image + flow) mask propagation network of VS-ReID, and its optimisation helpers.

Image contract (the only place where it is applied): ``MP2S.forward`` takes the paper's **BGR, 0-255** image crop and
normalises it itself, per backbone family (see ``_IMAGE_NORMALISATION``):

- ``resnet*`` (paper): subtract the BGR mean (104, 117, 123), std 1, channels kept in BGR order;
- ``efficientnet_lite0``: reorder to RGB, scale to [0, 1], ImageNet mean/std (what the shipped ImageNet weights expect).

Flow is fed as raw pixel displacements (u, v), the prior as-is.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .aspp import ASPP
from .box import box_mean
from .efficientnet_lite import efficientnet_lite0
from .guided import GuidedFilter
from .refine import BoundaryRefiner
from .safe_load import load_checkpoint_file
from .sense_resnet import sense_resnet

#: Initial logit margin of the optional prior skip: with it the untrained network starts by copying its prior.
PRIOR_SKIP_GAIN = 2.0

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_lite0")

#: Backbone family -> (channel order applied to the BGR input, mean, std), both in 0-255 units of the reordered input.
_IMAGE_NORMALISATION = {
    "resnet": ((0, 1, 2), (104.0, 117.0, 123.0), (1.0, 1.0, 1.0)),
    "efficientnet": ((2, 1, 0), (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


def rgb_to_mp2s(rgb: torch.Tensor) -> torch.Tensor:
    """Project convention -> MP2S contract: RGB in [0, 1] ``[N,3,H,W]`` to BGR in 0-255 ``[N,3,H,W]``."""
    return rgb.flip(1) * 255.0


def _build_backbone(name: str, in_channels: int, output_stride: int, bn_momentum: float, pretrained: bool) -> nn.Module:
    if name == "efficientnet_lite0":
        return efficientnet_lite0(in_channels, output_stride, bn_momentum, pretrained=pretrained)
    return sense_resnet(int(name.removeprefix("resnet")), in_channels, output_stride, bn_momentum)


class MP2S(nn.Module):
    """Two-stream mask propagation network for one object crop.

    ``forward(image, flow, prior, residual=None) -> logits``:

    - ``image``: ``[N,3,H,W]`` float, BGR, 0-255 (normalised inside, see the module docstring);
    - ``flow``: ``[N,2,H,W]`` float, raw pixel displacements (u, v) from the current frame toward the source frame;
    - ``prior``: ``[N,1,H,W]`` float in [0, 1], the warped foreground probability of the object;
    - ``residual``: ``[N,1,H,W]`` float, 0-255, optional: the photometric residual of the warp that made the prior
      (see :func:`vsreid.data.warp.photometric_residual`; None or zeros where the prior was not warped);
    - ``logits``: ``[N,num_classes,H,W]`` (background, foreground), the sum of both streams' classifiers, upsampled
      bilinearly (``align_corners=True``) from stride ``output_stride``.

    Arguments are plain values (buildable from YAML). ``pretrained`` loads ImageNet weights into the image stream of
    ``efficientnet_lite0`` (no other backbone has offline weights; the flow stream always starts from scratch).
    ``bn_momentum`` is in PyTorch convention (the original's Caffe-style 0.95 is 0.05 here) and applies to all BN.
    While ``bn_frozen`` is set (see ``set_bn_frozen``), ``train()`` keeps the BN layers in eval mode.
    ``prior_skip`` (not in the paper; off for the paper config) adds a learnt 1x1 conv of ``2*prior-1`` to the
    full-resolution logits, so a briefly trained CPU model starts from copying its prior and learns corrections.
    ``refine_channels`` > 0 (not in the paper; ``efficientnet_lite0`` only) adds a :class:`BoundaryRefiner` that
    brings the summed logits to stride 2 with the image stream's early features, so boundaries can move by a pixel.
    ``boundary_band`` > 0 (not in the paper; needs ``prior_skip``) confines the network's correction of the prior to
    a band of that radius (input pixels) around the prior's boundary: the gate is ``clamp(8 b (1 - b), 0, 1)`` of
    the prior box-blurred over ``2 * boundary_band + 1`` pixels, so far inside and far outside the prior stay as they
    are. It keeps a network trained on few sequences from punching holes into objects whose colours it has not seen.
    ``residual_band`` > 0 (needs ``boundary_band``) widens the gate where the warp failed: wherever ``residual``
    exceeds ``residual_threshold`` (0-255), the gate is at least the same function of the prior box-blurred over
    ``2 * residual_band + 1`` pixels, so the network can move the boundary that far where the frames disagree after
    warping (occlusions, fast motion) while well-warped regions stay confined to the narrow band.
    ``refine_residual`` (not in the paper; needs ``refine_channels``) also hands the refiner ``residual / 64`` (zeros
    when None), so it can tell a prior the warp carried well from one it did not.
    ``guided_radius`` > 0 (not in the paper; 2 classes only) ends the network with a :class:`GuidedFilter` of its
    foreground probability under the image (window radius in input pixels, regularisation ``guided_eps``), which
    moves boundaries onto colour edges; the logits returned are then ``(0, logit(q))`` of the filtered probability q.
    With ``guided_in_training=False`` the filter applies in eval mode only: training fits the unfiltered output.
    """

    def __init__(
        self,
        backbone: str = "resnet101",
        output_stride: int = 8,
        aspp_channels: int = 512,
        aspp_dilations: Sequence[int] = (6, 12, 18, 24, 1),
        num_classes: int = 2,
        bn_momentum: float = 0.05,
        pretrained: bool = False,
        dropout: float = 0.1,
        prior_skip: bool = False,
        refine_channels: int = 0,
        refine_residual: bool = False,
        boundary_band: int = 0,
        residual_band: int = 0,
        residual_threshold: float = 20.0,
        guided_radius: int = 0,
        guided_eps: float = 1e-4,
        guided_in_training: bool = True,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone {backbone!r}: expected one of {BACKBONES}")
        if pretrained and backbone != "efficientnet_lite0":
            raise ValueError(f"pretrained=True: no offline ImageNet weights for {backbone!r}")
        if boundary_band and not prior_skip:
            raise ValueError(f"boundary_band={boundary_band} needs prior_skip=True (outside the band only the prior "
                             "skip is left)")
        if residual_band and not boundary_band:
            raise ValueError(f"residual_band={residual_band} needs boundary_band > 0 (it widens that gate)")
        if guided_radius and num_classes != 2:
            raise ValueError(f"guided_radius={guided_radius} needs num_classes=2, got {num_classes}")
        if refine_channels and backbone != "efficientnet_lite0":
            raise ValueError(f"refine_channels={refine_channels}: the boundary refiner needs efficientnet_lite0")
        if refine_residual and not refine_channels:
            raise ValueError("refine_residual=True needs the boundary refiner (refine_channels > 0)")
        # Registration order = the original's, so that even the state_dict key order matches.
        self.backbone = _build_backbone(backbone, 3, output_stride, bn_momentum, pretrained)
        self.flow_backbone = _build_backbone(backbone, 2, output_stride, bn_momentum, False)
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels, aspp_dilations, bn_momentum)
        self.flow_aspp = ASPP(self.flow_backbone.out_channels, aspp_channels, aspp_dilations, bn_momentum)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)
        self.flow_classifier = nn.Conv2d(aspp_channels, num_classes, 1)
        self.dropout = nn.Dropout2d(dropout)
        if prior_skip:
            self.prior_skip = nn.Conv2d(1, num_classes, 1)
            with torch.no_grad():
                self.prior_skip.weight.view(-1)[:] = torch.linspace(-PRIOR_SKIP_GAIN, PRIOR_SKIP_GAIN, num_classes)
                self.prior_skip.bias.zero_()
        else:
            self.prior_skip = None
        if refine_channels:
            low = self.backbone.low_level
            self.refiner = BoundaryRefiner(low[4][1], low[2][1], refine_channels, num_classes, bn_momentum,
                                           guide_channels=2 if refine_residual else 1)
        else:
            self.refiner = None
        for conv in (self.classifier, self.flow_classifier):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

        order, mean, std = _IMAGE_NORMALISATION["efficientnet" if backbone.startswith("efficientnet") else "resnet"]
        self.register_buffer("image_order", torch.tensor(order), persistent=False)
        self.register_buffer("image_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.refine_residual = refine_residual
        self.boundary_band = boundary_band
        self.residual_band = residual_band
        self.residual_threshold = residual_threshold
        self.guided = GuidedFilter(guided_radius, guided_eps) if guided_radius else None
        self.guided_in_training = guided_in_training
        self.bn_frozen = False

    def forward(self, image: torch.Tensor, flow: torch.Tensor, prior: torch.Tensor,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        x = (image.index_select(1, self.image_order) - self.image_mean) / self.image_std
        if self.refiner is not None:
            features, low4, low2 = self.backbone.forward_pyramid(x, prior)
        else:
            features = self.backbone(x, prior)
        logits = self.classifier(self.dropout(self.aspp(features)))
        logits = logits + self.flow_classifier(self.dropout(self.flow_aspp(self.flow_backbone(flow, prior))))
        if self.refiner is not None:
            guide = prior
            if self.refine_residual:
                guide = torch.cat([prior, torch.zeros_like(prior) if residual is None else residual / 64.0], 1)
            logits = self.refiner(logits, low4, low2, guide)
        logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True)
        if self.boundary_band:
            logits = logits * self.band_gate(prior, residual)
        if self.prior_skip is not None:
            logits = logits + self.prior_skip(2.0 * prior - 1.0)
        if self.guided is not None and (self.guided_in_training or not self.training):
            logits = self._guided_logits(image, logits)
        return logits

    def _guided_logits(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Logits ``(0, logit(q))`` [N,2,H,W] of the foreground probability guided-filtered under the image."""
        q = self.guided(image / 255.0, torch.softmax(logits.float(), 1)[:, 1:]).clamp(1e-4, 1 - 1e-4)
        return torch.cat([torch.zeros_like(q), torch.log(q) - torch.log1p(-q)], 1)

    @property
    def uses_residual(self) -> bool:
        """Whether ``forward`` reads ``residual`` (``refine_residual`` or ``residual_band``); the paper config does
        not, and then callers need not compute it."""
        return self.refine_residual or self.residual_band > 0

    def band_gate(self, prior: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``[N,1,H,W]`` in [0, 1]: 1 near the prior's boundary, 0 beyond ``boundary_band`` pixels from it; where
        ``residual`` > ``residual_threshold``, the band of radius ``residual_band`` instead (when set)."""
        return band_gate(prior, self.boundary_band, residual, self.residual_band, self.residual_threshold)

    def train(self, mode: bool = True) -> MP2S:
        super().train(mode)
        if self.bn_frozen:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    @classmethod
    def from_original(cls, path: str | Path, map_location="cpu", backbone: str = "resnet101") -> MP2S:
        """Load a released ``MP2S.pth.tar`` (``{'state_dict': ...}``, PyTorch 0.4) into the paper config, in eval mode.

        Only missing ``num_batches_tracked`` buffers are back-filled (with 0); any other missing/unexpected key or
        shape mismatch raises ``ValueError`` naming the file. ``backbone`` exists so tests can use a small depth.
        Loaded weights-only (with the legacy metadata types admitted): a file that would run code is refused
        (:mod:`vsreid.models.safe_load`).
        """
        path = Path(path)
        checkpoint = load_checkpoint_file(path, map_location, legacy=True)
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
            raise ValueError(f"{path}: expected a dict with a 'state_dict' entry (the original MP2S.pth.tar format)")
        state = dict(checkpoint["state_dict"])

        model = cls(backbone=backbone)
        expected = model.state_dict()
        for key, value in expected.items():
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = torch.zeros_like(value)
        missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
        if missing or unexpected:
            raise ValueError(
                f"{path}: not an MP2S-{backbone} checkpoint; "
                f"missing keys ({len(missing)}): {_truncate(missing)}; unexpected keys ({len(unexpected)}): "
                f"{_truncate(unexpected)}"
            )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path}: not an MP2S-{backbone} checkpoint: {err}") from None
        return model.eval()


def band_gate(prior: torch.Tensor, band: int, residual: torch.Tensor | None = None, residual_band: int = 0,
              residual_threshold: float = 20.0) -> torch.Tensor:
    """:meth:`MP2S.band_gate` of a network with these settings: ``[N,1,H,W]`` in [0, 1], open within ``band``
    pixels of the prior's boundary and, where ``residual`` > ``residual_threshold``, within ``residual_band``."""
    gate = _band(prior, band)
    if residual_band and residual is not None:
        gate = torch.maximum(gate, _band(prior, residual_band) * (residual > residual_threshold))
    return gate.to(prior.dtype)


def _band(prior: torch.Tensor, radius: int) -> torch.Tensor:
    """``clamp(8 b (1 - b), 0, 1)`` of the prior ``[N,1,H,W]`` box-blurred over ``2 * radius + 1`` pixels (float32;
    the mean over the window's part inside the image, see :func:`vsreid.models.box.box_mean`)."""
    blurred = box_mean(prior.float(), radius)
    return (8 * blurred * (1 - blurred)).clamp(0, 1)


def _truncate(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def mp2s_param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups of the original policy, for any module made of convs and BN layers.

    Conv weights: ``lr``, ``weight_decay``; conv biases: ``2*lr``, no decay; BN weight/bias: ``lr``, ``weight_decay``.
    Groups carry a ``name``. Raises ``ValueError`` if a parameter is in neither a conv nor a BN layer.
    """
    groups = {
        "conv weight": {"params": [], "lr": lr, "weight_decay": weight_decay},
        "conv bias": {"params": [], "lr": 2 * lr, "weight_decay": 0.0},
        "bn": {"params": [], "lr": lr, "weight_decay": weight_decay},
    }
    covered = set()
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            groups["conv weight"]["params"].append(m.weight)
            if m.bias is not None:
                groups["conv bias"]["params"].append(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            groups["bn"]["params"] += list(m.parameters(recurse=False))
        else:
            continue
        covered.update(id(p) for p in m.parameters(recurse=False))
    other = [name for name, p in module.named_parameters() if id(p) not in covered]
    if other:
        raise ValueError(f"parameters outside conv/BN layers have no policy: {_truncate(other)}")
    return [{"name": name, **group} for name, group in groups.items() if group["params"]]


def set_bn_frozen(module: nn.Module, frozen: bool) -> None:
    """Freeze (eval mode, ``requires_grad=False``) or unfreeze every BN layer of ``module``.

    MP2S instances inside ``module`` remember the setting so that a later ``train()`` keeps BN frozen; for other
    modules call this again after ``train()``.
    """
    for m in module.modules():
        if isinstance(m, MP2S):
            m.bn_frozen = frozen
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train(not frozen and module.training)
            m.requires_grad_(not frozen)
