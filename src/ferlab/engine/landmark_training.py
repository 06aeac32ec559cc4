"""`ferlab landmarks train CONFIG`: fit MobileFaceNet to regress dlib's 68 points.

No public landmark weights can be downloaded here, so the landmark branch of PCDA (paper 003) and
the landmark-net option of the face front end (slower than dlib on a CPU) are trained on the dataset's own faces: targets are
dlib's points from the pipeline's landmark cache, inputs the face crops at 112x112 (gray repeated to
3 channels, standardised as the emotion models are: (x - 0.5) / 0.5). Augmentation warps image and
points together (flips relabel left/right points). The epoch with the lowest normalised mean error
(NME) against dlib on the validation split is kept; the test split is measured once at the end.

NME: mean point-to-point distance divided by the outer-eye-corner distance (points 36 and 45),
the usual 300-W normalisation. Config (section `landmarks`, defaults in DEFAULTS):

    data: {dataset: ferplus, ...}
    landmarks: {epochs: 12, batch_size: 64, lr: 0.002, out_dir: runs/landmarks_ferplus}

Writes OUT/best.safetensors + best.json (load with `pcda` model.kwargs.landmark_file, or the
front end's --landmarks), OUT/report.json; an interrupted run resumes from OUT/last_state.pt.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import augment_batch
from ..data.cache import atomic_write_bytes
from ..models.mobilefacenet import LANDMARK_NORM as NORM
from ..models.mobilefacenet import predict_points
from .checkpoint import save_model

DEFAULTS = {"epochs": 12, "batch_size": 64, "lr": 0.002, "weight_decay": 1e-4, "seed": 0, "threads": 2,
            "train_subset": None, "max_eval": None, "out_dir": "runs/landmarks",
            "augment": {"flip": True, "rotate": 15.0, "scale": [0.9, 1.1], "translate": 0.05,
                        "brightness": 0.2, "contrast": 0.2, "autocontrast": 0.0, "erasing": 0.0}}
SIZE = 112


def normalised_mean_error(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-face NME of (N, 68, 2) points: mean point distance / outer-eye-corner distance (36-45)."""
    iod = np.linalg.norm(target[:, 36] - target[:, 45], axis=1)
    return np.linalg.norm(pred - target, axis=2).mean(1) / np.maximum(iod, 1e-6)


def _faces_with_points(samples, limit=None, seed=0):
    """uint8 (N, 1, 112, 112) faces and dlib's points in their pixels, for the faces dlib marked
    (a seeded subset of `limit` faces, if given: dlib then runs on those only, unless the whole
    split's points are cached already, e.g. seeded on a machine without dlib)."""
    from ..data.arrays import load_images
    from ..faces import dataset_landmarks
    from ..faces.landmarks import dlib_crop_entry, entry_points
    if limit and len(samples) > int(limit):
        idx = np.sort(np.random.RandomState(seed).permutation(len(samples))[:int(limit)])
        whole = dlib_crop_entry(samples, compute=False)
        samples = samples.subset(idx)
        pts, ok_lm = entry_points(whole, SIZE, idx) if whole is not None else dataset_landmarks(samples, size=SIZE)
    else:
        pts, ok_lm = dataset_landmarks(samples, size=SIZE)
    imgs, ok = load_images(samples, SIZE, 1)
    iod = np.linalg.norm(pts[:, 36] - pts[:, 45], axis=1)
    keep = np.flatnonzero(ok & ok_lm & np.isfinite(pts).all((1, 2)) & (iod > 4))
    return imgs[keep], pts[keep]


