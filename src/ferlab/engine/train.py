"""Training: one loop for every registered model, from a config.

- The best epoch is chosen on the validation split; the test split is evaluated once, at the end,
  with the weights of that epoch.
- A checkpoint is written every epoch (atomically); `resume=True` continues an interrupted run to
  the same result: the data order, augmentation and dropout of epoch e depend only on (seed, e).
- Mixed precision: bf16 autocast on CPUs that have it, fp16/bf16 on GPU (``train.amp``).
- Multi-process data parallel through torch.distributed (launch with torchrun): gloo on CPU,
  nccl on GPU; each rank trains on its shard of the epoch's permutation.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data.arrays import load_splits, standardise
from ..data.augment import augment_batch
from ..data.hybrid import BALANCE_AUGMENT
from ..losses import build_loss, logits_of
from ..models import create_model, model_args, needs_landmarks
from ..models.weights import WEIGHT_FILE_KWARGS
from .checkpoint import RunCheckpoints, grey_weights_for_colour, load_model
from .config import check_values
from .evaluate import evaluate_checkpoint_on_split, predict_probs
from .inputs import model_input_images, model_input_landmarks
from .metrics import classification_metrics
from .sam import build_sam
from .weight_average import restore_weights, weight_ema


def _dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup_distributed(device: torch.device):
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _dist_info()


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def amp_dtype(setting, device: torch.device):
    if setting in (False, "off", "none", None, "fp32"):
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16":
        return torch.bfloat16
    # auto: bf16 where the hardware has it, else off on CPU / fp16 on older GPUs
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        return torch.bfloat16 if torch.backends.mkldnn.is_available() and \
            torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    except (AttributeError, RuntimeError):
        return None


def model_meta(cfg: dict, label_set, extra=None) -> dict:
    d = cfg["data"]
    meta = {"arch": cfg["model"]["name"], "labels": list(label_set),
            # weight files are only read to initialise training: the checkpoint holds every weight
            "model_kwargs": {"in_chans": d["channels"], **{k: v for k, v in cfg["model"].get("kwargs", {}).items()
                                                           if k not in WEIGHT_FILE_KWARGS}},
            "preprocess": {"img_size": d["img_size"], "channels": d["channels"], "mean": cfg["norm"]["mean"],
                           "std": cfg["norm"]["std"], "framing": d.get("framing", "fer2013")},
            "config": cfg}
    meta.update(extra or {})
    return meta


def build_optimizer(cfg, model):
    o = cfg["optim"]
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.get("weight_decay", 0.0)},
              {"params": no_decay, "weight_decay": 0.0}]
    name = o.get("name", "sgd").lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=o["lr"], momentum=o.get("momentum", 0.9), nesterov=o.get("nesterov", False))
    if name == "adam":
        return torch.optim.Adam(groups, lr=o["lr"], betas=tuple(o.get("betas", (0.9, 0.999))))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o.get("betas", (0.9, 0.999))))
    raise ValueError(f"unknown optimiser {name!r} (sgd, adam, adamw)")


def build_scheduler(cfg, opt, steps_per_epoch):
    s = cfg["schedule"]
    epochs = int(s["epochs"])
    name = s.get("name", "onecycle")
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["optim"]["lr"], epochs=epochs,
                                                   steps_per_epoch=steps_per_epoch,
                                                   pct_start=s.get("pct_start", 0.15))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=s.get("step_epochs", 10) * steps_per_epoch,
                                               gamma=s.get("gamma", 0.1))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    raise ValueError(f"unknown schedule {name!r} (onecycle, cosine, step, constant)")


def _epoch_order(n, seed, epoch, weights=None):
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    if weights is not None:
        return torch.multinomial(torch.as_tensor(weights, dtype=torch.double), n, replacement=True, generator=g), g
    return torch.randperm(n, generator=g), g


def selection_metrics(valid, probs, label_set, select_on=None) -> dict:
    """Valid metrics of one epoch. With `select_on` (source names of a hybrid dataset), also each
    source's accuracy and `selection`, their unweighted mean: the score the best epoch is chosen by,
    so that a small source counts as much as a large one."""
    vm = classification_metrics(valid.labels, probs.argmax(1), label_set)
    src = valid.flags.get("source")
    if src is not None:
        pred = probs.argmax(1)
        vm["per_source_accuracy"] = {n: float(np.mean(pred[src == n] == valid.labels[src == n]))
                                     for n in dict.fromkeys(src.tolist())}
    if select_on:
        vm["selection"] = float(np.mean([vm["per_source_accuracy"][n] for n in select_on]))
    return vm


def epoch_record(epoch, loss_sum, correct, total, vm, opt, t0) -> dict:
    """One epoch's line of history.json / log.jsonl."""
    return {"epoch": epoch, "train_loss": loss_sum / max(total, 1), "train_accuracy": correct / max(total, 1),
            "valid_accuracy": vm["accuracy"], "valid_mean_class_accuracy": vm["mean_class_accuracy"],
            "valid_macro_f1": vm["macro_f1"], "lr": opt.param_groups[0]["lr"], "seconds": time.time() - t0,
            **({"valid_per_source": vm["per_source_accuracy"]} if "per_source_accuracy" in vm else {}),
            **({"valid_selection": vm["selection"]} if "selection" in vm else {})}


