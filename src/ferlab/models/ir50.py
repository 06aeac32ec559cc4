"""IR-50: the face-recognition ResNet-50 with "improved residual" units (ArcFace / face.evoLVe),
the image backbone of POSTER and paper 003 (PCDA).

    stem: 3x3 conv s1, BN, PReLU (64 ch)
    unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (stride s) -> BN, + shortcut (1x1 conv s + BN when
          the width changes, else a stride-s subsample)
    stages of 3, 4, 14, 3 units, widths 64, 128, 256, 512, each starting with stride 2

At 112x112 input the first three stages give a 14x14x256 map, which is what PCDA uses
(`num_stages=3`, POSTER's choice too). Weights load from the two layouts users have: ir50.pth
(`input_layer.N`, `body.N.res_layer.M`, `body.N.shortcut_layer.M`, `output_layer.*` dropped) and
POSTER V2's re-saved copy (`body1.N` / `body2.N` / `body3.N`).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn

STAGE_UNITS = (3, 4, 14, 3)
STAGE_WIDTHS = (64, 128, 256, 512)


class IRUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if cin == cout:
            self.shortcut = nn.MaxPool2d(1, stride)  # a 1x1 max-pool with stride: plain subsampling
        else:
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", nn.Conv2d(cin, cout, 1, stride, bias=False))
            self.shortcut.add_module("bn", nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.bn2(self.conv2(self.prelu(self.conv1(self.bn1(x))))) + self.shortcut(x)


class IR50(nn.Module):
    """IR-50 trunk. `forward` -> the last kept stage's map (B, C, H/2^num_stages, W/2^num_stages)."""

    def __init__(self, in_chans: int = 3, num_stages: int = 3, stage_units=STAGE_UNITS):
        super().__init__()
        if not 1 <= num_stages <= len(stage_units):
            raise ValueError(f"IR-50 has {len(stage_units)} stages; num_stages={num_stages}")
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False))
        self.stem.add_module("bn", nn.BatchNorm2d(64))
        self.stem.add_module("prelu", nn.PReLU(64))
        units, cin = [], 64
        for n, width in zip(stage_units[:num_stages], STAGE_WIDTHS):
            for i in range(n):
                units.append(IRUnit(cin, width, 2 if i == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*units)
        self.num_features = cin
        self.reduction = 2 ** num_stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))


_RES_LAYER = {"0": "bn1", "1": "conv1", "2": "prelu", "3": "conv2", "4": "bn2"}
_STEM = {"0": "conv", "1": "bn", "2": "prelu"}
_SHORTCUT = {"0": "conv", "1": "bn"}


def ir50_key_map(key: str, prefix: str = "") -> str | None:
    """ir50.pth / POSTER V2 keys onto IR50's (under `prefix`); the recognition head is dropped."""
    m = re.match(r"input_layer\.(\d)\.(.*)", key)
    if m:
        return f"{prefix}stem.{_STEM[m.group(1)]}.{m.group(2)}" if m.group(1) in _STEM else None
    m = re.match(r"body(\d?)\.(\d+)\.(res_layer|shortcut_layer)\.(\d)\.(.*)", key)
    if not m:
        return None
    stage, idx, part, sub, rest = m.groups()
    unit = int(idx) + (sum(STAGE_UNITS[:int(stage) - 1]) if stage else 0)
    names = _RES_LAYER if part == "res_layer" else _SHORTCUT
    if sub not in names:
        return None
    where = names[sub] if part == "res_layer" else f"shortcut.{names[sub]}"
    return f"{prefix}blocks.{unit}.{where}.{rest}"
