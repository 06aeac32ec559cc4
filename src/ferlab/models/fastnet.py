"""FastNet: small students for the fast default (distilled from the ResNet-18 teacher).

A plain residual CNN for 48x48 gray faces, shaped for a CPU at batch 1: a stride-2 stem (48 -> 24),
then stages that each halve the map with a stride-2 basic block (two 3x3 convs, BN, ReLU, a 1x1
shortcut) and optionally add stride-1 blocks; global average pooling, dropout, a linear head. No
depthwise convolutions (on ONNX Runtime's CPU kernels at these sizes dense 3x3 convs cost less per
FLOP). Three registered sizes; their cost and accuracy are measured by benchmarks/fast_default.py.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


def conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout, stride), conv_bn(cout, cout)
        self.short = nn.Identity() if stride == 1 and cin == cout else conv_bn(cin, cout, stride, k=1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + self.short(x))


class FastNet(nn.Module):
    def __init__(self, widths=(16, 32, 64, 128), depths=(1, 1, 1), num_classes: int = 8, in_chans: int = 1,
                 drop_rate: float = 0.2):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(in_chans, widths[0], stride=2), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for w, d in zip(widths[1:], depths):
            layers += [BasicBlock(cin, w, 2)] + [BasicBlock(w, w, 1) for _ in range(d - 1)]
            cin = w
        self.stages = nn.Sequential(*layers)
        self.num_features, self.num_classes = cin, num_classes
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(self.drop(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def gradcam_layer(self) -> nn.Module:
        return self.stages[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(widths, depths, num_classes=8, in_chans=1, drop_rate=0.2, **_):
    return FastNet(widths, depths, num_classes, in_chans, drop_rate)


@register_model
def fastnet_s(**kwargs) -> FastNet:
    """The smallest student: 16-32-64-128 channels, one block per stage."""
    return _build((16, 32, 64, 128), (1, 1, 1), **kwargs)


@register_model
def fastnet_m(**kwargs) -> FastNet:
    """24-48-96-192 channels, two blocks in the middle stage."""
    return _build((24, 48, 96, 192), (1, 2, 1), **kwargs)


@register_model
def fastnet_l(**kwargs) -> FastNet:
    """32-64-128-256 channels, two blocks in the last two stages."""
    return _build((32, 64, 128, 256), (1, 2, 2), **kwargs)
