"""ResNet baselines from timm, adapted to small face crops.

FER crops are small (FER+ is 48x48). A standard ResNet stem (7x7 stride-2 conv + max-pool) shrinks
a 48x48 face to 12x12 before the first block; `small_input=True` drops the max-pool so the
first stage works at 1/2 resolution instead of 1/4 (final maps 3x3 at 48x48). Weights from
timm/torchvision ResNet checkpoints load by key name (their key names are the same), with the
first conv averaged over colour channels for gray input.
"""
from __future__ import annotations

import timm
import torch.nn as nn

from .layers import TimmClassifier
from .registry import register_model
from .weights import load_pretrained_file


class ResNetFER(TimmClassifier):
    def __init__(self, arch: str = "resnet18", num_classes: int = 8, in_chans: int = 1,
                 small_input: bool = True, drop_rate: float = 0.0):
        super().__init__()
        self._wrap(timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                     drop_rate=drop_rate), num_classes)
        if small_input:
            self.net.maxpool = nn.Identity()

    def gradcam_layer(self) -> nn.Module:
        return self.net.layer4


def _build(arch, num_classes=8, in_chans=1, small_input=True, drop_rate=0.0, pretrained_file=None, **_):
    model = ResNetFER(arch, num_classes, in_chans, small_input, drop_rate)
    if pretrained_file:
        load_pretrained_file(model.net, pretrained_file, skip_prefixes=("fc.",))
    return model


@register_model
def resnet18(**kwargs) -> ResNetFER:
    """ResNet-18 baseline (timm), small-input stem by default."""
    return _build("resnet18", **kwargs)


@register_model
def resnet34(**kwargs) -> ResNetFER:
    return _build("resnet34", **kwargs)
