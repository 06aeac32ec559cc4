"""Distil a teacher (a trained ferlab model, e.g. the shipped default) into a small student.

The teacher's logits on every train face and on its mirror image are computed once (ONNX Runtime
when the teacher exports, else PyTorch) and cached; each epoch then costs the student's forward and
backward passes only. The flip is applied here, with the matching cached logits; the config's other
augmentations (small shifts, rotations, brightness, contrast) act on the student's input only, the
teacher's logits of the un-augmented face standing for those of the augmented one. The loss is
`losses.distillation.DistillationLoss`. Epochs are chosen on FER+ valid; test is evaluated once,
through the best epoch's checkpoint, as `ferlab evaluate` would.

A teacher with another input (e.g. a 64x64 colour default teaching a 48x48 gray student) reads the
same train faces at its own size and colour; `train.init_from` starts the student from a trained model
of its architecture.

Config: a normal training config plus

    distill: {teacher: default, temperature: 4.0, alpha: 0.9, cache_file: runs/distill/teacher_logits.pt,
              flip_average: false}

`flip_average: true` teaches with the mean of the teacher's logits on a face and on its mirror image
(the teacher with mirrored-face averaging: an ensemble of two views at no extra cost, both logits
being cached anyway) for the face and its mirror alike. `train.ema: 0.998` selects and saves an
exponential moving average of the student's weights instead of the weights themselves
(`engine.weight_average.WeightEMA`).

`augmented_views: K` teaches consistently (Beyer et al., "Knowledge distillation: a good teacher is
patient and consistent", CVPR 2022): K augmented copies of every train face (the config's
augmentation and a mirror, drawn once, reproducibly) are made and the teacher's logits of each are
cached, so that a face shown as one of them carries the teacher's answer for that very view; each
epoch shows each face as itself (augmented as above, with the clean face's logits) or as one of its
K views, with equal chances. The teacher must read the student's input.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..data.arrays import standardise
from ..data.augment import augment_batch
from ..losses.distillation import DistillationLoss
from ..models import create_model, needs_landmarks
from .checkpoint import file_fingerprint, load_model
from .config import check_values
from .evaluate import normalise
from .train import (
    build_optimizer,
    build_scheduler,
    check_resumable,
    end_epoch,
    epoch_record,
    finish_run,
    init_from_checkpoint,
    load_split_arrays,
    model_meta,
    pick_device,
    resume_loop,
    selection_metrics,
    stopped_as_asked,
)
from .weight_average import weight_ema


@torch.no_grad()
def teacher_logits(teacher, meta: dict, teacher_path, images_u8: np.ndarray, flip: bool = False,
                   batch_size: int = 256, log=print) -> torch.Tensor:
    """Logits of the teacher on uint8 (N, C, S, S) faces (mirrored when `flip`), float32 (N, K)."""
    from .onnx_runtime import OnnxClassifier, OnnxUnavailable, cached_onnx
    run = None
    try:
        ort = OnnxClassifier(cached_onnx(teacher, meta, teacher_path), threads=torch.get_num_threads())
        run = lambda x: torch.from_numpy(ort(x.numpy()))  # noqa: E731
    except OnnxUnavailable as e:
        log(f"teacher on PyTorch ({e})")
        teacher.eval()
        run = lambda x: teacher(x).float()  # noqa: E731
    out = []
    for i in range(0, len(images_u8), batch_size):
        x = normalise(torch.from_numpy(images_u8[i:i + batch_size]), meta["preprocess"])
        out.append(run(x.flip(-1) if flip else x))
    return torch.cat(out)


def augmented_views(images_u8: np.ndarray, aug: dict, seed: int, k: int, chunk: int = 256) -> np.ndarray:
    """`k` augmented copies of every uint8 (N, C, S, S) face -> (k, N, C, S, S) uint8: the config's
    augmentation and a random mirror, each chunk of faces drawn from a generator of its own (seed,
    view, position), so that the same faces and settings give the same views in every run."""
    out = np.empty((k, *images_u8.shape), np.uint8)
    for v in range(k):
        for i in range(0, len(images_u8), chunk):
            g = torch.Generator().manual_seed(seed * 1_000_003 + v * 10_007 + i)
            x = augment_batch(torch.from_numpy(images_u8[i:i + chunk]).float() / 255.0, {**aug, "flip": True}, g)
            out[v, i:i + chunk] = (x * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def show_views(x: torch.Tensor, t_logits: torch.Tensor, idx: torch.Tensor, shown: torch.Tensor, views: np.ndarray,
               view_logits: torch.Tensor) -> None:
    """In place, for a batch of train faces `idx` (inputs `x` in [0, 1], teacher logits `t_logits`):
    each face whose `shown` is v > 0 becomes its augmented view v, with that view's cached logits."""
    pick = torch.nonzero(shown > 0).flatten()
    if len(pick):
        v, i = shown[pick] - 1, idx[pick]
        x[pick] = torch.from_numpy(views[v.numpy(), i.numpy()]).to(x.device).float() / 255.0
        t_logits[pick] = view_logits[v, i].to(t_logits.device)


