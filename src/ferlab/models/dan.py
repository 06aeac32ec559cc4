"""DAN: Distract your Attention Network (paper 001, Wen et al.): feature clustering, multi-head
cross attention, attention fusion.

    face -> FCN: ResNet-18 trunk without pool/classifier -> x' (512 x h x w)
         -> MAN: k independent cross attention heads, each
              spatial unit: 1x1 conv 512->256 (+BN), then 3x3, 1x3, 3x1 convs 256->512 (+BN) summed,
                            ReLU, summed over channels -> one map, multiplied into x'     (eq. 3)
              channel unit: global average pool -> Linear 512->32, BN, ReLU, Linear 32->512,
                            Sigmoid -> multiplied into the pooled vector                 (eq. 4)
         -> AFN: log-softmax across the k heads (eq. 5, when k > 1), sum over heads,
                 Linear 512->classes, BatchNorm1d on the logits

Training losses (ferlab.losses): cross-entropy + lambda1 * affinity (eq. 2; centres are the
model's `class_centres`, one per class of its label set) + lambda2 * partition (eq. 6).
`forward(x, return_aux=True)` gives what they need: logits, pooled backbone features, the heads'
outputs after the log-softmax, the centres.

Weights: the trunk loads from torchvision/timm ResNet-18 key names (the layout of the MS-Celeb-1M
`resnet18_msceleb.pth` the authors start from; its `fc` is left out); the whole model also loads
from the authors' own DAN checkpoints (`features.N`, `cat_headI.sa/ca`, `fc`, `bn`).
"""
from __future__ import annotations

import re

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model
from .weights import adapt_and_load, build_with_weights, read_state_dict, require_loaded


def _conv_bn(cin, cout, kernel, padding):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout))


class SpatialAttentionUnit(nn.Module):
    """Multi-scale convolutions -> one spatial map per image; returns (x * map, map)."""

    def __init__(self, channels: int = 512, reduced: int = 256):
        super().__init__()
        self.reduce = _conv_bn(channels, reduced, 1, 0)
        self.conv3x3 = _conv_bn(reduced, channels, 3, 1)
        self.conv1x3 = _conv_bn(reduced, channels, (1, 3), (0, 1))
        self.conv3x1 = _conv_bn(reduced, channels, (3, 1), (1, 0))

    def forward(self, x: torch.Tensor):
        y = self.reduce(x)
        y = F.relu(self.conv3x3(y) + self.conv1x3(y) + self.conv3x1(y))
        smap = y.sum(dim=1, keepdim=True)
        return x * smap, smap


class ChannelAttentionUnit(nn.Module):
    """A small auto-encoder over the pooled channels; returns pooled * sigmoid weights."""

    def __init__(self, channels: int = 512, hidden: int = 32):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        pooled = s.mean(dim=(2, 3))
        return pooled * self.fc(pooled)


class CrossAttentionHead(nn.Module):
    def __init__(self, channels: int = 512, reduced: int = 256, hidden: int = 32):
        super().__init__()
        self.spatial = SpatialAttentionUnit(channels, reduced)
        self.channel = ChannelAttentionUnit(channels, hidden)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor):
        s, smap = self.spatial(x)
        return self.channel(s), smap


