"""Affinity loss (paper 001, DAN, eq. 2): pull each feature to its class centre, measured against
the spread of the centres themselves,

    L_af = mean_i ||x_i - c_{y_i}||^2 / sigma_c^2,   sigma_c^2 = sum over dims of the variance of
                                                     the centres across classes,

so shrinking the intra-class distance and pushing the centres apart both lower it. The centres
are learnable parameters owned by the model (DAN.class_centres), one per class of its label set.
"""
from __future__ import annotations

import torch


def affinity_loss(features: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    f, c = features.float(), centres.float()
    dist = (f - c[labels]).pow(2).sum(1)
    spread = c.var(dim=0).sum().clamp_min(1e-12)
    return (dist / spread).mean()
