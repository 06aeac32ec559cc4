"""What a loss receives from the model: the logits, or a dict of outputs that holds them."""
from __future__ import annotations

import torch


def logits_of(outputs) -> torch.Tensor:
    return outputs["logits"] if isinstance(outputs, dict) else outputs
