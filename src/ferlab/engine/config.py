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


# the keys each section may hold (a dotted override naming any other key is refused, so that a typo
# such as optim.lrr=0.1 is not silently ignored). Free-form parts are checked where they are used:
# model.kwargs by the model's constructor, loss by build_loss, data.sources by each source's reader.
KNOWN_KEYS = {
    "model": {"name", "kwargs"},
    "data": {"dataset", "root", "labels", "img_size", "channels", "train_subset", "balanced_sampling", "label_mode",
             "framing", "balance_by_augmentation", "balance_target", "holdout_per_class", "sources", "split_seed",
             "valid_fraction", "test_fraction", "protocol", "fold", "folds", "csv_file", "splits", "aligned",
             "peak_frames", "first_frame_neutral", "name", "front_end", "use_splits"},
    "augment": {"flip", "rotate", "scale", "aspect", "translate", "brightness", "contrast", "autocontrast",
                "erasing", "grey"},
    "optim": {"name", "lr", "momentum", "weight_decay", "nesterov", "betas", "clip_grad_norm", "sam"},
    "schedule": {"name", "epochs", "pct_start", "gamma", "step_epochs", "freeze_epochs", "finetune_lr"},
    "train": {"batch_size", "seed", "amp", "threads", "out_dir", "eval_batch_size", "label_smoothing", "progress",
              "evaluate_test", "stop_after_epochs", "init_from", "select_on", "ema"},
    "norm": {"mean", "std"},
    "landmarks": {"epochs", "batch_size", "lr", "weight_decay", "seed", "threads", "train_subset", "max_eval",
                  "out_dir", "augment"},
    "head_training": {"backbone_file", "cache_file"},
    "distill": {"teacher", "temperature", "alpha", "cache_file", "flip_average", "augmented_views"},
}
FREE_FORM = {("model", "kwargs"), ("optim", "sam"), ("data", "sources"), ("landmarks", "augment")}


def check_override_key(parts: list[str], ov: str) -> None:
    section = parts[0]
    if section == "loss":
        return  # the loss's own options, checked by build_loss
    if section not in KNOWN_KEYS:
        raise ConfigError(f"override {ov!r}: unknown section {section!r} (sections: {', '.join(sorted(KNOWN_KEYS))}, loss)")
    if len(parts) < 2:
        raise ConfigError(f"override {ov!r} must name a key inside section {section!r}, e.g. {section}.KEY=value")
    if parts[1] not in KNOWN_KEYS[section]:
        from difflib import get_close_matches
        near = get_close_matches(parts[1], KNOWN_KEYS[section], n=1)
        raise ConfigError(f"override {ov!r}: unknown key {section}.{parts[1]}"
                          + (f" (did you mean {section}.{near[0]}?)" if near else
                             f" (keys: {', '.join(sorted(KNOWN_KEYS[section]))})"))
    if len(parts) > 2 and (section, parts[1]) not in FREE_FORM:
        raise ConfigError(f"override {ov!r}: {section}.{parts[1]} is not a section")


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
        for section, body in user.items():
            if not isinstance(body, dict) and section in KNOWN_KEYS:
                raise ConfigError(f"{p}: section {section!r} must be a mapping of keys")
            for key in (body or {}) if isinstance(body, dict) else ():
                try:
                    check_override_key([str(section), str(key)], f"{section}.{key}")
                except ConfigError as e:
                    raise ConfigError(f"{p}: {e}".replace("override ", "key ")) from None
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
        if not all(parts):
            raise ConfigError(f"override {ov!r} must look like section.key=value")
        try:
            value = yaml.safe_load(val)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {ov!r}: value is not valid YAML ({e})") from None
        if len(parts) == 1 and isinstance(value, dict):  # a whole section: optim={name: sgd, lr: 0.05}
            for k in value:
                check_override_key([parts[0], str(k)], f"{parts[0]}.{k}")
        else:
            check_override_key(parts, ov)
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {ov!r}: {part} is not a section")
        node[parts[-1]] = value
    return cfg


