"""One registry for every ferlab model, timm style: `@register_model` builders, `create_model`."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def needs_landmarks(model: nn.Module) -> bool:
    """Whether the model's forward takes (image, landmarks), e.g. RASA's landmark patches."""
    return bool(getattr(getattr(model, "module", model), "needs_landmarks", False))  # .module: DDP


def model_args(model: nn.Module, x: torch.Tensor, landmarks=None) -> tuple:
    """Forward arguments for images `x`: (x,) or, for models that need them, (x, landmarks) with
    landmarks (B, 68, 2) in pixels of x. The one place that knows which models take what."""
    if not needs_landmarks(model):
        return (x,)
    if landmarks is None:
        raise ValueError(f"{type(getattr(model, 'module', model)).__name__} needs the 68 face landmarks of every image")
    return x, torch.as_tensor(landmarks, dtype=torch.float32, device=x.device)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Common kwargs: num_classes, in_chans, img_size, pretrained_file."""
    return model_entrypoint(name)(**kwargs)
