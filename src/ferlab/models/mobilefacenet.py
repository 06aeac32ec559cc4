"""MobileFaceNet as a 68-point landmark regressor (Chen et al. 2018's network, as used for landmarks by
cunjian/pytorch_face_landmark and, frozen, by POSTER and paper 003 / PCDA).

    face crop 112x112 (3 channels; gray faces are repeated to 3)
      conv1 3x3 s2 -> conv2_dw -> conv_23 (s2) -> conv_3 (4 residual bottlenecks, 28x28x64)
      -> conv_34 (s2) -> conv_4 (6 residual bottlenecks, 14x14x128)   <- PCDA's landmark feature
      -> conv_45 (s2) -> conv_5 (2 bottlenecks, 7x7x128) -> conv_6_sep 1x1 -> 512
      -> GDC head: 7x7 depthwise conv, Linear 512 -> 136, BatchNorm1d -> 68 (x, y)

Outputs are (x, y) in [0, 1] of the crop (x / width, y / height), in dlib's 68-point order, which is
what the public checkpoints (mobilefacenet_model_best.pth.tar, keys `conv1.conv.weight`, ...,
`output_layer.linear.weight`, inside a 'state_dict') predict; module names here follow that layout,
so those files load by stripping their containers. ferlab trains its own with
`ferlab landmarks train` (dlib's points on the training faces as targets).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .weights import adapt_and_load, build_with_weights, read_state_dict, require_loaded

INPUT_SIZE = 112


class ConvBNPReLU(nn.Module):
    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)

    def forward(self, x):
        return self.prelu(self.bn(self.conv(x)))


class ConvBN(nn.Module):
    """A linear (activation-free) conv + BN: the projection of an inverted bottleneck."""

    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class InvertedBottleneck(nn.Module):
    """1x1 expand to `hidden`, 3x3 depthwise (stride s), 1x1 linear projection; + input if residual."""

    def __init__(self, cin, cout, hidden, stride=1, residual=False):
        super().__init__()
        self.conv = ConvBNPReLU(cin, hidden)
        self.conv_dw = ConvBNPReLU(hidden, hidden, 3, stride, 1, groups=hidden)
        self.project = ConvBN(hidden, cout)
        self.residual = residual

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class ResidualStage(nn.Module):
    def __init__(self, channels, num_blocks, hidden):
        super().__init__()
        self.model = nn.Sequential(*[InvertedBottleneck(channels, channels, hidden, 1, True) for _ in range(num_blocks)])

    def forward(self, x):
        return self.model(x)


class GDCHead(nn.Module):
    """Global depthwise conv over the 7x7 map, then a linear layer to the 136 coordinates."""

    def __init__(self, channels=512, outputs=136):
        super().__init__()
        self.conv_6_dw = ConvBN(channels, channels, 7, 1, 0, groups=channels)
        self.linear = nn.Linear(channels, outputs, bias=False)
        self.bn = nn.BatchNorm1d(outputs)

    def forward(self, x):
        return self.bn(self.linear(self.conv_6_dw(x).flatten(1)))


class MobileFaceNetLandmarks(nn.Module):
    """68-point regressor; `forward` -> (B, 68, 2) in [0, 1] of the 112x112 input."""
    input_size = INPUT_SIZE
    STAGE_CHANNELS = {"conv_3": 64, "conv_4": 128, "conv_5": 128, "conv_6_sep": 512}

    def __init__(self, num_points: int = 68, in_chans: int = 3):
        super().__init__()
        self.num_points = num_points
        self.in_chans = in_chans
        self.conv1 = ConvBNPReLU(in_chans, 64, 3, 2, 1)
        self.conv2_dw = ConvBNPReLU(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = InvertedBottleneck(64, 64, 128, stride=2)
        self.conv_3 = ResidualStage(64, 4, 128)
        self.conv_34 = InvertedBottleneck(64, 128, 256, stride=2)
        self.conv_4 = ResidualStage(128, 6, 256)
        self.conv_45 = InvertedBottleneck(128, 128, 512, stride=2)
        self.conv_5 = ResidualStage(128, 2, 256)
        self.conv_6_sep = ConvBNPReLU(128, 512)
        self.output_layer = GDCHead(512, 2 * num_points)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Any (B, 1 or 3, H, W) face crop -> the network's (B, in_chans, 112, 112) input."""
        if x.shape[1] != self.in_chans:
            if x.shape[1] == 1:
                x = x.expand(-1, self.in_chans, -1, -1)
            elif self.in_chans == 1:
                x = x.mean(1, keepdim=True)
            else:
                raise ValueError(f"landmark net: {x.shape[1]}-channel input, expected 1 or {self.in_chans}")
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return x

    def forward_features(self, x: torch.Tensor, stage: str = "conv_6_sep") -> torch.Tensor:
        """The feature map after `stage` (conv_3: 28x28x64, conv_4: 14x14x128, conv_5 / conv_6_sep: 7x7)."""
        x = self.conv_23(self.conv2_dw(self.conv1(self.prepare(x))))
        x = self.conv_3(x)
        if stage == "conv_3":
            return x
        x = self.conv_4(self.conv_34(x))
        if stage == "conv_4":
            return x
        x = self.conv_5(self.conv_45(x))
        if stage == "conv_5":
            return x
        if stage != "conv_6_sep":
            raise ValueError(f"unknown stage {stage!r}; one of conv_3, conv_4, conv_5, conv_6_sep")
        return self.conv_6_sep(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.forward_features(x)).view(-1, self.num_points, 2)


def load_mobilefacenet_weights(model: MobileFaceNetLandmarks, path) -> dict:
    """The public mobilefacenet_model_best.pth.tar layout (and ferlab's own files): same key names
    inside a 'state_dict' / 'module.' container, which read_state_dict strips."""
    sd = read_state_dict(path)
    sd = {k[len("landmark_net."):] if k.startswith("landmark_net.") else k: v for k, v in sd.items()}
    report = adapt_and_load(model, sd)
    require_loaded(report, "", path, "MobileFaceNet", "expected the mobilefacenet_model_best.pth.tar layout")
    return report


def mobilefacenet_landmarks(pretrained_file=None, **kwargs) -> MobileFaceNetLandmarks:
    """MobileFaceNet 68-point landmark regressor (112x112 input), e.g. for PCDA's landmark branch.
    Not in the emotion-model registry: it predicts points, not classes."""
    return build_with_weights(MobileFaceNetLandmarks, load_mobilefacenet_weights, pretrained_file, **kwargs)


LANDMARK_NORM = {"mean": 0.5, "std": 0.5}  # the landmark net's one input convention


@torch.no_grad()
def predict_points(net, imgs_u8: np.ndarray, batch_size: int = 256, device="cpu") -> np.ndarray:
    """(N, 1 or 3, S, S) uint8 crops -> (N, 68, 2) points in their pixels (the net's one input
    convention: standardised as (x / 255 - 0.5) / 0.5, gray repeated to 3 channels by the net)."""
    net.eval()
    out = []
    for i in range(0, len(imgs_u8), batch_size):
        x = (torch.from_numpy(imgs_u8[i:i + batch_size]).to(device).float() / 255.0 - LANDMARK_NORM["mean"]) / LANDMARK_NORM["std"]
        out.append((net(x) * imgs_u8.shape[-1] - 0.5).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 68, 2), np.float32)