def teacher_targets(cache: dict, idx: torch.Tensor, mirrored: torch.Tensor, flip_average: bool) -> torch.Tensor:
    """The teacher's logits for train faces `idx`, each shown mirrored where `mirrored`: the cached
    logits of that view, or with `flip_average` the mean of both views' (the same for either view)."""
    plain, flipped = cache["train"][idx], cache["train_flip"][idx]
    if flip_average:
        return (plain + flipped) / 2
    return torch.where(mirrored.view(-1, 1), flipped, plain)


def distill(cfg: dict, resume: bool = False, log=print) -> dict:
    """Train cfg's model as a student of distill.teacher. Returns what engine.train.train returns."""
    check_values(cfg)
    dist_cfg = cfg.get("distill") or {}
    if not dist_cfg.get("teacher"):
        raise ValueError("distillation needs distill.teacher: a ferlab model file or a shipped name (default)")
    try:  # bad values fail here, before the data and the teacher's logits are computed
        criterion = DistillationLoss(float(dist_cfg.get("temperature", 4.0)), float(dist_cfg.get("alpha", 0.9)))
    except (TypeError, ValueError) as e:
        raise ValueError(f"distill.temperature / distill.alpha: {e}") from None
    flip_average = dist_cfg.get("flip_average", False)
    if not isinstance(flip_average, bool):
        raise ValueError(f"distill.flip_average={flip_average!r}: must be true or false")
    n_views = dist_cfg.get("augmented_views", 0)  # checked by check_values
    tcfg, dcfg = cfg["train"], cfg["data"]
    out = Path(tcfg["out_dir"])
    if resume:
        check_resumable(out)
    teacher_path = resolve_teacher(dist_cfg["teacher"])
    teacher, tmeta = load_model(teacher_path)
    if needs_landmarks(teacher):
        raise ValueError(f"distill.teacher {teacher_path}: teachers that need landmarks are not supported")
    tp = tmeta["preprocess"]
    own_input = (tp["img_size"], tp["channels"]) == (int(dcfg["img_size"]), int(dcfg["channels"]))
    if n_views and not own_input:
        raise ValueError("distill.augmented_views: the teacher must read the student's input (size and colour) to "
                         "see the very faces the student sees")
    device = pick_device()
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    out.mkdir(parents=True, exist_ok=True)
    seed = int(tcfg.get("seed", 0))
    torch.manual_seed(seed)
    splits, arrays = load_split_arrays(dcfg, seed)
    label_set = splits["train"].label_set
    if tuple(tmeta["labels"]) != tuple(label_set):
        raise ValueError(f"distill.teacher {teacher_path} predicts {tmeta['labels']}, the data has {list(label_set)}")
    tr = splits["train"]
    model = create_model(cfg["model"]["name"], num_classes=len(label_set), in_chans=int(dcfg["channels"]),
                         **cfg["model"].get("kwargs", {}))
    if tcfg.get("init_from"):  # a student that starts from a trained model of its architecture
        init_from_checkpoint(model, tcfg["init_from"], cfg["model"]["name"], label_set)
        log(f"weights initialised from {tcfg['init_from']}")
    model = model.to(device)

    cache_file = Path(dist_cfg.get("cache_file") or out / "teacher_logits.pt")
    key = file_fingerprint(teacher_path, [p.name for p in tr.paths] + [tp["img_size"], tp["channels"]])
    cache = None
    if cache_file.is_file():
        cache = torch.load(cache_file, weights_only=True)
        if cache.get("key") != key:
            log(f"{cache_file}: logits of another teacher or image list; computing them again")
            cache = None
    if cache is None:
        t0 = time.time()
        faces = arrays["train"] if own_input else teacher_train_faces(dcfg, tp, tr, seed, log)
        cache = {"key": key, "train": teacher_logits(teacher, tmeta, teacher_path, faces, log=log),
                 "train_flip": teacher_logits(teacher, tmeta, teacher_path, faces, flip=True, log=log)}
        del faces
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        torch.save(cache, tmp)
        tmp.replace(cache_file)
        agree = float((cache["train"].argmax(1).numpy() == tr.labels).mean())
        log(f"teacher logits cached for {len(tr)} train faces and their mirror images ({time.time() - t0:.0f}s; "
            f"teacher agrees with the train labels on {agree:.1%})")

    norm = cfg["norm"]
    if norm != {"mean": tp["mean"], "std": tp["std"]}:
        log(f"note: the student's norm {norm} differs from the teacher's ({tp['mean']}, {tp['std']})")
    aug = {**(cfg.get("augment") or {}), "flip": False}  # the flip is ours, with the matching logits
    views = view_logits = None
    if n_views:  # consistent teaching: augmented faces made once, the teacher's logits of each view cached
        t0 = time.time()
        views = augmented_views(arrays["train"], aug, seed, n_views)
        views_key = json.dumps([key, n_views, seed, sorted(aug.items())], default=str)
        if cache.get("views_key") != views_key:
            cache["views"] = torch.stack([teacher_logits(teacher, tmeta, teacher_path, v, log=log) for v in views])
            cache["views_key"] = views_key
            tmp = cache_file.with_suffix(".tmp")
            torch.save(cache, tmp)
            tmp.replace(cache_file)
            log(f"teacher logits cached for {n_views} augmented view(s) of each train face ({time.time() - t0:.0f}s)")
        view_logits = cache["views"]
    bs = int(tcfg["batch_size"])
    steps = max(1, len(tr) // bs)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, steps)
    epochs = int(cfg["schedule"]["epochs"])
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    ema = weight_ema(model, tcfg)
    best, history, start_epoch = resume_loop(out, resume, log, model, opt, sched, ema=ema)
    evaluated = model if ema is None else ema.module  # what each epoch is selected and saved as
    meta = model_meta(cfg, label_set, {"distilled_from": {"teacher": str(dist_cfg["teacher"]), **{
        k: dist_cfg[k] for k in ("temperature", "alpha", "flip_average", "augmented_views") if k in dist_cfg}}})
    weights = tr.flags["weight"].astype(float) if "weight" in tr.flags and not np.all(tr.flags["weight"] == 1.0) else None
    select_on = tcfg.get("select_on")
    x_all = torch.from_numpy(arrays["train"])
    targets_all = torch.from_numpy(tr.targets).float()
    stop_after = tcfg.get("stop_after_epochs")  # for tests and time-boxed runs: stop as if interrupted
    for epoch in range(start_epoch, epochs):
        if stop_after is not None and epoch - start_epoch >= int(stop_after):
            return stopped_as_asked(out, best, history, stop_after, log)
        t0 = time.time()
        model.train()
        torch.manual_seed(seed * 100003 + epoch + 7)
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        if weights is None:
            order = torch.randperm(len(tr), generator=g)
        else:  # per-source sampling weights, as in engine.train
            order = torch.multinomial(torch.as_tensor(weights, dtype=torch.double), len(tr), replacement=True, generator=g)
        mirror = torch.rand(len(tr), generator=g) < 0.5
        if views is not None:  # drawn only then, so that other runs keep their random stream
            shown = torch.randint(n_views + 1, (len(tr),), generator=g)  # 0: the face itself, v: its view v
        total, correct, loss_sum = 0, 0, 0.0
        for step in range(steps):
            idx = order[step * bs:(step + 1) * bs]
            m = mirror[idx]
            x = x_all[idx].float() / 255.0
            x = torch.where(m.view(-1, 1, 1, 1), x.flip(-1), x)
            t_logits = teacher_targets(cache, idx, m, flip_average).to(device)
            x = augment_batch(x.to(device), aug, g)
            if views is not None:
                show_views(x, t_logits, idx, shown[idx], views, view_logits)
            x = standardise(x, norm)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            tgt = targets_all[idx].to(device)
            logits = model(x)
            loss = criterion(logits, t_logits, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update()
            loss_sum += float(loss.detach()) * len(idx)
            total += len(idx)
            correct += int((logits.argmax(1) == tgt.argmax(1)).sum())
        from .evaluate import predict_probs
        probs = predict_probs(evaluated, arrays["valid"], norm, device, int(tcfg.get("eval_batch_size", 256)))
        vm = selection_metrics(splits["valid"], probs, label_set, select_on)
        history.append(epoch_record(epoch, loss_sum, correct, total, vm, opt, t0))
        best = end_epoch(out, evaluated, meta, vm, history, best, epochs, log,
                         {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                          **(ema.state() if ema is not None else {})})
    return finish_run(out, best, history, splits, arrays, tcfg, device, log)


def teacher_train_faces(dcfg: dict, tp: dict, tr, seed: int, log=print) -> np.ndarray:
    """The student's train faces at the teacher's input (its size and colour; photos through the
    face front end at that size), in the student's order. A face the student has and the teacher's
    input lacks is an error, never a silent mismatch of logits and faces."""
    log(f"teacher reads {tp['img_size']}x{tp['img_size']}x{tp['channels']} faces, the student "
        f"{dcfg['img_size']}x{dcfg['img_size']}x{dcfg['channels']}: loading the train faces at the teacher's input")
    tdcfg = {**dcfg, "img_size": int(tp["img_size"]), "channels": int(tp["channels"]),
             "framing": tp.get("framing", dcfg.get("framing", "fer2013"))}
    tsplits, tarrays = load_split_arrays(tdcfg, seed, only=("train",))
    where = {str(p): i for i, p in enumerate(tsplits["train"].paths)}
    missing = [str(p) for p in tr.paths if str(p) not in where]
    if missing:
        raise ValueError(f"distill.teacher: {len(missing)} train faces of the student are missing at the teacher's "
                         f"input (e.g. {missing[0]})")
    return tarrays["train"][np.array([where[str(p)] for p in tr.paths], dtype=np.int64)]


def resolve_teacher(spec) -> Path:
    """A teacher file, or the name of a model shipped in the package ('default', 'resnet18_ferplus')."""
    from importlib import resources
    shipped = Path(str(resources.files("ferlab") / "weights")) / f"{spec}.safetensors"
    if "/" not in str(spec) and shipped.is_file() and shipped.with_suffix(".json").is_file():
        return shipped
    p = Path(spec)
    if p.suffix != ".safetensors":
        p = p.with_suffix(".safetensors")
    if not p.is_file():
        raise ValueError(f"distill.teacher {spec!r}: no such model file (PATH.safetensors with PATH.json beside it, "
                         "or 'default')")
    return p
