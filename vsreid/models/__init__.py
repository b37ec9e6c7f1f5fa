"""Networks (torch; OpenCV only for the CPU inference box mean): the MP2S propagation network, its backbones and
optimisation helpers."""

from .aspp import ASPP
from .efficientnet_lite import EfficientNetLite0, efficientnet_lite0, imagenet_weights_path, load_imagenet_weights
from .guided import GuidedFilter
from .mp2s import BACKBONES, MP2S, mp2s_param_groups, rgb_to_mp2s, set_bn_frozen
from .sense_resnet import SenseResNet, sense_resnet

__all__ = [
    "ASPP",
    "BACKBONES",
    "EfficientNetLite0",
    "GuidedFilter",
    "MP2S",
    "SenseResNet",
    "efficientnet_lite0",
    "imagenet_weights_path",
    "load_imagenet_weights",
    "mp2s_param_groups",
    "rgb_to_mp2s",
    "sense_resnet",
    "set_bn_frozen",
]