def end_epoch(out: Path, model, meta: dict, vm: dict, history: list, best: dict, epochs: int, log, state: dict) -> dict:
    """After an epoch (its record last in `history`, valid metrics `vm`): commit the epoch as one
    atomic unit (RunCheckpoints: last and, when valid accuracy improved, best model, the resumable
    train state + `state`, history), then log. Returns best."""
    rec = history[-1]
    epoch = rec["epoch"]
    score = vm.get("selection", vm["accuracy"])
    improved = score > best["valid_accuracy"]
    if improved:
        best = {"valid_accuracy": score, "epoch": epoch}
    best_meta = {**meta, "epoch": epoch, "valid": {k: v for k, v in vm.items() if not isinstance(v, (dict, list))}} \
        if improved else None
    RunCheckpoints(out).save(epoch, model, meta, {**state, "epoch": epoch, "best_valid_accuracy": best["valid_accuracy"],
                                                  "best_epoch": best["epoch"]}, history, best_meta)
    log(f"epoch {epoch + 1}/{epochs} loss {rec['train_loss']:.4f} train_acc {rec['train_accuracy']:.4f} "
        f"valid_acc {vm['accuracy']:.4f} valid_mca {vm['mean_class_accuracy']:.4f} "
        + (" ".join(f"{k} {v:.4f}" for k, v in vm["per_source_accuracy"].items()) + " "
           if "per_source_accuracy" in vm else "")
        + (f"selection {vm['selection']:.4f} " if "selection" in vm else "") +
        f"({rec['seconds']:.0f}s){' *' if improved else ''}")
    return best


def resume_state(out: Path, resume: bool, log, writer: bool = True):
    """Clean what a killed run left half-written; with `resume`, the latest committed epoch:
    (state, weights, history), the run's published files refreshed from it; else None. Only the
    `writer` (rank 0 under DDP) touches files; the other ranks just read."""
    ck = RunCheckpoints(out)
    if not writer:
        return ck.load()[1:] if resume else None
    stale = ck.clean_stale()
    if stale:
        log(f"removed {len(stale)} half-written file(s) of an interrupted save: {', '.join(stale[:4])}")
    if not resume:
        if ck.committed():  # a fresh run in a used folder: the earlier run's epochs must not mix in
            import shutil
            log(f"starting over in {out}: removing the {len(ck.committed())} saved epoch(s) of an earlier run "
                "(use --resume to continue it instead)")
            shutil.rmtree(ck.dir)
        return None
    epoch, st, weights, history = ck.load()
    ck.publish()
    return st, weights, history


def resume_loop(out: Path, resume: bool, log, model, opt, sched, after_weights=None, ema=None) -> tuple[dict, list, int]:
    """For the short loops built on these helpers (head training, distillation): (best, history,
    first epoch), the model, optimiser and scheduler restored from the latest committed epoch
    when resuming (`after_weights()` runs once the weights are in; with a WeightEMA `ema`, the saved
    weights are its average and the trained ones come from the state)."""
    best, history, start = {"valid_accuracy": -1.0, "epoch": -1}, [], 0
    resumed = resume_state(out, resume, log)
    if resumed:
        st, weights, history = resumed
        restore_weights(model, ema, weights, st)
        if after_weights is not None:
            after_weights()
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        best = {"valid_accuracy": float(st["best_valid_accuracy"]), "epoch": int(st["best_epoch"])}
        start = int(st["epoch"]) + 1
        log(f"resumed from epoch {start - 1} (best valid {best['valid_accuracy']:.4f} at epoch {best['epoch']})")
    return best, history, start


