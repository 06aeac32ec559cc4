"""Readable YAML configs with dotted command-line overrides (``optim.lr=0.05``)."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

DEFAULTS = {
    "model": {"name": "resnet18", "kwargs": {}},
    "data": {"dataset": "ferplus", "labels": "fer8", "img_size": 48, "channels": 1,
             "train_subset": None, "balanced_sampling": False},
    "augment": {},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
    "schedule": {"name": "onecycle", "epochs": 30, "pct_start": 0.15},
    "train": {"batch_size": 128, "seed": 0, "amp": "auto", "threads": None, "out_dir": "runs/default",
              "eval_batch_size": 256, "label_smoothing": 0.0},
    "norm": {"mean": 0.5, "std": 0.5},
    "loss": {"name": "cross_entropy"},
}


class ConfigError(ValueError):
    pass


def deep_update(base: dict, upd: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (upd or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = v
    return out


def load_config(path=None, overrides=()) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from None
        if not isinstance(user, dict):
            raise ConfigError(f"{p}: a config must be a mapping of sections")
        cfg = deep_update(cfg, user)
    apply_overrides(cfg, overrides)
    return cfg


def apply_overrides(cfg: dict, overrides=()) -> dict:
    """Apply ``section.key=value`` strings (values parsed as YAML) in place."""
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.key=value")
        key, val = ov.split("=", 1)
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {part} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(val)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {ov!r}: value is not valid YAML ({e})") from None
    return cfg