def train_landmarks(cfg: dict, log=print) -> dict:
    from ..data.arrays import load_splits
    from ..models.mobilefacenet import MobileFaceNetLandmarks
    from .profiling import count_flops, count_params, git_commit, machine_info, now_utc
    from .train import pick_device
    lcfg = {**DEFAULTS, **(cfg.get("landmarks") or {})}
    lcfg["augment"] = {**DEFAULTS["augment"], **(lcfg.get("augment") or {})}
    torch.set_num_threads(int(lcfg["threads"]))
    seed = int(lcfg["seed"])
    torch.manual_seed(seed)
    out = Path(lcfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg["data"])
    x_tr, p_tr = _faces_with_points(splits["train"], lcfg["train_subset"], seed)
    x_va, p_va = _faces_with_points(splits["valid"], lcfg["max_eval"], seed)
    if len(x_tr) == 0 or len(x_va) == 0:
        raise ValueError("no faces with dlib landmarks in the train or valid split")
    log(f"landmarks: train {len(x_tr)} faces, valid {len(x_va)} (dlib's 68 points as targets)")
    device = pick_device()  # a GPU when there is one (its numbers differ slightly from a CPU's)
    net = MobileFaceNetLandmarks(in_chans=3).to(device)
    epochs, bs = int(lcfg["epochs"]), int(lcfg["batch_size"])
    steps = max(1, len(x_tr) // bs)
    opt = torch.optim.AdamW(net.parameters(), lr=float(lcfg["lr"]), weight_decay=float(lcfg["weight_decay"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(lcfg["lr"]), total_steps=epochs * steps,
                                                pct_start=0.1)
    meta = {"arch": "mobilefacenet_landmarks", "labels": [], "model_kwargs": {"in_chans": 3},
            "preprocess": {"img_size": SIZE, "channels": 3, **NORM, "gray_repeated": True},
            "output": "68 (x, y) in [0, 1] of the input; pixel = value * size - 0.5", "config": cfg}
    state_path = out / "last_state.pt"
    history, best, start = [], {"nme": float("inf"), "epoch": -1}, 0
    if state_path.is_file():
        try:
            st = torch.load(state_path, map_location=device, weights_only=True)
        except Exception:  # noqa: BLE001 - never pass on torch's advice to unpickle code
            from .checkpoint import CheckpointError
            raise CheckpointError(f"{state_path}: training state truncated, corrupt or holding something other "
                                  "than tensors; delete it to start over") from None
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        history = json.loads(st["history_json"]) if isinstance(st.get("history_json"), str) else []
        start = len(history)
        if history:
            b = min(history, key=lambda h: h["valid_nme"])
            best = {"nme": b["valid_nme"], "epoch": b["epoch"]}
        log(f"resumed after epoch {start}")
    xt, pt = torch.from_numpy(x_tr).to(device), torch.from_numpy(p_tr).to(device)
    log(f"device: {device}")
    for epoch in range(start, epochs):
        net.train()
        t0 = time.time()
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(xt), generator=g)
        loss_sum = 0.0
        for s in range(steps):
            idx = order[s * bs:(s + 1) * bs].to(device)
            x, p = augment_batch(xt[idx].float() / 255.0, lcfg["augment"], g, pt[idx].clone())
            x = (x - NORM["mean"]) / NORM["std"]
            loss = F.l1_loss(net(x), (p + 0.5) / SIZE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach()
        nme = normalised_mean_error(predict_points(net, x_va, device=device), p_va)
        h = {"epoch": epoch, "train_l1": float(loss_sum) / steps, "valid_nme": float(nme.mean()),
             "valid_nme_median": float(np.median(nme)), "valid_failures_0.1": float((nme > 0.1).mean()),
             "seconds": time.time() - t0}
        history.append(h)
        star = ""
        if h["valid_nme"] < best["nme"]:
            best = {"nme": h["valid_nme"], "epoch": epoch}
            save_model(out / "best", net, {**meta, "epoch": epoch, "valid_nme": h["valid_nme"]})
            star = " *"
        buf = io.BytesIO()
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "history_json": json.dumps(history)}, buf)
        atomic_write_bytes(state_path, buf.getvalue())
        log(f"epoch {epoch + 1}/{epochs} l1 {h['train_l1']:.4f} valid NME {h['valid_nme']:.4f} "
            f"(median {h['valid_nme_median']:.4f}, >0.1: {h['valid_failures_0.1']:.1%}) ({h['seconds']:.0f}s){star}")
    # the kept epoch, measured once on the test split
    from ..models.mobilefacenet import mobilefacenet_landmarks
    best_net = mobilefacenet_landmarks(pretrained_file=str(out / "best.safetensors")).eval()
    report = {"best_epoch": best["epoch"] + 1, "valid_nme": best["nme"], "history": history,
              "params": count_params(best_net), "flops": count_flops(best_net, (1, 3, SIZE, SIZE)),
              "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    if "test" in splits:
        x_te, p_te = _faces_with_points(splits["test"], lcfg["max_eval"], seed)
        if len(x_te):
            nme = normalised_mean_error(predict_points(best_net, x_te), p_te)
            report["test"] = {"faces": len(x_te), "nme": float(nme.mean()), "nme_median": float(np.median(nme)),
                              "failures_0.1": float((nme > 0.1).mean())}
            log(f"test (epoch {best['epoch'] + 1}, once): NME {nme.mean():.4f} against dlib on {len(x_te)} faces")
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    return report