class DAN(nn.Module):
    has_aux_outputs = True

    def __init__(self, num_classes: int = 7, in_chans: int = 3, num_heads: int = 4, backbone: str = "resnet18",
                 small_input: bool = False, drop_rate: float = 0.0):
        super().__init__()
        self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="",
                                          in_chans=in_chans)
        if small_input:  # small face crops (FER+ 48x48): no max-pool, final maps 1/16 instead of 1/32
            self.backbone.maxpool = nn.Identity()
        # train.init_from may name a trained ferlab model of the trunk's architecture: its trunk starts this one
        self.trunk_from = {backbone: "backbone."}
        self.num_features = c = self.backbone.num_features
        self.num_heads = int(num_heads)
        if self.num_heads < 1:
            raise ValueError("DAN needs at least one attention head")
        self.heads = nn.ModuleList([CrossAttentionHead(c) for _ in range(self.num_heads)])
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.classifier = nn.Linear(c, num_classes)
        self.classifier_bn = nn.BatchNorm1d(num_classes)
        # affinity / center loss centres (paper eq. 2: drawn from a Gaussian), one per class
        self.class_centres = nn.Parameter(torch.randn(num_classes, c))

    # -- timm-style model API ---------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def attend(self, feats: torch.Tensor):
        """MAN + the AFN's log-softmax: (heads (B, k, C), spatial maps (B, k, h, w))."""
        outs, maps = zip(*(h(feats) for h in self.heads))
        heads = torch.stack(outs, 1)
        if self.num_heads > 1:
            heads = F.log_softmax(heads, dim=1)
        return heads, torch.cat(maps, 1)

    def forward_head(self, heads: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        fused = self.drop(heads.sum(dim=1))
        return fused if pre_logits else self.classifier_bn(self.classifier(fused))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.classifier_bn = nn.BatchNorm1d(num_classes)
        self.class_centres = nn.Parameter(torch.randn(num_classes, self.num_features))

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        feats = self.forward_features(x)
        heads, maps = self.attend(feats)
        logits = self.forward_head(heads)
        if not return_aux:
            return logits
        return {"logits": logits, "features": feats.mean(dim=(2, 3)), "heads": heads, "head_maps": maps,
                "centres": self.class_centres}

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.layer4

    @torch.no_grad()
    def head_maps(self, x: torch.Tensor) -> torch.Tensor:
        """One spatial attention map per head, upsampled to the input: (B, k, H, W), each in [0, 1]."""
        _, maps = self.attend(self.forward_features(x))
        maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
        lo = maps.flatten(2).min(2).values[..., None, None]
        hi = maps.flatten(2).max(2).values[..., None, None]
        return (maps - lo) / (hi - lo).clamp_min(1e-12)


_AUTHORS_TRUNK = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_AUTHORS_HEAD = {"sa.conv1x1": "spatial.reduce", "sa.conv_3x3": "spatial.conv3x3", "sa.conv_1x3": "spatial.conv1x3",
                 "sa.conv_3x1": "spatial.conv3x1", "ca.attention": "channel.fc"}


def dan_key_map(key: str) -> str | None:
    """Keys of the authors' DAN checkpoint (`features.N`, `cat_headI.sa/ca...`, `fc`, `bn`) onto ferlab's."""
    m = re.match(r"features\.(\d+)\.(.*)", key)
    if m:
        return f"backbone.{_AUTHORS_TRUNK[m.group(1)]}.{m.group(2)}" if m.group(1) in _AUTHORS_TRUNK else None
    m = re.match(r"cat_head(\d+)\.(sa\.conv\w+|ca\.attention)\.(.*)", key)
    if m:
        return f"heads.{m.group(1)}.{_AUTHORS_HEAD[m.group(2)]}.{m.group(3)}"
    if key.startswith("fc."):
        return "classifier." + key[3:]
    if key.startswith("bn."):
        return "classifier_bn." + key[3:]
    return None


def torchvision_resnet_key_map(key: str) -> str | None:
    """torchvision / timm / MS-Celeb ResNet-18 keys onto the trunk; the classifier is left out."""
    if key.startswith("fc."):
        return None
    return "backbone." + key


def load_dan_weights(model: DAN, path) -> dict:
    sd = read_state_dict(path)
    if any(k.startswith(("features.", "cat_head")) for k in sd):
        key_map, what = dan_key_map, "DAN (authors' layout)"
    elif any(k.startswith(("backbone.", "heads.")) for k in sd):
        key_map, what = None, "ferlab DAN"
    else:
        key_map, what = torchvision_resnet_key_map, "ResNet trunk"
    report = adapt_and_load(model, sd, key_map)
    require_loaded(report, "backbone.", path, "ResNet trunk", f"read as {what}")
    return report


@register_model
def dan(**kwargs) -> DAN:
    """DAN with a ResNet-18 trunk and 4 cross attention heads (paper defaults)."""
    return build_with_weights(DAN, load_dan_weights, **kwargs)
