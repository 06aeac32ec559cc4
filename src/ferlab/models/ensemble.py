"""Several trained models read as one: the weighted mean of their calibrated probabilities.

    p(face) = sum_i w_i softmax(z_i(face) / T_i),   w_i >= 0, sum w_i = 1

Each member keeps its own temperature T_i (its calibration), so a member's sure answers count as
sure and its doubtful ones as doubtful. The forward pass returns log p: softmax of the output is p
itself, so the ensemble is a model like any other for every command (the analyser, evaluation,
ONNX export). Members must read one input (size, colour, normalisation): the file that builds an
ensemble (`ferlab.engine.ensemble`) checks that. The weights are chosen on the selection splits.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .registry import create_model, needs_landmarks, register_model


class ProbabilityEnsemble(nn.Module):
    def __init__(self, members: list[dict], weights: list[float] | None = None, num_classes: int = 8):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = 0.0
        for i, m in enumerate(self.members):
            p = p + self.member_weights[i] * torch.softmax(m(x).float() / self.member_temperatures[i], 1)
        return torch.log(p.clamp_min(1e-12))


@register_model
def ensemble(members: list[dict], weights: list[float] | None = None, num_classes: int = 8,
             in_chans: int | None = None) -> ProbabilityEnsemble:
    """Members' own kwargs carry their input channels; `in_chans` is accepted for the uniform API."""
    return ProbabilityEnsemble(members, weights, num_classes)
