"""Conv-cut (paper 004, Nan et al.): a truncated ConvNeXt-Base, the Detail Extraction block and
self-attention.

    face -> ConvNeXt-Base (timm) cut after `stages` stages (+ `blocks` blocks of the next stage,
            with its downsampling)                                   X (B, C, h, w)
         -> Detail Extraction (paper Algorithm 1):
              LayerNorm over channels
              separable conv k4 s4 -> separable conv k2 s2 (each depthwise k x k + pointwise 1x1,
                  `de_channels` = 256 filters, as the authors' code); `de_layers` = 1 / 2 / 3 of
                  the list (k4 s4, k2 s2, k2 s2) for paper Table 3
              spatial dropout 0.1 (whole channels), global average pooling -> y = [y_1 .. y_c]
              self-attention inside the sample: f = softmax(y y^T / sqrt(d)) y, the c channel
                  values being c tokens of dimension d = 1 (no learned projections, as written)
         -> dropout -> Linear -> classes

The authors' Keras code applies its attention to the (batch, channels) tensor, so every face
attends to the other faces of its batch (the bug the parent project PAtt-Lite admitted): a
prediction then depends on the batch it sits in. Here the attention runs inside each sample, the
paper's stated intent; `tests/test_convcut.py` checks that a face's output does not depend on its
batch. Maps smaller than a conv's kernel, or not a multiple of its stride, are zero-padded at the
bottom and right ("same"-style) so small inputs keep a valid shape.

Where to cut. The paper says both "the third and fourth stages are truncated" and "the first three
stages are retained"; the authors' code cuts inside stage 3. `stages` / `blocks` make the cut a
config value. Whole model (8 classes) at each cut: params, GFLOPs at 64x64 gray (the FER+ CPU
recipe) / at 224x224 RGB (the paper), and FER+ accuracy at one budget for every cut (trained from
scratch on the full train set for 2 epochs, best epoch on valid, test once; `python
benchmarks/ablations.py convcut`, benchmarks/results/convcut_ablations.json, 2-core Intel Xeon):

                                    params   GFLOPs        valid   test    s/epoch
    after stage 1                    0.52 M   0.21 / 2.64   37.0 %  35.4 %   245
    after stage 2 (default)          2.31 M   0.44 / 5.36   52.6 %  51.6 %   358
    stage 2 + 9 blocks of stage 3   22.0 M    1.06 / 13.1   49.4 %  47.0 %   565
    after stage 3                   60.3 M    2.29 / 28.0   49.3 %  47.3 %   890

The default (stages=2, blocks=0) is the best of the four on valid (and on test), with 1/10 to 1/26
of the deeper cuts' parameters and 1/2.4 to 1/5.2 of their FLOPs; cutting after stage 1 leaves too
little (at this budget it calls nearly every face neutral: test recall 0.96 neutral, 0.08
happiness). It is also the text's first reading and the
paper's motive (a small network for small FER datasets). The measurement is from scratch and short:
with frozen ImageNet weights (the paper's setting, not runnable offline here) the deeper cuts carry
more pretrained features and may rank otherwise.

Weights: `pretrained_file` = a ConvNeXt-Base checkpoint in timm's keys, the original facebook
layout (`downsample_layers`, `dwconv`, `pwconv`; converted by timm's filter) or torchvision's
(`features.N...`); the kept part loads, the cut part and the ImageNet head are dropped.
`freeze_backbone=True` is the paper's setting and needs such weights.
"""
from __future__ import annotations

import math
import re

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from .registry import register_model
from .weights import adapt_and_load, read_state_dict, require_loaded

DE_CONVS = ((4, 4), (2, 2), (2, 2))  # (kernel, stride) of the 1st, 2nd, 3rd separable conv


