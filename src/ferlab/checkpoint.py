"""Checkpoints: model weights as safetensors + a JSON of config and metadata, training state as a
tensors-only .pt read with weights_only=True. Every file is written atomically (temp + rename)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save

from .cache import atomic_write_bytes


class CheckpointError(ValueError):
    pass


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def save_model(path, model: nn.Module, meta: dict, half: bool = False) -> None:
    """Write PATH.safetensors and PATH.json (meta: arch, labels, preprocessing, config)."""
    path = Path(path)
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
          for k, v in _unwrap(model).state_dict().items()}
    atomic_write_bytes(path.with_suffix(".safetensors"), save(sd, metadata={"format": "pt"}))
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str).encode())


def load_meta(path) -> dict:
    p = Path(path).with_suffix(".json")
    if not p.is_file():
        raise CheckpointError(f"{p}: missing model description (JSON beside the .safetensors)")
    try:
        return json.loads(p.read_text())
    except ValueError as e:
        raise CheckpointError(f"{p}: not valid JSON ({e})") from None


def load_model(path, device="cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from PATH.safetensors + PATH.json (no pickle involved)."""
    from .models import create_model
    meta = load_meta(path)
    wpath = Path(path).with_suffix(".safetensors")
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: no such weights file")
    model = create_model(meta["arch"], num_classes=len(meta["labels"]), **meta.get("model_kwargs", {}))
    try:
        sd = load_file(str(wpath))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{wpath}: cannot read ({e})") from None
    own = model.state_dict()
    sd = {k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}
    model.load_state_dict(sd)
    return model.to(device).eval(), meta


def save_train_state(path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def load_train_state(path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=True)