def finish_run(out: Path, best: dict, history: list, splits: dict, arrays: dict, tcfg: dict, device, log,
               landmarks=None) -> dict:
    """The run's report; the test split evaluated once, through the best epoch's checkpoint."""
    result = {"out_dir": str(out), "best_epoch": best["epoch"], "best_valid_accuracy": best["valid_accuracy"],
              "history": history}
    if "test" in splits and tcfg.get("evaluate_test", True):
        result["test"] = evaluate_checkpoint_on_split(out / "best", splits["test"], arrays["test"], out / "test",
                                                      device=device, landmarks=landmarks)
        log(f"test (best-on-valid epoch {best['epoch'] + 1}): accuracy {result['test']['accuracy']:.4f}")
    return result


def stopped_as_asked(out: Path, best: dict, history: list, stop_after, log) -> dict:
    """The result of a run stopped by train.stop_after_epochs, as if interrupted (--resume continues it)."""
    log(f"stopping after {stop_after} epochs as asked; continue with --resume")
    return {"out_dir": str(out), "best_epoch": best["epoch"], "best_valid_accuracy": best["valid_accuracy"],
            "history": history, "interrupted": True}


def check_resumable(out: Path) -> None:
    """--resume on a folder with no committed epoch is an error that names the folder."""
    if RunCheckpoints(out).latest() is None:
        raise ValueError(f"--resume: {out} " + ("does not exist" if not out.exists() else
                                                "holds no committed epoch (checkpoints/epoch-NNNN)")
                         + "; nothing to resume (leave out --resume to start this run)")


def load_split_arrays(dcfg: dict, seed: int = 0, only=None):
    """A data config's splits and their uint8 images at the model's input (photos through the face
    front end, `engine.inputs`), the images that fail to decode and the photos whose face the front
    end misses left out (and listed in each split's `skipped`); data.train_subset keeps a fixed
    (seeded) subset. `only`: the names of the splits to read (all when None)."""
    splits = load_splits(dcfg)
    if only is not None:
        splits = {n: s for n, s in splits.items() if n in only}
    size, ch = int(dcfg["img_size"]), int(dcfg["channels"])
    arrays = {}
    for name, s in splits.items():
        imgs, ok = model_input_images(s, size, ch, dcfg.get("framing", "fer2013"))
        keep = np.flatnonzero(ok)
        splits[name], arrays[name] = s.subset(keep), imgs[keep]
    if dcfg.get("train_subset"):
        tr = splits["train"]
        idx = np.sort(np.random.RandomState(seed).permutation(len(tr))[:int(dcfg["train_subset"])])
        splits["train"], arrays["train"] = tr.subset(idx), arrays["train"][idx]
    return splits, arrays


def init_from_checkpoint(model, path, arch: str, label_set) -> None:
    """Copy every weight of a saved ferlab model (PATH.safetensors + .json, int8/fp16 ones too) into
    `model`; the architecture and the label set must be the same. A gray model may start a colour
    one: its first convolution's kernels are split over R, G and B by OpenCV's gray weights, so the colour
    model begins as the gray model on the face made gray. A model whose `trunk_from` names the saved
    model's architecture (DAN: a ResNet-18) takes that model's trunk only (`init_trunk_from`)."""
    src, meta = load_model(path)
    if meta["arch"] != arch and meta["arch"] in getattr(model, "trunk_from", {}):
        init_trunk_from(model, src, path, meta["arch"])
        return
    if meta["arch"] != arch or tuple(meta["labels"]) != tuple(label_set):
        raise ValueError(f"train.init_from: {path} is a {meta['arch']} over {meta['labels']}, this run trains a "
                         f"{arch} over {list(label_set)}")
    sd = grey_weights_for_colour(src.state_dict(), model.state_dict())
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"train.init_from: {path}'s weights do not fit this run's model ({str(e).splitlines()[-1].strip()})") from None


def init_trunk_from(model, src, path, src_arch: str) -> None:
    """A model built on a timm trunk (`model.trunk_from` maps a ferlab architecture onto the prefix
    of that trunk: DAN's ResNet-18) starts from a trained ferlab model's trunk; the source's
    classifier and the model's own parts (heads, classifier) are left as built. A gray source's
    first convolution is split over R, G and B for a colour model, as for a same-architecture start."""
    from ..models.weights import adapt_and_load, require_loaded
    prefix = model.trunk_from[src_arch]
    trunk = {prefix + k[len("net."):]: v for k, v in src.state_dict().items()
             if k.startswith("net.") and not k.startswith("net.fc.")}
    report = adapt_and_load(model, grey_weights_for_colour(trunk, model.state_dict()))
    try:
        require_loaded(report, prefix, path, f"{src_arch} trunk")
    except ValueError as e:
        raise ValueError(f"train.init_from: {e}") from None