class SeparableConv2d(nn.Module):
    """Depthwise k x k conv (stride s) then a pointwise 1x1 conv, as Keras' SeparableConv2D;
    inputs smaller than the kernel or not a multiple of the stride are padded bottom/right."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.depthwise = nn.Conv2d(cin, cin, kernel, stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        th = max(self.kernel, math.ceil(h / self.stride) * self.stride - self.stride + self.kernel)
        tw = max(self.kernel, math.ceil(w / self.stride) * self.stride - self.stride + self.kernel)
        if th != h or tw != w:
            x = F.pad(x, (0, tw - w, 0, th - h))
        return self.pointwise(self.depthwise(x))


def channel_self_attention(y: torch.Tensor) -> torch.Tensor:
    """Algorithm 1's last line inside one sample: y (B, c) -> softmax(y y^T / sqrt(d)) y with the
    c channel values as tokens of dimension d = 1."""
    scores = y.unsqueeze(2) * y.unsqueeze(1)            # (B, c, c): y_i * y_j
    return torch.bmm(scores.softmax(-1), y.unsqueeze(2)).squeeze(2)


class DetailExtraction(nn.Module):
    def __init__(self, in_chans: int, channels: int = 256, layers: int = 2, dropout: float = 0.1,
                 attention: bool = True, enabled: bool = True):
        super().__init__()
        if not 1 <= layers <= len(DE_CONVS):
            raise ValueError(f"de_layers must be 1 to {len(DE_CONVS)}, not {layers}")
        self.enabled, self.attention = bool(enabled), bool(attention)
        if self.enabled:
            self.norm = LayerNorm2d(in_chans)
            convs, c = [], in_chans
            for k, s in DE_CONVS[:layers]:
                convs.append(SeparableConv2d(c, channels, k, s))
                c = channels
            self.convs = nn.Sequential(*convs)
            self.spatial_dropout = nn.Dropout2d(dropout)
        self.out_chans = channels if self.enabled else in_chans

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial_dropout(self.convs(self.norm(x))) if self.enabled else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.feature_map(x).mean(dim=(2, 3))          # eq. 1
        return channel_self_attention(y) if self.attention else y


class ConvCut(nn.Module):
    def __init__(self, num_classes: int = 7, in_chans: int = 3, stages: int = 2, blocks: int = 0,
                 de_channels: int = 256, de_layers: int = 2, de_dropout: float = 0.1, detail_extraction: bool = True,
                 self_attention: bool = True, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 freeze_backbone: bool = False, backbone: str = "convnext_base"):
        super().__init__()
        net = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans,
                                drop_path_rate=drop_path_rate)
        depths = [len(s.blocks) for s in net.stages]
        if not 1 <= stages <= len(depths) or (stages == len(depths) and blocks) or \
                (stages < len(depths) and not 0 <= blocks <= depths[stages]):
            raise ValueError(f"cut stages={stages}, blocks={blocks} does not fit {backbone} (depths {depths})")
        kept = list(net.stages[:stages])
        if blocks:
            nxt = net.stages[stages]
            nxt.blocks = nxt.blocks[:blocks]
            kept.append(nxt)
        self.backbone = nn.Sequential()
        self.backbone.add_module("stem", net.stem)
        self.backbone.add_module("stages", nn.Sequential(*kept))
        self.cut = {"stages": stages, "blocks": blocks}
        self.backbone_chans = c = net.feature_info[len(kept) - 1]["num_chs"]
        self.detail = DetailExtraction(c, de_channels, de_layers, de_dropout, self_attention, detail_extraction)
        self.num_features = self.detail.out_chans
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.freeze_backbone(freeze_backbone)

    def freeze_backbone(self, frozen: bool = True) -> None:
        """The paper's first stage: only the Detail Extraction block and the classifier train."""
        self.backbone_frozen = bool(frozen)
        self.backbone.requires_grad_(not frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "backbone_frozen", False):
            self.backbone.eval()  # frozen: no dropout paths / drop-path in the backbone either
        return self

    # -- timm-style model API ---------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        f = self.detail(x)
        return f if pre_logits else self.classifier(self.drop(f))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The features the classifier sees (paper Fig. 4's t-SNE input)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.stages[-1]


def torchvision_convnext_key_map(key: str) -> str | None:
    """torchvision ConvNeXt keys (features.N...) onto timm's; the classifier is dropped."""
    m = re.match(r"features\.0\.([01])\.(.*)", key)
    if m:
        return f"stem.{m.group(1)}.{m.group(2)}"
    m = re.match(r"features\.(\d+)\.(\d+)\.(.*)", key)
    if not m:
        return None
    n, j, rest = int(m.group(1)), int(m.group(2)), m.group(3)
    if n % 2 == 0:                                   # downsampling between stages: LayerNorm2d, conv
        return f"stages.{n // 2}.downsample.{j}.{rest}"
    stage = (n - 1) // 2
    if rest == "layer_scale":
        return f"stages.{stage}.blocks.{j}.gamma"
    sub = {"block.0": "conv_dw", "block.2": "norm", "block.3": "mlp.fc1", "block.5": "mlp.fc2"}
    for a, b in sub.items():
        if rest.startswith(a + "."):
            return f"stages.{stage}.blocks.{j}.{b}{rest[len(a):]}"
    return None


def load_convcut_weights(model: ConvCut, path) -> dict:
    from timm.models.convnext import checkpoint_filter_fn
    sd = read_state_dict(path)
    if any(k.startswith(("backbone.", "detail.")) for k in sd):      # a ferlab Conv-cut file
        report = adapt_and_load(model, sd)
    else:
        if any(k.startswith("features.") for k in sd):                 # torchvision
            sd = {torchvision_convnext_key_map(k): v for k, v in sd.items()}
            sd = {k: (v.flatten() if k.endswith(".gamma") else v) for k, v in sd.items() if k}
        else:                                                          # timm or facebook layout
            sd = checkpoint_filter_fn(sd, None)
        report = adapt_and_load(model, sd, lambda k: "backbone." + k if k.startswith(("stem.", "stages.")) else None)
    require_loaded(report, "backbone.", path, "ConvNeXt backbone",
                   "expected timm, facebook or torchvision convnext_base keys")
    return report


@register_model
def convcut(pretrained_file=None, **kwargs) -> ConvCut:
    """Conv-cut: ConvNeXt-Base cut after stage 2, Detail Extraction (2 separable convs, 256
    filters), self-attention inside each sample."""
    model = ConvCut(**kwargs)
    if pretrained_file:
        load_convcut_weights(model, pretrained_file)
    return model
