"""Center loss (Wen et al. 2016), the comparison row of DAN's Table 1:
L_c = mean_i ||x_i - c_{y_i}||^2 / 2, centres learnt with the model (DAN.class_centres)."""
from __future__ import annotations

import torch


def center_loss(features: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 0.5 * (features.float() - centres.float()[labels]).pow(2).sum(1).mean()
