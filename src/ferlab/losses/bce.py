"""Binary cross-entropy on class probabilities: the loss of paper 000 (RASA), eqs. 9-10.

The paper applies softmax to the logits (eq. 9) and trains with BCE against the one-hot label
(eq. 10): loss = -mean over samples and classes of t*log(p) + (1-t)*log(1-p), p = softmax(z).
log(1 - p_c) is computed stably as logsumexp of the other logits minus logsumexp of all.
``activation="sigmoid"`` gives the multi-label reading (independent sigmoids,
BCE-with-logits), which some re-implementations use; the paper's equations say softmax.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .outputs import logits_of


def softmax_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    z = logits.float()
    n, c = z.shape
    if c < 2:
        raise ValueError("softmax BCE needs at least two classes")
    lse = torch.logsumexp(z, 1, keepdim=True)
    log_p = z - lse
    others = z.unsqueeze(1).expand(n, c, c).masked_fill(torch.eye(c, dtype=torch.bool, device=z.device), float("-inf"))
    log_not_p = torch.logsumexp(others, 2) - lse
    t = targets.float()
    return -(t * log_p + (1 - t) * log_not_p).mean()


class SoftmaxBCELoss(nn.Module):
    def __init__(self, activation: str = "softmax"):
        super().__init__()
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"bce activation must be 'softmax' or 'sigmoid', not {activation!r}")
        self.activation = activation

    def forward(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        logits = logits_of(outputs)
        if self.activation == "sigmoid":
            return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
        return softmax_bce(logits, targets)
