"""Training losses, one file per paper's loss, built from the config's ``loss`` section:

    loss: {name: cross_entropy, label_smoothing: 0.0}   # default
    loss: {name: cross_entropy, logit_adjust: 1.0}      # logit-adjusted (balanced) cross-entropy
    loss: {name: bce, activation: softmax}              # paper 000 (RASA), eqs. 9-10

    loss: {name: dan, lambda_affinity: 1.0, lambda_partition: 1.0}   # paper 001 (DAN), eq. 7
    loss: {name: neaa, weight: 0.01}                     # paper 003 (PCDA), eq. 11

Every loss takes (outputs, targets): outputs are the logits, or a model's dict of outputs with
"logits" and what its loss needs (DAN: features, heads, centres; PCDA: features); targets are (N, C) class
distributions (one-hot for majority labels, vote distributions for FER+ "crossentropy" mode).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .affinity import affinity_loss
from .bce import SoftmaxBCELoss
from .center import center_loss
from .neaa import neaa_loss
from .outputs import logits_of
from .partition import partition_loss

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str):
    def deco(fn):
        _LOSSES[name] = fn
        return fn
    return deco


class CrossEntropyLoss(nn.Module):
    """Cross-entropy on class distributions. `logit_adjust` (tau > 0): the logit-adjusted loss of
    Menon et al. 2021, CE(logits + tau * log prior), with the training set's class prior; the
    model's own logits then estimate balanced-class scores, so rare classes are not out-voted by
    the training set's frequencies at test time (the prior is set by the trainer)."""

    def __init__(self, label_smoothing: float = 0.0, logit_adjust: float = 0.0, class_prior=None):
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.logit_adjust = float(logit_adjust)
        if self.logit_adjust and class_prior is None:
            raise ValueError("loss.logit_adjust needs the training set's class prior")
        prior = torch.as_tensor(class_prior if class_prior is not None else [1.0], dtype=torch.float32)
        self.register_buffer("log_prior", torch.log(prior.clamp_min(1e-4) / prior.clamp_min(1e-4).sum()),
                             persistent=False)

    def forward(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        logits = logits_of(outputs).float()
        if self.logit_adjust:
            logits = logits + self.logit_adjust * self.log_prior.to(logits.device)
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


class DANLoss(nn.Module):
    """Paper 001, eq. 7: CE + lambda1 * feature loss (affinity, eq. 2; or center loss; or none)
    + lambda2 * partition loss (eq. 6). Hard labels for the feature loss are the argmax of the
    targets. Returns the total; the parts of the last call are kept in `.parts`."""

    def __init__(self, lambda_affinity: float = 1.0, lambda_partition: float = 1.0, feature_loss: str = "affinity",
                 partition: bool = True, partition_reduction: str = "paper", label_smoothing: float = 0.0):
        super().__init__()
        if feature_loss not in ("affinity", "center", "none"):
            raise ValueError(f"feature_loss must be affinity, center or none, not {feature_loss!r}")
        self.l1, self.l2 = float(lambda_affinity), float(lambda_partition)
        self.feature_loss, self.partition = feature_loss, bool(partition)
        self.partition_reduction = partition_reduction
        self.ce = CrossEntropyLoss(label_smoothing)
        self.parts: dict[str, float] = {}

    def forward(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, dict):
            raise ValueError("the dan loss needs the model's auxiliary outputs (features, heads, centres)")
        total = ce = self.ce(outputs, targets)
        parts = {"ce": ce}
        if self.feature_loss != "none":
            fn = affinity_loss if self.feature_loss == "affinity" else center_loss
            parts[self.feature_loss] = fn(outputs["features"], outputs["centres"], targets.argmax(1))
            total = total + self.l1 * parts[self.feature_loss]
        if self.partition:
            parts["partition"] = partition_loss(outputs["heads"], self.partition_reduction)
            total = total + self.l2 * parts["partition"]
        self.parts = {k: float(v.detach()) for k, v in parts.items()}
        return total


class NeAALoss(nn.Module):
    """Paper 003, eq. 11: CE + weight * NeAA (eqs. 6-10) on the model's class-token features.
    `neutral_index` is the neutral class's index in the label set (set by build_loss from the
    data's labels; None: no class is treated as neutral, i.e. the plain anchor loss)."""

    def __init__(self, weight: float = 0.01, neutral_index: int | None = 0, detach_anchor: bool = True,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.weight, self.neutral_index, self.detach_anchor = float(weight), neutral_index, bool(detach_anchor)
        self.ce = CrossEntropyLoss(label_smoothing)
        self.parts: dict[str, float] = {}

    def forward(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        if not isinstance(outputs, dict) or "features" not in outputs:
            raise ValueError("the neaa loss needs the model's class-token features (a model with aux outputs, e.g. pcda)")
        ce = self.ce(outputs, targets)
        if self.weight == 0:
            self.parts = {"ce": float(ce.detach())}
            return ce
        neaa = neaa_loss(outputs["features"], outputs["logits"], targets.argmax(1), self.neutral_index,
                         self.detach_anchor)
        self.parts = {"ce": float(ce.detach()), "neaa": float(neaa.detach())}
        return ce + self.weight * neaa


register_loss("cross_entropy")(CrossEntropyLoss)
register_loss("bce")(SoftmaxBCELoss)
register_loss("dan")(DANLoss)
register_loss("neaa")(NeAALoss)


def list_losses() -> list[str]:
    return sorted(_LOSSES)


def build_loss(cfg: dict, label_set=None, class_prior=None) -> nn.Module:
    """From a full config: ``loss`` section (name + keyword arguments). Older configs without one
    get cross-entropy with ``train.label_smoothing``. `label_set` (class names) tells the neaa loss
    which class is neutral; `class_prior` (the training set's class shares) is what
    cross_entropy's logit_adjust adjusts by."""
    spec = dict(cfg.get("loss") or {})
    name = spec.pop("name", "cross_entropy")
    if name == "cross_entropy" and spec.get("logit_adjust"):
        spec["class_prior"] = class_prior
    if name == "neaa" and label_set is not None and "neutral_index" not in spec:
        spec["neutral_index"] = list(label_set).index("neutral") if "neutral" in label_set else None
    if name in ("cross_entropy", "dan", "neaa") and "label_smoothing" not in spec:
        spec["label_smoothing"] = cfg.get("train", {}).get("label_smoothing", 0.0)
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(list_losses())}")
    try:
        return _LOSSES[name](**spec)
    except TypeError as e:  # a key of another loss left in the section (e.g. bce's activation)
        raise ValueError(f"loss {name!r}: bad options {sorted(spec)} ({e}); "
                         f"replace the whole section, e.g. 'loss={{name: {name}}}'") from None


__all__ = ["build_loss", "list_losses", "logits_of", "register_loss", "CrossEntropyLoss", "DANLoss", "NeAALoss",
           "SoftmaxBCELoss", "affinity_loss", "center_loss", "neaa_loss", "partition_loss"]
