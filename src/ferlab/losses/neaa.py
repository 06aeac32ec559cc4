"""Neutral-expression-aware anchor loss (paper 003, PCDA, eqs. 6-10), on the class-token features f
of one batch:

    anchor_c   = the sample of class c with the lowest entropy of its predicted class scores (eq. 6)
    L_non-neu  = sum over classes c != neutral present in the batch of
                 1/N_c * sum_{i in c} Dist(f_i, f_anchor_c)                                 (eq. 8)
    L_neutral  = 1/(N_n - 1)^2 * sum_{i != j, both neutral} Dist(f_i, f_j)                 (eq. 9)
    L_NeAA     = L_non-neu + L_neutral                                                      (eq. 10)

Dist is the mean squared error over feature dimensions. Choices the paper leaves open: the 1/N_c
of eq. 8 is read per class (a mean within each class, summed over classes); the anchor is a
target (detached), so samples move towards it and not it towards them; a class with one sample
adds 0, as does a batch with fewer than two neutral faces. Labels are the argmax of the targets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.float(), 1)
    return -(logp.exp() * logp).sum(1)


def neaa_loss(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, neutral: int | None = 0,
              detach_anchor: bool = True) -> torch.Tensor:
    f = features.float().flatten(1)
    ent = prediction_entropy(logits.detach())
    total = f.new_zeros(())
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        n = len(idx)
        if n < 2:
            continue
        fc = f[idx]
        if c == neutral:
            sq = (fc[:, None] - fc[None]).pow(2).mean(-1)    # MSE of every pair; the diagonal is 0
            total = total + sq.sum() / (n - 1) ** 2
        else:
            anchor = fc[ent[idx].argmin()]
            anchor = anchor.detach() if detach_anchor else anchor
            total = total + (fc - anchor).pow(2).mean(1).sum() / n
    return total
