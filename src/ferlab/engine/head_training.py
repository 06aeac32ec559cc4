"""Train a model's head on cached features of its frozen backbones (cheap ablations).

When every row of an ablation changes only what comes after the backbones (PCDA's Table 1: dot
attention, cross attention, NeAA), the backbones can be fixed at trained weights, their outputs
computed once per image — the face and its mirror image, the only augmentation kept — and each
row trains just its head on those features. A row then costs the head's forward and backward
passes only (PCDA at 48 px: about 40 % of a full step).

A model opts in with `backbone_prefixes` (its frozen parts' state-dict prefixes),
`freeze_backbone(flag)`, `backbone_features(x) -> tuple of tensors` and
`forward_from_features(*features, return_aux=False)`. The result of a row is an ordinary ferlab
checkpoint (the frozen backbones' weights plus the trained head): the best epoch is chosen on the
valid split's cached features, and the test split is evaluated once, from its images, through
the whole model, as `ferlab evaluate` would.

Config: a normal training config plus

    head_training: {backbone_file: runs/pcda_ferplus_cpu/best.safetensors,
                    cache_file: runs/pcda_ablations/features.pt}

(`cache_file` optional: the features are written there once and read by every later row).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..losses import build_loss, logits_of
from ..models import create_model
from ..models.weights import read_state_dict
from .checkpoint import file_fingerprint
from .evaluate import normalise
from .metrics import classification_metrics
from .train import (
    amp_dtype,
    build_optimizer,
    build_scheduler,
    end_epoch,
    epoch_record,
    finish_run,
    load_split_arrays,
    model_meta,
    pick_device,
    resume_loop,
)


def load_backbones(model, path) -> None:
    """The frozen parts' weights from a ferlab checkpoint of the same architecture; the head keeps
    its fresh initialisation. Every backbone key must be there."""
    sd = read_state_dict(path)
    own = model.state_dict()
    prefixes = tuple(model.backbone_prefixes)
    wanted = [k for k in own if k.startswith(prefixes)]
    missing = [k for k in wanted if k not in sd or sd[k].shape != own[k].shape]
    if missing:
        raise ValueError(f"{path}: {len(missing)} backbone weights missing or of another shape "
                         f"(e.g. {missing[0]}); give a ferlab checkpoint of the same model")
    model.load_state_dict({**own, **{k: sd[k] for k in wanted}})
    model.freeze_backbone(True)
    trainable = [n for n, p in model.named_parameters() if n.startswith(prefixes) and p.requires_grad]
    if trainable:
        raise ValueError(f"cached features need frozen backbones, but {trainable[0]} trains "
                         "(PCDA: keep freeze_landmarks true)")


@torch.no_grad()
def cache_features(model, images_u8: np.ndarray, norm: dict, device, batch_size: int = 256,
                   flip: bool = False) -> tuple[torch.Tensor, ...]:
    """model.backbone_features of uint8 (N, C, S, S) images (mirrored when `flip`), as float16."""
    model.eval()
    parts: list[list[torch.Tensor]] = []
    for i in range(0, len(images_u8), batch_size):
        x = normalise(torch.from_numpy(images_u8[i:i + batch_size]).to(device), norm)
        if flip:
            x = x.flip(-1)
        feats = model.backbone_features(x)
        if not parts:
            parts = [[] for _ in feats]
        for acc, f in zip(parts, feats):
            acc.append(f.float().to(torch.float16).cpu())
    return tuple(torch.cat(p) for p in parts)


def train_head(cfg: dict, resume: bool = False, log=print) -> dict:
    """Train a config's head on cached frozen-backbone features. Returns what ferlab.engine.train.train
    returns (best epoch, best valid accuracy, history, test metrics)."""
    hcfg = cfg.get("head_training") or {}
    if not hcfg.get("backbone_file"):
        raise ValueError("head training needs head_training.backbone_file, a trained checkpoint of the same model")
    device = pick_device()
    tcfg, dcfg = cfg["train"], cfg["data"]
    if tcfg.get("ema") is not None:
        raise ValueError("train.ema: head training on cached features keeps no weight average; leave it out")
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    out = Path(tcfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    seed = int(tcfg.get("seed", 0))
    torch.manual_seed(seed)
    splits, arrays = load_split_arrays(dcfg, seed)
    label_set = splits["train"].label_set
    size, ch = int(dcfg["img_size"]), int(dcfg["channels"])
    tr = splits["train"]
    model = create_model(cfg["model"]["name"], num_classes=len(label_set), in_chans=ch,
                         **cfg["model"].get("kwargs", {})).to(device)
    for attr in ("backbone_prefixes", "freeze_backbone", "backbone_features", "forward_from_features"):
        if not hasattr(model, attr):
            raise ValueError(f"model {cfg['model']['name']} cannot train on cached features (it has no {attr})")
    load_backbones(model, hcfg["backbone_file"])
    norm = cfg["norm"]

    # the backbones' features: train (face and mirror image) and valid, once
    cache_file = Path(hcfg["cache_file"]) if hcfg.get("cache_file") else None
    key = file_fingerprint(hcfg["backbone_file"], [p.name for s in ("train", "valid") for p in splits[s].paths] + [size, ch])
    cache = None
    if cache_file is not None and cache_file.is_file():
        cache = torch.load(cache_file, weights_only=True)
        if cache.get("key") != key:
            log(f"{cache_file}: features of another backbone or image list; computing them again")
            cache = None
    if cache is None:
        t0 = time.time()
        cache = {"key": key, "train": cache_features(model, arrays["train"], norm, device),
                 "train_flip": cache_features(model, arrays["train"], norm, device, flip=True),
                 "valid": cache_features(model, arrays["valid"], norm, device)}
        log(f"backbone features cached for {len(tr)} train (x2, mirrored) and {len(splits['valid'])} valid faces "
            f"({time.time() - t0:.0f}s)")
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            torch.save(cache, tmp)
            tmp.replace(cache_file)

    bs = int(tcfg["batch_size"])
    steps = max(1, len(tr) // bs)
    opt = build_optimizer(cfg, model)  # the frozen backbones have no trainable parameters
    sched = build_scheduler(cfg, opt, steps)
    amp = amp_dtype(tcfg.get("amp", "auto"), device)
    criterion = build_loss(cfg, label_set)
    aux = bool(getattr(model, "has_aux_outputs", False))
    targets_all = torch.from_numpy(tr.targets)
    mode = dcfg.get("label_mode", "majority")
    epochs = int(cfg["schedule"]["epochs"])
    best, history, start_epoch = resume_loop(out, resume, log, model, opt, sched, lambda: model.freeze_backbone(True))
    meta = model_meta(cfg, label_set, {"head_training": {"backbone_file": str(hcfg["backbone_file"])}})
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        model.train()
        g = torch.Generator().manual_seed(seed * 100003 + epoch + 7)
        order = torch.randperm(len(tr), generator=g)
        mirror = torch.rand(len(tr), generator=g) < 0.5  # the flip augmentation, from the two caches
        total, correct, loss_sum = 0, 0, 0.0
        for step in range(steps):
            idx = order[step * bs:(step + 1) * bs]
            m = mirror[idx]
            feats = [torch.where(m.view(-1, *[1] * (a.dim() - 1)), b[idx], a[idx]).to(device).float()
                     for a, b in zip(cache["train"], cache["train_flip"])]
            tgt = targets_all[idx].to(device)
            if mode == "probability":
                tgt = F.one_hot(torch.multinomial(tgt, 1).squeeze(1), tgt.shape[1]).float()
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                outs = model.forward_from_features(*feats, return_aux=aux)
            loss = criterion(outs, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach()) * len(idx)
            total += len(idx)
            correct += int((logits_of(outs).argmax(1) == tgt.argmax(1)).sum())
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model.forward_from_features(*[f[i:i + 512].to(device).float() for f in cache["valid"]])
                                for i in range(0, len(splits["valid"]), 512)])
        vm = classification_metrics(splits["valid"].labels, logits.argmax(1).cpu().numpy(), label_set)
        history.append(epoch_record(epoch, loss_sum, correct, total, vm, opt, t0))
        best = end_epoch(out, model, meta, vm, history, best, epochs, log,
                         {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    return finish_run(out, best, history, splits, arrays, tcfg, device, log)
