"""From a data config to in-memory uint8 image arrays at model resolution, per split.

Images are decoded and resized once and cached on disk (ferlab.data.cache), so training epochs touch
no image files. Unreadable images are skipped and reported, never fatal for the rest.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .cache import cached_arrays
from .imageio import BadImageError, read_image
from .labels import resolve_label_set
from .readers import DATASET_READERS, DatasetError, SampleList


def default_ferplus_root() -> Path:
    env = os.environ.get("FERLAB_FERPLUS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for base in [Path.cwd(), *here.parents]:
        cand = base.parent / "shared" / "data" / "ferplus"
        if (cand / "FER2013Train").is_dir():
            return cand
    return Path("../shared/data/ferplus")


def resize_face(img: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 HxW or HxWx3 -> uint8 (C, size, size)."""
    if channels == 1 and img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if channels == 3 and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[0] != size or img.shape[1] != size:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    if img.ndim == 2:
        img = img[None]
    else:
        img = img.transpose(2, 0, 1)
    return np.ascontiguousarray(img)


def standardise(x, norm: dict):
    """(x - mean) / std for a float tensor or float32 array x (N, C, H, W) in [0, 1]; mean/std a
    number or one value per channel. Arrays stay in NumPy (ONNX Runtime's input: no PyTorch call
    overhead, which a busy machine stretches), with the same float32 values."""
    mean, std = norm["mean"], norm["std"]
    if isinstance(x, np.ndarray):
        m, s = (np.asarray(v, np.float32) for v in (mean, std))
        return (x - (m.reshape(1, -1, 1, 1) if m.ndim else m)) / (s.reshape(1, -1, 1, 1) if s.ndim else s)
    import torch
    if isinstance(mean, (list, tuple)):
        mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if isinstance(std, (list, tuple)):
        std = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def load_images(samples: SampleList, size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode every image of `samples` at (channels, size, size). Returns (images, ok) where `ok`
    marks the samples that decoded; bad ones are appended to samples.skipped."""
    def compute():
        imgs = np.zeros((len(samples), channels, size, size), np.uint8)
        ok = np.zeros(len(samples), bool)
        errors = []
        for i, p in enumerate(samples.paths):
            try:
                imgs[i] = resize_face(read_image(p, "L" if channels == 1 else "RGB"), size, channels)
                ok[i] = True
            except BadImageError as e:
                errors.append(str(e))
        return {"images": imgs, "ok": ok, "errors": np.array(errors, dtype=str)}
    out = cached_arrays(f"images-{size}-{channels}", samples.paths, compute)
    for msg in out["errors"].tolist():
        samples.skipped.append((msg.split(":")[0], msg))
    return out["images"], out["ok"]


# data-config keys about how a model sees the images, not about reading the dataset
MODEL_INPUT_KEYS = ("img_size", "channels", "train_subset", "balanced_sampling", "framing",
                    "balance_by_augmentation", "balance_target")


def load_splits(data_cfg: dict) -> dict[str, SampleList]:
    """Read a dataset's splits from a data config; make a stratified validation split from train
    when the dataset has none (seeded; never the test split)."""
    cfg = {k: v for k, v in data_cfg.items() if k not in MODEL_INPUT_KEYS}
    name = cfg.pop("dataset", "ferplus")
    holdout_per_class = cfg.pop("holdout_per_class", None)
    if name == "hybrid":
        splits = _load_hybrid(cfg)
    else:
        splits = _load_one(name, cfg)
    if holdout_per_class is not None:  # the paper-002 protocol: equal counts per class in valid and test
        from .hybrid import balanced_holdout
        for split in ("valid", "test"):
            if split in splits:
                splits[split] = balanced_holdout(splits[split], holdout_per_class, int(cfg.get("split_seed", 0)))
    return splits


def _load_hybrid(cfg: dict) -> dict[str, SampleList]:
    from .hybrid import merge_sources, source_names
    sources = cfg.pop("sources", None)
    if not sources or not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        raise DatasetError("dataset 'hybrid' needs data.sources: a list of dataset configs, "
                           "e.g. [{dataset: fer2013, root: ...}, {dataset: ckplus, root: ...}]")
    shared = {k: cfg[k] for k in ("labels", "split_seed", "valid_fraction") if k in cfg}
    per_source = []
    for name, src in zip(source_names(sources), sources):
        if src.get("dataset") == "hybrid":
            raise DatasetError("a hybrid dataset's sources cannot be hybrid themselves")
        src = {**shared, **{k: v for k, v in src.items() if k != "name"}}
        weight = src.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise DatasetError(f"data.sources: {name}'s weight must be a positive number, not {weight!r}")
        splits = _load_one(src.pop("dataset", "ferplus"), src)
        if "train" in splits:  # how often each of its training faces is drawn, relative to weight 1
            splits["train"].flags["weight"] = np.full(len(splits["train"]), float(weight), np.float32)
        per_source.append((name, splits))
    return merge_sources(per_source)


# datasets of photos rather than face crops: their images go through the face front end (detection,
# landmarks, alignment) before a model sees them; `front_end: true|false` in a data config overrides
PHOTO_DATASETS = ("expw", "sfew", "twperformers")


def _load_one(name: str, cfg: dict) -> dict[str, SampleList]:
    cfg = dict(cfg)
    if name not in DATASET_READERS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASET_READERS))}")
    front_end = cfg.pop("front_end", name in PHOTO_DATASETS)
    use_splits = cfg.pop("use_splits", None)
    if use_splits is not None and (not isinstance(use_splits, list) or
                                   not set(use_splits) <= {"train", "valid", "test"} or not use_splits):
        raise DatasetError(f"dataset {name!r}: use_splits must be a list of train, valid, test; not {use_splits!r}")
    root = cfg.pop("root", None) or (default_ferplus_root() if name == "ferplus" else None)
    if root is None:
        raise DatasetError(f"dataset {name!r} needs data.root")
    if not Path(root).exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    labels = resolve_label_set(cfg.pop("labels", None))
    protocol = cfg.pop("protocol", "official")
    fold, folds = int(cfg.pop("fold", 0)), int(cfg.pop("folds", 10))
    split_seed = int(cfg.pop("split_seed", 0))
    valid_fraction = float(cfg.pop("valid_fraction", 0.1))
    test_fraction = float(cfg.pop("test_fraction", 0.2))
    splits = DATASET_READERS[name](root, label_set=labels, **cfg)
    splits = {k: restrict_labels(v, labels) for k, v in splits.items()}
    if protocol != "official":
        from .splits import merge, monte_carlo_splits, subject_kfold
        everything = merge(list(splits.values()))
        if protocol == "subject_kfold":
            gen = subject_kfold(everything, folds, split_seed)
        elif protocol == "monte_carlo":
            gen = monte_carlo_splits(everything, folds, test_fraction, split_seed)
        else:
            raise DatasetError(f"unknown protocol {protocol!r} (official, subject_kfold, monte_carlo)")
        if not 0 <= fold < folds:
            raise DatasetError(f"fold {fold} is outside 0..{folds - 1}")
        for i, (tr, te) in enumerate(gen):
            if i == fold:
                splits = {"train": tr, "test": te}
                break
    if use_splits is not None:  # e.g. [train]: a source that only trains (its valid and test stay unseen)
        splits = {k: v for k, v in splits.items() if k in use_splits}
    elif "valid" not in splits and "train" in splits:
        from .splits import stratified_holdout
        splits["train"], splits["valid"] = stratified_holdout(splits["train"], valid_fraction, split_seed)
    if front_end:
        for s in splits.values():
            s.flags["input"] = np.full(len(s), "photo")
    return splits


def restrict_labels(s: SampleList, labels: tuple[str, ...]) -> SampleList:
    """Re-index a SampleList onto `labels`, dropping samples whose label is outside it."""
    if tuple(s.label_set) == tuple(labels):
        return s
    keep_names = [n for n in s.label_set if n in labels]
    col = [s.label_set.index(n) for n in labels if n in s.label_set]
    pos = [labels.index(n) for n in labels if n in s.label_set]
    hard = np.array([s.label_set[i] in labels for i in s.labels], bool) if len(s) else np.zeros(0, bool)
    sub = s.subset(np.flatnonzero(hard))
    tg = np.zeros((len(sub), len(labels)), np.float32)
    tg[:, pos] = sub.targets[:, col]
    tg /= np.clip(tg.sum(1, keepdims=True), 1e-8, None)
    sub.targets = tg
    sub.labels = np.array([labels.index(s.label_set[i]) for i in sub.labels], np.int64)
    sub.label_set = tuple(labels)
    dropped = int((~hard).sum())
    if dropped:
        sub.skipped.append((s.source, f"{dropped} samples with labels outside {labels} left out "
                                      f"(kept classes: {keep_names})"))
    return sub