def train(cfg: dict, resume: bool = False, log=print) -> dict:
    """Run a training config. Returns the final report (valid + test metrics, paths)."""
    check_values(cfg)
    if resume:
        check_resumable(Path(cfg["train"]["out_dir"]))
    clip_norm = cfg["optim"].get("clip_grad_norm")  # max L2 norm of all gradients together, or None
    if clip_norm is not None and (isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float)) or clip_norm <= 0):
        raise ValueError(f"optim.clip_grad_norm must be a positive number or null, not {clip_norm!r}")
    device = pick_device()
    rank, world = setup_distributed(device)
    tcfg, dcfg = cfg["train"], cfg["data"]
    if tcfg.get("threads"):
        torch.set_num_threads(int(tcfg["threads"]))
    out = Path(tcfg["out_dir"])
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    seed = int(tcfg.get("seed", 0))
    torch.manual_seed(seed)

    # under DDP rank 0 reads (and caches) the data first; the other ranks then read the cache
    if world > 1 and rank != 0:
        dist.barrier()
    splits, arrays = load_split_arrays(dcfg, seed)
    label_set = splits["train"].label_set
    size, ch = int(dcfg["img_size"]), int(dcfg["channels"])
    tr = splits["train"]
    model = create_model(cfg["model"]["name"], num_classes=len(label_set), in_chans=ch,
                         **cfg["model"].get("kwargs", {})).to(device)
    built_for = getattr(model, "img_size", None)  # models with a fixed input size (RASA grid, Swin)
    if built_for is not None and int(built_for) != size:
        raise ValueError(f"model {cfg['model']['name']} is built for {built_for}x{built_for} input but data.img_size "
                         f"is {size}; set model.kwargs.img_size={size}")
    if tcfg.get("init_from"):  # fine-tuning: every weight from a ferlab model of the same architecture (or its trunk)
        init_from_checkpoint(model, tcfg["init_from"], cfg["model"]["name"], label_set)
        if rank == 0:
            log(f"weights initialised from {tcfg['init_from']}")
    use_lm = needs_landmarks(model)
    landmarks = {}
    if use_lm:  # crops: the landmark cache (computed once per dataset); photos: the points they were aligned
        for name, s in splits.items():  # with; in pixels of the model's input
            landmarks[name] = model_input_landmarks(s, size)
    if world > 1 and rank == 0:
        dist.barrier()
    report_skipped = {n: s.skipped for n, s in splits.items() if s.skipped}
    # paper 002: minority classes filled up to equal counts with augmented copies made on the fly
    copies = np.zeros(0, np.int64)
    if dcfg.get("balance_by_augmentation"):
        if dcfg.get("balanced_sampling"):
            raise ValueError("data.balance_by_augmentation and data.balanced_sampling are two ways to balance; pick one")
        from ..data.hybrid import balance_plan
        copies = balance_plan(tr.labels, len(label_set), seed, dcfg.get("balance_target"))
    if rank == 0:
        from ..data.hybrid import composition
        report = {n: {"source": s.source, "n": len(s), "class_counts": s.class_counts(), "composition": composition(s),
                      "skipped": [list(x) for x in s.skipped]} for n, s in splits.items()}
        report["train"]["generated_copies"] = {"n": int(len(copies)), "class_counts": {
            name: int(c) for name, c in zip(label_set, np.bincount(tr.labels[copies], minlength=len(label_set)))}}
        (out / "data_report.json").write_text(json.dumps(report, indent=1))
        log("data: " + ", ".join(f"{n}={len(s)}" for n, s in splits.items()) + f"; labels={list(label_set)}")
        if len(copies):
            log(f"  train balanced by augmentation: {len(copies)} generated copies, "
                f"{len(tr) + len(copies)} samples per epoch")
        for n, sk in report_skipped.items():
            for item, why in sk:
                log(f"  skipped ({n}): {item}: {why}")

    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    ddp = world > 1
    aux = bool(getattr(model, "has_aux_outputs", False))  # models whose loss needs more than logits (DAN)
    bs = int(tcfg["batch_size"])
    sample_src = np.concatenate([np.arange(len(tr)), copies])  # epoch sample -> image (copies repeat images)
    n_train = len(sample_src)
    per_rank = math.ceil(n_train / world)
    steps = max(1, per_rank // bs)
    # two-stage schedule (paper 004): the pretrained backbone frozen for schedule.freeze_epochs,
    # then everything trained at schedule.finetune_lr (constant)
    freeze_epochs = int(cfg["schedule"].get("freeze_epochs") or 0)
    if freeze_epochs:
        if not hasattr(model, "freeze_backbone"):
            raise ValueError(f"schedule.freeze_epochs: model {cfg['model']['name']} has no backbone to freeze")
        if not cfg["model"].get("kwargs", {}).get("pretrained_file"):
            raise ValueError("schedule.freeze_epochs freezes a pretrained backbone: give model.kwargs.pretrained_file "
                             "(a frozen random backbone learns nothing)")
        if cfg["schedule"].get("finetune_lr") is None:
            raise ValueError("schedule.freeze_epochs needs schedule.finetune_lr, the second stage's learning rate")
    elif cfg["model"].get("kwargs", {}).get("freeze_backbone") and not cfg["model"]["kwargs"].get("pretrained_file"):
        raise ValueError("model.kwargs.freeze_backbone needs pretrained weights (model.kwargs.pretrained_file)")

    def phase_of(epoch: int) -> int:
        return 0 if not freeze_epochs else (1 if epoch < freeze_epochs else 2)

    def build_phase(epoch: int):
        """Optimiser, SAM and scheduler for the training phase `epoch` falls in."""
        c = cfg
        if freeze_epochs:
            model.freeze_backbone(epoch < freeze_epochs)
            if epoch >= freeze_epochs:
                c = {**cfg, "optim": {**cfg["optim"], "lr": float(cfg["schedule"]["finetune_lr"])},
                     "schedule": {**cfg["schedule"], "name": "constant"}}
        o = build_optimizer(c, model)
        return o, build_sam(c, o), build_scheduler(c, o, steps)

    resumed = resume_state(out, resume, log, writer=rank == 0)
    st = resumed[0] if resumed else None
    start_epoch = int(st["epoch"]) + 1 if st else 0
    opt, sam, sched = build_phase(start_epoch)
    # built after the phase's freezing: DDP registers the parameters that train when it is built
    net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=aux) if ddp else model
    amp = amp_dtype(tcfg.get("amp", "auto"), device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    mode = dcfg.get("label_mode", "majority")
    weights = None
    if dcfg.get("balanced_sampling"):
        counts = np.bincount(tr.labels, minlength=len(label_set)).astype(float)
        weights = 1.0 / counts[tr.labels]
    if "weight" in tr.flags and not np.all(tr.flags["weight"] == 1.0):  # per-source sampling weights
        if len(copies):
            raise ValueError("per-source weights and data.balance_by_augmentation cannot be combined")
        weights = (np.ones(len(tr)) if weights is None else weights) * tr.flags["weight"].astype(float)
    select_on = tcfg.get("select_on")
    valid_src = splits["valid"].flags.get("source")
    if select_on is not None:
        known = set() if valid_src is None else set(valid_src.tolist())
        if not isinstance(select_on, list) or not select_on or not set(select_on) <= known:
            raise ValueError(f"train.select_on={select_on!r}: must list sources that have a valid split "
                             f"({', '.join(sorted(known)) or 'none: select_on needs a hybrid dataset'})")
    sample_src = torch.from_numpy(sample_src)
    targets_all = torch.from_numpy(tr.targets)
    x_all = torch.from_numpy(arrays["train"])
    lm_all = torch.from_numpy(landmarks["train"]) if use_lm else None
    criterion = build_loss(cfg, label_set, class_prior=tr.targets.mean(0))
    norm = cfg["norm"]
    epochs = int(cfg["schedule"]["epochs"])
    best, history = {"valid_accuracy": -1.0, "epoch": -1}, []
    ema = weight_ema(model, tcfg)
    evaluated = model if ema is None else ema.module  # what each epoch is selected and saved as
    if st is not None:
        restore_weights(model, ema, resumed[1], st)
        if phase_of(start_epoch) == phase_of(start_epoch - 1):  # else a fresh optimiser for the new phase
            opt.load_state_dict(st["optimizer"])
            sched.load_state_dict(st["scheduler"])
        if "scaler" in st:
            scaler.load_state_dict(st["scaler"])
        best = {"valid_accuracy": float(st["best_valid_accuracy"]), "epoch": int(st["best_epoch"])}
        history = resumed[2]
        if rank == 0:
            log(f"resumed from epoch {start_epoch - 1} (best valid {best['valid_accuracy']:.4f} "
                f"at epoch {best['epoch']})")
    meta = model_meta(cfg, label_set)
    stop_after = tcfg.get("stop_after_epochs")  # for tests and time-boxed runs: stop as if interrupted
    for epoch in range(start_epoch, epochs):
        if stop_after is not None and epoch - start_epoch >= int(stop_after):
            if ddp:
                dist.destroy_process_group()
            return stopped_as_asked(out, best, history, stop_after, log if rank == 0 else lambda *_: None)
        if freeze_epochs and epoch == freeze_epochs and epoch != start_epoch:  # stage two: unfreeze
            opt, sam, sched = build_phase(epoch)
            if ddp:
                net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=aux)
            if rank == 0:
                log(f"epoch {epoch + 1}: backbone unfrozen, lr {cfg['schedule']['finetune_lr']}")
        t0 = time.time()
        net.train()
        torch.manual_seed(seed * 100003 + epoch + 7)
        order, g = _epoch_order(n_train, seed, epoch, weights)
        if ddp:
            order = torch.cat([order, order[: per_rank * world - n_train]])[rank::world]
        total, correct, loss_sum, parts_sum = 0, 0, 0.0, {}
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", disable=rank != 0 or not tcfg.get("progress", True),
                   leave=False, mininterval=5)
        for step in bar:
            pos = order[step * bs:(step + 1) * bs]
            idx = sample_src[pos]
            x, pts = x_all[idx].to(device).float() / 255.0, None
            if use_lm:  # landmarks move (and are relabelled on flips) with the image
                x, pts = augment_batch(x, cfg["augment"], g, lm_all[idx].to(device))
            else:
                x = augment_batch(x, cfg["augment"], g)
            is_copy = pos >= len(tr)
            if bool(is_copy.any()):  # generated copies: the paper's balancing augmentation on top
                sel = torch.nonzero(is_copy).flatten().to(device)
                if use_lm:
                    xc, pc = augment_batch(x[sel], BALANCE_AUGMENT, g, pts[sel])
                    pts = pts.index_copy(0, sel, pc)
                else:
                    xc = augment_batch(x[sel], BALANCE_AUGMENT, g)
                x = x.index_copy(0, sel, xc)
            x = standardise(x, norm)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            args = model_args(model, x, pts)
            tgt = targets_all[idx].to(device)
            if mode == "probability":
                tgt = F.one_hot(torch.multinomial(tgt, 1, generator=None).squeeze(1), tgt.shape[1]).float()

            def forward_backward():
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    outs = net(*args, return_aux=True) if aux else net(*args)
                loss = criterion(outs, tgt)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                return outs, loss, dict(getattr(criterion, "parts", {}))

            if sam is None:
                outputs, loss, parts = forward_backward()
            else:  # SAM: gradient at w (local under DDP), step with the gradient at w + e
                with net.no_sync() if ddp else contextlib.nullcontext():
                    outputs, loss, parts = forward_backward()
                sam.perturb(scaler.get_scale() if scaler.is_enabled() else 1.0)
                forward_backward()
                sam.restore()
            logits = logits_of(outputs)
            if clip_norm:  # on the true gradient: unscale first (step() then does not unscale again)
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update()
            loss_sum += float(loss.detach()) * len(idx)
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * len(idx)
            total += len(idx)
            correct += int((logits.argmax(1) == tgt.argmax(1)).sum())
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / total:.3f}")
        probs = predict_probs(evaluated, arrays["valid"], norm, device, int(tcfg["eval_batch_size"]), amp,
                              landmarks.get("valid"))
        vm = selection_metrics(splits["valid"], probs, label_set, select_on)
        rec = epoch_record(epoch, loss_sum, correct, total, vm, opt, t0)
        if parts_sum:
            rec["train_loss_parts"] = {k: v / max(total, 1) for k, v in parts_sum.items()}
        history.append(rec)
        if rank == 0:
            best = end_epoch(out, evaluated, meta, vm, history, best, epochs, log,
                             {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                              "scaler": scaler.state_dict(), **(ema.state() if ema is not None else {})})
        if ddp:
            dist.barrier()
    if rank == 0:
        result = finish_run(out, best, history, splits, arrays, tcfg, device, log, landmarks.get("test"))
    else:
        result = {"out_dir": str(out), "best_epoch": best["epoch"], "best_valid_accuracy": best["valid_accuracy"],
                  "history": history}
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return result
