"""Several trained models read as one: the weighted mean of their calibrated probabilities.

    p(face) = sum_i w_i softmax(z_i(face) / T_i),   w_i >= 0, sum w_i = 1

Each member keeps its own temperature T_i (its calibration), so a member's sure answers count as
sure and its doubtful ones as doubtful. The forward pass returns log p: softmax of the output is p
itself, so the ensemble is a model like any other for every command (the analyser, evaluation,
ONNX export). The ensemble reads one input (its first member's: size, colour, normalisation); a
member trained on a smaller or gray input gets the face as it would have seen it: made gray with
OpenCV's weights (0.299 R + 0.587 G + 0.114 B) and area-resampled to its size (each output pixel the
mean of the input pixels it covers, as OpenCV's INTER_AREA; a fixed matrix product, so the ensemble
exports to ONNX as it is). The file that builds an ensemble (`ferlab.engine.ensemble`) checks that the
normalisation and framing agree. The weights are chosen on the selection splits.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.colour import GREY_FROM_RGB


def area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) matrix averaging a line of n_in pixels down to n_out: row i weighs each input
    pixel by its overlap with output pixel i's span [i n_in/n_out, (i+1) n_in/n_out), as
    cv2.INTER_AREA does. (F.interpolate's "area" mode is adaptive average pooling: whole-pixel windows,
    not fractional overlaps, so 64 -> 48 differs from OpenCV, and it does not export to ONNX at
    sizes that do not divide.)"""
    if n_out > n_in:
        raise ValueError(f"a member's input ({n_out} px) is larger than the ensemble's ({n_in} px): put the member "
                         "with the largest input first")
    r = torch.zeros(n_out, n_in, dtype=torch.float64)
    step = n_in / n_out
    for i in range(n_out):
        a, b = i * step, (i + 1) * step
        for j in range(int(a), min(n_in, int(-(-b // 1)))):
            r[i, j] = max(0.0, min(b, j + 1) - max(a, j))
    return (r / step).float()

from .registry import create_model, needs_landmarks, register_model


class ProbabilityEnsemble(nn.Module):
    def __init__(self, members: list[dict], weights: list[float] | None = None, num_classes: int = 8,
                 img_size: int | None = None, in_chans: int | None = None):
        """members: {arch, kwargs, temperature[, input: {img_size, channels}]}; `input` is given for a
        member that reads another input than the ensemble's own (`img_size` x `img_size`, `in_chans`)."""
        super().__init__()
        if not isinstance(members, list) or len(members) < 2:
            raise ValueError("an ensemble needs a list of at least two members ({arch, kwargs, temperature})")
        for m in members:
            if not isinstance(m, dict) or not isinstance(m.get("arch"), str) or m["arch"] == "ensemble":
                raise ValueError(f"ensemble member {m!r}: needs an 'arch' (not itself an ensemble)")
        w = torch.ones(len(members)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (len(members),) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"ensemble weights {weights!r}: one non-negative number per member, not all zero")
        t = torch.as_tensor([float(m.get("temperature", 1.0)) for m in members])
        if not torch.isfinite(t).all() or (t <= 0).any():
            raise ValueError("ensemble member temperatures must be positive")
        self.members = nn.ModuleList(create_model(m["arch"], num_classes=num_classes, **m.get("kwargs", {}))
                                     for m in members)
        if any(needs_landmarks(m) for m in self.members):
            raise ValueError("ensemble members that need landmarks are not supported")
        self.register_buffer("member_weights", w / w.sum())
        self.register_buffer("member_temperatures", t)
        # how each member's input comes from the ensemble's: (to gray?, resampling matrix or None);
        # the matrices follow from the sizes, so they are not stored in the file
        self.views = []
        for i, m in enumerate(members):
            view = m.get("input")
            if not view:
                self.views.append((False, False))
                continue
            if img_size is None or in_chans is None:
                raise ValueError("a member with its own input needs the ensemble's img_size and in_chans")
            c, size = int(view["channels"]), int(view["img_size"])
            if c not in (in_chans, 1):
                raise ValueError(f"ensemble member {i} reads {c} channels; the ensemble gives {in_chans} (or gray)")
            gray = c == 1 and in_chans == 3
            if size != img_size:
                self.register_buffer(f"resample_{i}", area_matrix(int(img_size), size), persistent=False)
            self.views.append((gray, size != img_size))
        self.register_buffer("grey_from_rgb", torch.tensor(GREY_FROM_RGB).view(1, 3, 1, 1), persistent=False)

    def member_input(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's input as member i reads it (gray and smaller where it was trained so)."""
        gray, resample = self.views[i]
        if gray:  # normalisation is the same on every channel, so gray of normalised = normalised gray
            x = (x * self.grey_from_rgb).sum(1, keepdim=True)
        if resample:
            r = getattr(self, f"resample_{i}")
            x = torch.matmul(torch.matmul(r, x), r.t())
        return x

    def member_logits(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.members[i](self.member_input(i, x))

    def lead_member(self) -> int:
        """The member that carries the most weight (the first among equals)."""
        return int(torch.argmax(self.member_weights))

    def get_classifier(self) -> nn.Module:
        """The lead member's output layer (what feature views of the ensemble read)."""
        return self.members[self.lead_member()].get_classifier()

    def gradcam_layer(self) -> nn.Module:
        """Grad-CAM of the ensemble's answer on the lead member's last stage (the gradient flows
        through the mean of the members' probabilities)."""
        lead = self.members[self.lead_member()]
        if not hasattr(lead, "gradcam_layer"):
            raise ValueError(f"the ensemble's lead member ({type(lead).__name__}) names no last stage")
        return lead.gradcam_layer()

    def weight_shards(self) -> dict[str, str]:
        """Where a saved ensemble keeps its weights: the first member (and the ensemble's own buffers)
        in the model's file, each further member in a file of its own (MODEL.memberN.safetensors)."""
        return {f"member{i}": f"members.{i}." for i in range(1, len(self.members))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = 0.0
        for i in range(len(self.members)):
            p = p + self.member_weights[i] * torch.softmax(self.member_logits(i, x).float() / self.member_temperatures[i], 1)
        return torch.log(p.clamp_min(1e-12))


@register_model
def ensemble(members: list[dict], weights: list[float] | None = None, num_classes: int = 8,
             in_chans: int | None = None, img_size: int | None = None) -> ProbabilityEnsemble:
    """Members' own kwargs carry their input channels; the ensemble's input (`img_size`, `in_chans`)
    matters only to members that read another one."""
    return ProbabilityEnsemble(members, weights, num_classes, img_size=img_size, in_chans=in_chans)
