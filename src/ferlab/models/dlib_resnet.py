"""dlib's face-recognition ResNet as a FER backbone, read from dlib's own weights file.

dlib's `dlib_face_recognition_resnet_model_v1.dat` (public domain; shipped in the
`face-recognition-models` wheel ferlab installs for its 68-point landmarks) holds a 29-layer
ResNet trained on about 3 million faces to map a 150x150 RGB face chip to a 128-D identity
descriptor. Its layout, from dlib's `dnn_face_recognition_ex.cpp`:

    stem      conv 7x7/2 (32) - affine - relu - max-pool 3x3/2
    level 4   3 residual blocks, 32 channels
    level 3   1 down block + 3 blocks, 64        a block: conv 3x3 - affine - relu - conv 3x3 - affine,
    level 2   1 down block + 2 blocks, 128       added to its input, then relu; a down block's first
    level 1   1 down block + 2 blocks, 256       conv has stride 2 and its input is 2x2 average-pooled
    level 0   1 down block, 256                  before the sum
    head      global average pool (256) - fc 128 without bias

Three dlib details matter for a faithful copy: a stride-2 conv or pool has no padding (a stride-1
3x3 conv pads 1); a sum of two maps of different sizes is taken over the larger size with the
smaller one zero-padded at the end (more channels, and at some input sizes one more row and column);
"affine" is batch norm folded into a per-channel scale and shift. dlib feeds (pixel - channel mean)
/ 256, i.e. in ferlab's terms norm mean (122.782, 117.001, 104.298) / 255 and std 256 / 255.

The weights file is dlib's serialisation (a recursive stream of layer records whose tensors are raw
little-endian float32). `read_dlib_network` parses it with no code from dlib and no unpickling;
`DlibFaceResNet` checks every layer's kind and shape against the layout above before copying, and
its 128-D output matches `dlib.face_recognition_model_v1.compute_face_descriptor` on real faces
(tests/test_dlib_resnet.py). For FER, `dlib_resnet29` puts a new head on the 256 pooled features:

    model: {name: dlib_resnet29, kwargs: {pretrained_file: dlib, drop_rate: 0.2}}
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model
from .weights import WeightsError

DLIB_WHEEL = "face_recognition_models"
DLIB_FILE = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image defaults, in pixel values
DLIB_NORM = {"mean": [m / 255 for m in DLIB_MEAN_RGB], "std": 256 / 255}  # the same in ferlab's [0, 1] terms
# (channels, blocks, whether the first block goes down), input side first
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
MIN_SIZE = 104  # below this the last down block's unpadded 3x3 conv has less than 3x3 to read


def dlib_weights_path() -> Path:
    """The face-recognition network inside the installed `face-recognition-models` wheel, found
    without importing the package (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec(DLIB_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError("pretrained_file: dlib needs the wheel face-recognition-models (pip install face-recognition-models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / DLIB_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: the wheel face-recognition-models holds no {DLIB_FILE}")
    return path


# ---- dlib's serialisation ----------------------------------------------------------------------

@dataclass
class DlibLayer:
    kind: str  # dlib's record name without its version suffix: con, affine, relu, max_pool, avg_pool, add_prev, fc
    params: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


class _Stream:
    def __init__(self, data: bytes, path):
        self.b, self.p, self.path = data, 0, path

    def fail(self, what: str):
        raise WeightsError(f"{self.path}: not a dlib network file this reader knows ({what} at byte {self.p})")

    def int(self) -> int:
        """dlib's integer: one byte holding the byte count (and 0x80 for a negative value), then
        that many little-endian bytes."""
        if self.p >= len(self.b):
            self.fail("unexpected end of file")
        head = self.b[self.p]
        n = head & 0x0F
        if n > 8 or self.p + 1 + n > len(self.b):
            self.fail("a malformed integer")
        v = int.from_bytes(self.b[self.p + 1:self.p + 1 + n], "little")
        self.p += 1 + n
        return -v if head & 0x80 else v

    def tensor(self) -> np.ndarray:
        """A tensor record: version 2, the four dimensions (n, k, nr, nc), raw float32."""
        if self.int() != 2:
            self.fail("a tensor record of an unknown version")
        dims = [self.int() for _ in range(4)]
        count = int(np.prod(dims))
        if min(dims) < 0 or self.p + 4 * count > len(self.b):
            self.fail("a tensor larger than the file")
        arr = np.frombuffer(self.b, dtype="<f4", count=count, offset=self.p).astype(np.float32)
        self.p += 4 * count
        return arr.reshape(dims)


# layer records this reader parses, by dlib's record name
_RECORD = re.compile(rb"\x01([\x03-\x18])(con_4|affine_|relu_|max_pool_2|avg_pool_2|add_prev_|fc_2|"
                     rb"input_rgb_image_sized|loss_metric_2)")


def read_dlib_network(path) -> list[DlibLayer]:
    """The layers of a dlib DNN file, input side first. Records are found in stream order: the
    bytes between two records hold only small version numbers and flags, and each record's tensor
    is stepped over by its stated size, so weight bytes are never searched."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    s = _Stream(path.read_bytes(), path)
    layers: list[DlibLayer] = []
    while True:
        m = _RECORD.search(s.b, s.p)
        if m is None:
            break
        if m.group(1)[0] != len(m.group(2)):
            s.p = m.start() + 1
            continue
        name = m.group(2).decode()
        s.p = m.end()
        if name == "con_4":
            params = s.tensor()
            meta = dict(zip(("filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"),
                            (s.int() for _ in range(7))))
            layers.append(DlibLayer("con", params.ravel(), meta))
        elif name == "affine_":
            layers.append(DlibLayer("affine", s.tensor().ravel()))
        elif name == "fc_2":
            outputs, inputs = s.int(), s.int()
            layers.append(DlibLayer("fc", s.tensor().ravel(), {"outputs": outputs, "inputs": inputs}))
        elif name in ("max_pool_2", "avg_pool_2"):
            meta = dict(zip(("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"), (s.int() for _ in range(6))))
            layers.append(DlibLayer(name[:-2], None, meta))
        elif name in ("relu_", "add_prev_"):
            layers.append(DlibLayer(name[:-1]))
        # the input and loss records carry nothing the network needs
    if not layers:
        raise WeightsError(f"{path}: no dlib network layers found")
    return layers


# ---- the network -------------------------------------------------------------------------------

class Affine(nn.Module):
    """dlib's affine layer: batch norm folded into a learnable per-channel scale and shift."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, the smaller map zero-padded at the end."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))
    return pad(a) + pad(b)


class DlibBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        stride = 2 if down else 1
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 0 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.affine2 = Affine(cout)

    def forward(self, x):
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_padded(y, skip))


class DlibFaceResNet(nn.Module):
    """The network of dlib's face-recognition model; `forward` gives the 128-D descriptor,
    `forward_features` the 256 pooled features."""

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 32, 7, 2, 0)
        self.affine1 = Affine(32)
        blocks, cin = [], 32
        for cout, n, down in LEVELS:
            for i in range(n):
                blocks.append(DlibBlock(cin, cout, down and i == 0))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.num_features = cin
        self.fc = nn.Linear(cin, 128, bias=False)

    def forward_features(self, x):
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"dlib's face ResNet reads faces of at least {MIN_SIZE}x{MIN_SIZE} pixels, "
                             f"got {tuple(x.shape[-2:])}: set data.img_size to {MIN_SIZE} or more (dlib used 150)")
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)
        return self.blocks(x).mean((2, 3))

    def forward(self, x):
        return self.fc(self.forward_features(x))

    def expected_layers(self) -> list[tuple[str, nn.Module | None]]:
        """(dlib record kind, the module it fills) in the file's order."""
        out = [("con", self.conv1), ("affine", self.affine1), ("relu", None), ("max_pool", None)]
        for b in self.blocks:
            out += [("con", b.conv1), ("affine", b.affine1), ("relu", None), ("con", b.conv2), ("affine", b.affine2)]
            out += [("avg_pool", None)] if b.down else []
            out += [("add_prev", None), ("relu", None)]
        return out + [("avg_pool", None), ("fc", self.fc)]

    def load_dlib(self, path) -> int:
        """Copy dlib's weights into this network; every layer's kind, geometry and size is checked.
        Returns the number of parameter tensors filled."""
        layers = read_dlib_network(path)
        plan = self.expected_layers()
        if [k for k, _ in plan] != [layer.kind for layer in layers]:
            raise WeightsError(f"{path}: its {len(layers)} layers are not those of dlib's 29-layer face-recognition "
                               f"ResNet ({len(plan)} expected)")
        new, filled = {}, 0
        names = {m: n for n, m in self.named_modules()}
        with torch.no_grad():
            for (kind, module), layer in zip(plan, layers):
                if module is None:
                    continue
                name = names[module]
                if kind == "con":
                    w = module.weight
                    o, i, kh, kw = w.shape
                    src_in = i if i != 1 else 3  # a gray model takes the colour kernels summed
                    meta = layer.meta
                    want = (o, kh, kw, module.stride[0], module.padding[0])
                    got = (meta["filters"], meta["nr"], meta["nc"], meta["stride_y"], meta["pad_y"])
                    if want != got or layer.params.size != o * src_in * kh * kw + o:
                        raise WeightsError(f"{path}: conv {got} does not fit {name} {want}")
                    kern = torch.from_numpy(layer.params[:o * src_in * kh * kw].reshape(o, src_in, kh, kw).copy())
                    new[f"{name}.weight"] = kern.sum(1, keepdim=True) if i == 1 else kern
                    new[f"{name}.bias"] = torch.from_numpy(layer.params[o * src_in * kh * kw:].copy())
                    filled += 2
                elif kind == "affine":
                    c = module.weight.numel()
                    if layer.params.size != 2 * c:
                        raise WeightsError(f"{path}: affine of {layer.params.size // 2} channels does not fit {name} ({c})")
                    new[f"{name}.weight"] = torch.from_numpy(layer.params[:c].copy())
                    new[f"{name}.bias"] = torch.from_numpy(layer.params[c:].copy())
                    filled += 2
                elif kind == "fc":
                    out_f, in_f = module.weight.shape
                    if (layer.meta["outputs"], layer.meta["inputs"]) != (out_f, in_f):
                        raise WeightsError(f"{path}: fc {layer.meta} does not fit {name} ({in_f} -> {out_f})")
                    new[f"{name}.weight"] = torch.from_numpy(layer.params.reshape(in_f, out_f).T.copy())
                    filled += 1
        self.load_state_dict(new, strict=True)
        return filled


class DlibResNetFER(nn.Module):
    """dlib's face-recognition ResNet with an expression head on its 256 pooled features (the
    identity layer, fc 128, is kept for checking but not used)."""

    def __init__(self, num_classes: int = 8, in_chans: int = 3, drop_rate: float = 0.2):
        super().__init__()
        self.backbone = DlibFaceResNet(in_chans)
        self.num_features = self.backbone.num_features
        self.num_classes = num_classes
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x):
        return self.backbone.forward_features(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = self.drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.blocks[-2]


@register_model
def dlib_resnet29(num_classes: int = 8, in_chans: int = 3, drop_rate: float = 0.2, pretrained_file=None,
                  **_) -> DlibResNetFER:
    """dlib's 29-layer face-recognition ResNet with a FER head (5.6 M parameters); `pretrained_file`:
    'dlib' (the file in face-recognition-models) or the path of a dlib .dat file of this network.
    Train it with norm mean DLIB_NORM['mean'] and std DLIB_NORM['std'], as dlib fed it."""
    model = DlibResNetFER(num_classes, in_chans, drop_rate)
    if pretrained_file:
        model.backbone.load_dlib(dlib_weights_path() if pretrained_file == "dlib" else pretrained_file)
    return model
