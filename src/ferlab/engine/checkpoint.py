"""Checkpoints: model weights as safetensors + a JSON of config and metadata, training state as a
tensors-only .pt read with weights_only=True. Every file is written atomically (temp + rename)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save

from ..data.cache import atomic_write_bytes


class CheckpointError(ValueError):
    pass


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


INT8_SCALE = ".int8_scale"


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 of a weight matrix / conv kernel: (q, scale), w ~ q * scale."""
    scale = w.detach().float().abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
    q = torch.round(w.detach().float() / scale.view(-1, *[1] * (w.ndim - 1))).clamp(-127, 127).to(torch.int8)
    return q, scale


def save_model(path, model: nn.Module, meta: dict, half: bool = False, int8: bool = False) -> None:
    """Write PATH.safetensors and PATH.json (meta: arch, labels, preprocessing, config).
    half: float tensors as float16. int8: weight matrices and kernels as int8 with one float scale
    per output channel (KEY + '.int8_scale'), the other float tensors as float16 (for shipping)."""
    path = Path(path)
    sd = {}
    for k, v in _unwrap(model).state_dict().items():
        v = v.detach().cpu()
        if int8 and v.is_floating_point() and v.ndim >= 2:
            sd[k], sd[k + INT8_SCALE] = quantize_int8(v)
        else:
            sd[k] = v.half() if (half or int8) and v.is_floating_point() else v
    sd = {k: v.contiguous() for k, v in sd.items()}
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
    from ..models import create_model
    meta = load_meta(path)
    wpath = Path(path).with_suffix(".safetensors")
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: no such weights file")
    model = create_model(meta["arch"], num_classes=len(meta["labels"]), **meta.get("model_kwargs", {}))
    try:
        sd = load_file(str(wpath))
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{wpath}: cannot read ({e})") from None
    for k in [k for k in sd if k.endswith(INT8_SCALE)]:  # int8-stored weights back to float
        scale, base = sd.pop(k), k[:-len(INT8_SCALE)]
        sd[base] = sd[base].float() * scale.view(-1, *[1] * (sd[base].ndim - 1))
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