def _is_number(v) -> bool:
    import math
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# (section, key) -> (test, what it must be); None values are allowed where the key is optional
VALUE_RULES = {
    ("train", "batch_size"): (lambda v: _is_int(v) and v >= 1, "a whole number of at least 1"),
    ("train", "eval_batch_size"): (lambda v: _is_int(v) and v >= 1, "a whole number of at least 1"),
    ("train", "seed"): (_is_int, "a whole number"),
    ("train", "threads"): (lambda v: v is None or (_is_int(v) and v >= 1), "a whole number of at least 1 or null"),
    ("train", "label_smoothing"): (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("train", "amp"): (lambda v: v in ("auto", "off", "none", "fp32", "fp16", "bf16", False, None),
                       "auto, off, fp16 or bf16"),
    ("train", "out_dir"): (lambda v: isinstance(v, str) and v.strip() != "", "a folder path"),
    ("train", "stop_after_epochs"): (lambda v: v is None or (_is_int(v) and v >= 0), "a whole number or null"),
    ("train", "ema"): (lambda v: v is None or (_is_number(v) and 0 < v < 1),
                       "a decay between 0 and 1 (e.g. 0.998) or null"),
    ("distill", "augmented_views"): (lambda v: _is_int(v) and v >= 0, "a whole number, 0 or more"),
    ("schedule", "epochs"): (lambda v: _is_int(v) and v >= 1, "a whole number of at least 1"),
    ("schedule", "pct_start"): (lambda v: _is_number(v) and 0 < v < 1, "a number between 0 and 1"),
    ("schedule", "freeze_epochs"): (lambda v: v is None or (_is_int(v) and v >= 0), "a whole number or null"),
    ("augment", "aspect"): (lambda v: v is None or (_is_number(v) and 1 <= v <= 2),
                            "a number between 1 (off) and 2 (the largest stretch, height against width)"),
    ("augment", "grey"): (lambda v: v is None or (_is_number(v) and 0 <= v <= 1),
                          "a probability between 0 and 1 (a colour face made gray)"),
    ("optim", "lr"): (lambda v: _is_number(v) and v >= 0, "a number of at least 0"),
    ("optim", "momentum"): (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("optim", "weight_decay"): (lambda v: _is_number(v) and v >= 0, "a number of at least 0"),
    ("data", "img_size"): (lambda v: _is_int(v) and 8 <= v <= 1024, "a whole number of pixels between 8 and 1024"),
    ("data", "channels"): (lambda v: v in (1, 3) and _is_int(v), "1 (gray) or 3 (RGB)"),
    ("data", "train_subset"): (lambda v: v is None or (_is_int(v) and v >= 1), "a whole number of at least 1 or null"),
    ("data", "label_mode"): (lambda v: v in ("majority", "probability", "crossentropy"),
                             "majority, probability or crossentropy"),
    ("norm", "mean"): (lambda v: _is_number(v) or (isinstance(v, list) and all(map(_is_number, v))),
                       "a number or a list of numbers"),
    ("norm", "std"): (lambda v: (_is_number(v) and v > 0) or (isinstance(v, list) and all(_is_number(x) and x > 0 for x in v)),
                      "a positive number or a list of them"),
}


def check_values(cfg: dict) -> None:
    """Refuse a config value that would fail deep inside training (batch_size 0, a string for lr, ...)
    with one message naming the key and what it must be."""
    for (section, key), (ok, what) in VALUE_RULES.items():
        body = cfg.get(section)
        if not isinstance(body, dict) or key not in body:
            continue
        if not ok(body[key]):
            raise ConfigError(f"{section}.{key}={body[key]!r}: must be {what}")
    for section in ("model", "data", "optim", "schedule", "train", "norm", "augment"):
        if section in cfg and not isinstance(cfg[section], dict):
            raise ConfigError(f"section {section!r} must be a mapping of keys, not {cfg[section]!r}")
    if not isinstance(cfg.get("model", {}).get("kwargs", {}), dict):
        raise ConfigError("model.kwargs must be a mapping of keyword arguments")

