"""Training losses, one file per paper's loss, built from the config's ``loss`` section:

    loss: {name: cross_entropy, label_smoothing: 0.0}   # default
    loss: {name: bce, activation: softmax}              # paper 000 (RASA), eqs. 9-10

Every loss takes (logits, targets) with targets as (N, C) class distributions (one-hot for
majority labels, vote distributions for FER+ "crossentropy" mode).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bce import SoftmaxBCELoss

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    def deco(fn):
        _LOSSES[name] = fn
        return fn
    return deco


class CrossEntropyLoss(nn.Module):
    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)


register_loss("cross_entropy")(CrossEntropyLoss)
register_loss("bce")(SoftmaxBCELoss)


def list_losses() -> list[str]:
    return sorted(_LOSSES)


def build_loss(cfg: dict) -> nn.Module:
    """From a full config: ``loss`` section (name + keyword arguments). Older configs without one
    get cross-entropy with ``train.label_smoothing``."""
    spec = dict(cfg.get("loss") or {})
    name = spec.pop("name", "cross_entropy")
    if name == "cross_entropy" and "label_smoothing" not in spec:
        spec["label_smoothing"] = cfg.get("train", {}).get("label_smoothing", 0.0)
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(list_losses())}")
    return _LOSSES[name](**spec)


__all__ = ["build_loss", "list_losses", "register_loss", "CrossEntropyLoss", "SoftmaxBCELoss"]
