"""Load pretrained weights from a local file by key mapping, without unpickling arbitrary code.

Accepts .safetensors, or .pth/.pt/.tar files read with torch.load(weights_only=True); unwraps the
usual containers ('state_dict', 'model', 'net', 'module.' prefixes). Colour first-layer weights are
averaged to 1 channel for gray models.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

# model kwargs that name files to initialise from (not part of the architecture)
WEIGHT_FILE_KWARGS = ("pretrained_file", "landmark_file")


class WeightsError(ValueError):
    pass


def read_state_dict(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        sd = read_safetensors(path)
    else:
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
            raise WeightsError(f"{path}: cannot read as a weights-only checkpoint ({e})") from None
    for key in ("state_dict", "model", "net", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: not a state dict")
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        for prefix in ("module.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file's tensors; a file whose header claims more bytes than it has (a corrupt
    or hostile file) or that safetensors cannot parse is one WeightsError."""
    from safetensors.torch import load_file
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
    header_len = int.from_bytes(head, "little") if len(head) == 8 else -1
    if header_len < 0 or header_len > min(size - 8, 100_000_000):
        raise WeightsError(f"{path}: not a safetensors file (a header of {header_len} bytes in a file of {size})")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors' own error types
        raise WeightsError(f"{path}: cannot read as safetensors ({e})") from None


def adapt_and_load(model: nn.Module, sd: dict[str, torch.Tensor], key_map: Callable[[str], str | None] = None,
                   skip_prefixes=()) -> dict[str, list[str]]:
    """Load `sd` into `model` after renaming keys with `key_map` (return None to drop a key).
    Tensors whose shape differs are skipped, except 3->1 channel first convs, which are averaged.
    Returns the loaded, missing and skipped key lists."""
    own = model.state_dict()
    loaded, skipped = [], []
    new = {}
    for k, v in sd.items():
        k2 = key_map(k) if key_map else k
        if k2 is None or any(k2.startswith(p) for p in skip_prefixes):
            skipped.append(k)
            continue
        if k2 not in own:
            skipped.append(k)
            continue
        tgt = own[k2]
        if v.shape != tgt.shape:
            if v.ndim == 4 and tgt.ndim == 4 and v.shape[1] == 3 and tgt.shape[1] == 1 \
                    and v.shape[0] == tgt.shape[0] and v.shape[2:] == tgt.shape[2:]:
                v = v.mean(1, keepdim=True)
            else:
                skipped.append(k)
                continue
        new[k2] = v.to(tgt.dtype)
        loaded.append(k2)
    if not loaded:
        raise WeightsError("no tensor in the checkpoint matches this model's keys")
    model.load_state_dict(new, strict=False)
    missing = [k for k in own if k not in new]
    return {"loaded": loaded, "missing": missing, "skipped": skipped}


def load_pretrained_file(model: nn.Module, path, key_map=None, skip_prefixes=()) -> dict[str, list[str]]:
    return adapt_and_load(model, read_state_dict(path), key_map, skip_prefixes)


def require_loaded(report: dict, prefix: str, path, what: str, hint: str = "") -> None:
    """A clear error when tensors of the pretrained part (keys starting with `prefix`) stayed unloaded."""
    missing = [k for k in report["missing"] if k.startswith(prefix) and not k.endswith("num_batches_tracked")]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} {what} tensors did not match, e.g. {missing[0]}" +
                           (f" ({hint})" if hint else ""))


def build_with_weights(model_cls, load_fn, pretrained_file=None, **kwargs) -> nn.Module:
    """model_cls(**kwargs), then `load_fn(model, pretrained_file)` when a weights file is given."""
    model = model_cls(**kwargs)
    if pretrained_file:
        load_fn(model, pretrained_file)
    return model
