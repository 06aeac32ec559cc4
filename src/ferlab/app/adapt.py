"""`ferlab adapt` / `ferlab.adapt`: a model fitted to a user's own labelled faces, on a CPU.

    from ferlab import adapt
    result = adapt("fast", "my_faces/", "adapted/")          # class folders, a CSV or index.csv
    result.path, result.report["held_out"]["adapted"]["accuracy"]

Every photo goes through the shipped front end once (detection, 68 landmarks, alignment at the
base model's input; cached); photos without a face or unreadable are listed and left out. A part is
held out by subject when the data names subjects (a `subject` column, `--subject-column`), else by
photo, stratified by class; the recipe (`engine.adapt`) stops early on it, and the report gives the
base and the adapted model on it, per class, with 95 % intervals. The output is an ordinary ferlab
model file (DIR/model.safetensors + DIR/model.json) with its provenance in the JSON.

Labels: names are matched to ferlab's canonical names where they are synonyms (`happy` ->
happiness). Classes the base knows keep its other outputs (or drop them: `only_these_labels`);
names it does not know (`pain`, `confused`) get new outputs on the base's features when
`new_labels` is set, and are an error otherwise.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.arrays import standardise
from ..data.imageio import IMAGE_SUFFIXES
from ..data.labels import CANONICAL, SYNONYMS
from ..data.readers import DATASET_READERS, DatasetError, SampleList
from ..data.splits import merge
from ..engine.adapt import Recipe, fit, remap_head
from ..engine.checkpoint import CheckpointError, load_model, save_model, weights_sha256
from ..engine.metrics import bootstrap, score

MIN_PER_CLASS = 4  # at least 3 to train on and 1 to hold out
# the recipe `mode='auto'` takes. benchmarks/adapt.py --recipes (fast, twperformers, unseen performers,
# FER+ train replayed; forgetting measured on FER+ valid): with all photos `last` read them about as
# well as `full` (66.1 vs 66.7 %) and kept FER+ valid better (85.14 vs 84.48 %, base 87.28; mean class
# accuracy 66.9 vs 62.6 %, base 69.3); `full` led with 5 photos per class (58.4 vs 56.0 %). Keeping
# what the base knew decides it: `last`.
AUTO_MODE = "last"


@dataclass
class AdaptResult:
    path: Path
    report: dict


def _canonical_or_none(name: str) -> str | None:
    return SYNONYMS.get(str(name).strip().lower())


def read_user_photos(data, label_column: str = "label", subject_column: str | None = None,
                     dataset: str | None = None) -> tuple[list[Path], list[str], list[str] | None]:
    """(paths, raw label names, subjects or None) from class folders (ROOT/<label>/*.jpg), a CSV
    (a path column and `label_column`; paths relative to the CSV), a folder holding index.csv or
    labels.csv, or one of ferlab's dataset readers (`dataset`)."""
    data = Path(data)
    if not data.exists():
        raise DatasetError(f"{data}: no such file or folder")
    if dataset is not None:
        if dataset not in DATASET_READERS:
            raise DatasetError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASET_READERS))}")
        splits = DATASET_READERS[dataset](data, label_set=CANONICAL)
        s = merge(list(splits.values())) if len(splits) > 1 else next(iter(splits.values()))
        return list(s.paths), [s.label_set[i] for i in s.labels], s.groups
    csv_path = data if data.is_file() else next((data / n for n in ("index.csv", "labels.csv") if (data / n).is_file()),
                                                None)
    if csv_path is not None:
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        cols = set(rows[0]) if rows else set()
        for col, what in (("path", "path"), (label_column, "label"), (subject_column, "subject")):
            if col is not None and col not in cols:
                raise DatasetError(f"{csv_path}: no {what} column {col!r} (columns: {', '.join(sorted(cols)) or 'none'})")
        if subject_column is None and "subject" in cols:
            subject_column = "subject"
        paths = [(csv_path.parent / r["path"]) for r in rows]
        labels = [r[label_column] for r in rows]
        subjects = [r[subject_column] for r in rows] if subject_column else None
        return paths, labels, subjects
    if subject_column is not None:
        raise DatasetError(f"{data}: class folders name no subjects; give a CSV with a {subject_column!r} column")
    paths, labels = [], []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                labels.append(folder.name)
    if not paths:
        raise DatasetError(f"{data}: no photos in class folders (give ROOT/<label>/*.jpg, a CSV or index.csv)")
    return paths, labels, None


def _split(labels: np.ndarray, subjects, valid_fraction: float, seed: int) -> np.ndarray:
    """A held-out mask: by subject (stratified by class) when subjects are given, else by photo;
    every class keeps at least one face on each side."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split
    n = len(labels)
    if subjects is not None and len(set(subjects)) >= 3:
        k = max(2, min(round(1 / valid_fraction), len(set(subjects))))
        for s in range(seed, seed + 20):
            folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=s)
            with warnings.catch_warnings():  # a class with fewer faces than folds is fine here: checked below
                warnings.filterwarnings("ignore", "The least populated class", UserWarning)
                _, held = next(folds.split(np.zeros(n), labels, np.asarray(subjects)))
            mask = np.zeros(n, bool)
            mask[held] = True
            if all((labels[mask] == c).any() and (labels[~mask] == c).any() for c in np.unique(labels)):
                return mask
    classes = len(np.unique(labels))
    held = max(classes, int(round(valid_fraction * n)))
    _, idx = train_test_split(np.arange(n), test_size=held, stratify=labels, random_state=seed)
    mask = np.zeros(n, bool)
    mask[idx] = True
    return mask


def _digest_of_files(paths, labels) -> str:
    h = hashlib.sha256()
    for p, lab in sorted(zip(map(str, paths), labels)):
        try:
            st = os.stat(p)
            h.update(f"{p}|{lab}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|{lab}|missing\n".encode())
    return h.hexdigest()[:16]


def _held_out_scores(probs: np.ndarray, out_labels: list[str], true: np.ndarray, user_labels: list[str],
                     groups, n_boot: int) -> dict:
    pred_names = [out_labels[i] for i in probs.argmax(1)]
    pred = np.array([user_labels.index(p) if p in user_labels else -1 for p in pred_names])
    classes = list(range(len(user_labels)))
    r = score(true, pred, classes)
    r["recall"] = {user_labels[c]: v for c, v in r["recall"].items()}
    r["bootstrap"] = bootstrap(true, pred, classes, groups, n_boot=n_boot)
    return r


def adapt(base="default", photos=None, out="adapted", *, dataset: str | None = None, label_column: str = "label",
          subject_column: str | None = None, mode: str = "auto", only_these_labels: bool = False,
          new_labels: bool = False, steps: int | None = None, valid_fraction: float = 0.2, seed: int = 0,
          detector: str = "auto", replay=None, replay_dataset: str = "ferplus", replay_faces: int = 4000,
          n_boot: int = 1000, recipe: Recipe | None = None, progress: bool = True, log=print) -> AdaptResult:
    """Adapt `base` (a shipped name or a model file) to the labelled photos `photos`; writes
    OUT/model.safetensors, OUT/model.json, OUT/report.json and OUT/skipped.csv (photos left out).
    `replay`: faces the adapted model is held to the base's predictions on, so that it forgets less
    of what it read well: a dataset (read with `replay_dataset`'s reader, its train split) or, with
    replay_dataset="photos", any folder of photos, unlabelled; `replay_faces` of them drawn. Returns the model's path and the report."""
    import torch

    from ..faces.aligned_cache import aligned_faces
    from .analyzer import resolve_model
    t0 = time.time()
    if photos is None:
        raise DatasetError("adapt needs labelled photos (class folders, a CSV or index.csv)")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be between 0 and 1 (got {valid_fraction})")
    base_path = resolve_model(base)
    try:
        base_model, meta = load_model(base_path)
    except CheckpointError as e:
        raise CheckpointError(f"base {base!r} is not a ferlab model: {e}") from None
    if meta.get("arch") == "mobilefacenet_landmarks":
        raise CheckpointError(f"base {base!r} is a landmark network, not an emotion model")
    whole_base = base_model  # what the user had: scored on the held-out part beside the adapted model
    if meta.get("arch") == "ensemble":  # adapted through its lead member, which the output file holds
        from ..engine.ensemble import lead_member_model
        ens_pre = meta["preprocess"]
        base_model, meta = lead_member_model(base_model, meta)
        if (meta["preprocess"]["img_size"], meta["preprocess"]["channels"]) != (ens_pre["img_size"], ens_pre["channels"]):
            whole_base = base_model
        log(f"{base} is an ensemble: adapting its lead member ({meta['from_ensemble']['name']}, weight "
            f"{meta['from_ensemble']['weight']:.2g}); the adapted model is that member alone")
    base_labels = list(meta["labels"])

    # labels: the user's names, matched to canonical names where they are synonyms
    paths, raw, subjects = read_user_photos(photos, label_column, subject_column, dataset)
    names = []
    for r in raw:
        c = _canonical_or_none(r)
        names.append(c if c is not None else str(r).strip().lower())
    unknown = sorted({n for n in names if n not in base_labels})
    if unknown and not new_labels:
        raise DatasetError(f"label(s) {', '.join(unknown)} match nothing the base model knows "
                           f"({', '.join(base_labels)}); pass --new-labels to learn them as new classes")
    user_labels = [lab for lab in base_labels if lab in set(names)] + unknown
    if len(user_labels) < 2:
        raise DatasetError(f"{photos}: a single class ({user_labels[0] if user_labels else 'none'}); "
                           "adapting needs photos of at least two classes")
    labels = np.array([user_labels.index(n) for n in names])
    counts = np.bincount(labels, minlength=len(user_labels))
    few = [f"{user_labels[c]} ({counts[c]})" for c in range(len(user_labels)) if counts[c] < MIN_PER_CLASS]
    if few:
        raise DatasetError(f"too few photos in class(es) {', '.join(few)}: each class needs at least "
                           f"{MIN_PER_CLASS} (some to train on, one to hold out)")

    # every photo through the front end once, at the base model's input (cached)
    pre = meta["preprocess"]
    samples = SampleList(paths=[Path(p) for p in paths], labels=labels, label_set=tuple(user_labels),
                         groups=subjects, source="your photos")
    faces, ok, skipped = aligned_faces(samples, pre["img_size"], pre["channels"], pre.get("framing", "fer2013"),
                                       detector, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "skipped.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "why"])
        w.writerows(skipped)
    if not ok.any():
        raise DatasetError(f"{photos}: the front end found no face in any of the {len(paths)} photos "
                           f"(reasons in {out / 'skipped.csv'})")
    if skipped:
        log(f"{len(skipped)} of {len(paths)} photos left out (no face, unreadable or missing), listed in "
            f"{out / 'skipped.csv'}")
    faces, labels = faces[ok], labels[ok]
    subjects = [s for s, k in zip(subjects, ok) if k] if subjects is not None else None
    counts = np.bincount(labels, minlength=len(user_labels))
    log("faces per class: " + ", ".join(f"{lab} {int(c)}" for lab, c in zip(user_labels, counts)))
    few = [f"{user_labels[c]} ({counts[c]})" for c in range(len(user_labels)) if counts[c] < MIN_PER_CLASS]
    if few:
        raise DatasetError(f"after leaving out photos without a face, too few remain in class(es) {', '.join(few)}: "
                           f"each class needs at least {MIN_PER_CLASS}")

    held = _split(labels, subjects, valid_fraction, seed)
    by = "subject" if subjects is not None and len(set(subjects)) >= 3 else "photo"
    log(f"held out by {by}: {int(held.sum())} faces; training on {int((~held).sum())}")

    # the output labels and the head
    out_labels = user_labels if only_these_labels else base_labels + unknown
    model = copy.deepcopy(base_model)
    if out_labels != base_labels:
        remap_head(model, base_labels, out_labels, seed)
    y = np.array([out_labels.index(user_labels[c]) for c in labels])
    shared = [(i, base_labels.index(lab)) for i, lab in enumerate(out_labels) if lab in base_labels]
    if recipe is None:
        recipe = Recipe(mode=AUTO_MODE if mode == "auto" else mode, steps=steps, seed=seed)
    norm = {"mean": pre["mean"], "std": pre["std"]}
    replay_u8 = None
    if replay is not None:
        replay_u8 = _replay_faces(replay, replay_dataset, replay_faces, pre, seed, detector, progress)
        log(f"replay: {len(replay_u8)} faces of {replay}")
    history = fit(model, base_model, norm, faces[~held], y[~held], faces[held], y[held], shared, recipe,
                  replay_u8=replay_u8, progress=progress, log=log)

    # the base and the adapted model on the held-out part
    def probs_of(m):
        with torch.no_grad():
            logits = m(standardise(torch.from_numpy(faces[held]).float() / 255.0, norm)).float()
        return torch.softmax(logits, 1).numpy()
    groups = [s for s, h in zip(subjects, held) if h] if by == "subject" else None
    report = {
        "base": {"name": str(base), "file": str(base_path), "sha256": weights_sha256(base_path)},
        "data": {"source": str(photos), "digest": _digest_of_files(paths, raw), "photos": len(paths),
                 "left_out": len(skipped), "faces_per_class": dict(zip(user_labels, map(int, counts))),
                 "held_out_by": by, "held_out": int(held.sum()), "trained_on": int((~held).sum())},
        "labels": {"user": user_labels, "model": out_labels, "new": unknown},
        "recipe": {**recipe.as_dict(), "replay_data": None if replay is None else
                   {"source": str(replay), "dataset": replay_dataset, "faces": int(len(replay_u8))}},
        "training": {k: v for k, v in history.items() if k != "history"},
        "held_out": {"base": _held_out_scores(probs_of(whole_base), base_labels, labels[held], user_labels,
                                              groups, n_boot),
                     "adapted": _held_out_scores(probs_of(model), out_labels, labels[held], user_labels,
                                                 groups, n_boot)},
        "seconds": None,
    }
    new_meta = {k: v for k, v in meta.items() if k not in ("results", "temperature", "calibration")}
    new_meta["labels"] = out_labels
    if "temperature" in meta and out_labels == base_labels:
        new_meta["temperature"] = meta["temperature"]
    report["seconds"] = round(time.time() - t0, 1)
    new_meta["adapted_from"] = {k: report[k] for k in ("base", "data", "labels", "recipe", "training")}
    new_meta["adapted_from"]["held_out"] = {k: {m: v[m] for m in ("n", "accuracy", "macro_recall")}
                                            for k, v in report["held_out"].items()}
    save_model(out / "model", model, new_meta)  # atomic: an interrupted run leaves no half-written model
    (out / "report.json").write_text(json.dumps({**report, "history": history["history"]}, indent=2) + "\n")
    return AdaptResult(out / "model.safetensors", report)


def _replay_faces(root, dataset: str, n: int, pre: dict, seed: int, detector: str = "auto",
                  progress: bool = False) -> np.ndarray:
    """`n` faces (seeded) at the model's input: of a dataset's train split (`dataset`: a reader's
    name), or, with dataset "photos", of any photos under `root`, unlabelled, each through the front
    end (cached; photos without a face are passed over)."""
    from ..engine.inputs import model_input_images
    if dataset != "photos" and dataset not in DATASET_READERS:
        raise DatasetError(f"unknown replay dataset {dataset!r}; known: photos (any photos), "
                           f"{', '.join(sorted(DATASET_READERS))}")
    if not Path(root).exists():
        raise DatasetError(f"replay data {root}: no such folder")
    rng = np.random.RandomState(seed)
    if dataset == "photos":
        from ..data.imageio import list_images
        from ..faces.aligned_cache import aligned_faces
        files = list_images(root)
        if not files:
            raise DatasetError(f"replay data {root}: no photos in it")
        files = [files[i] for i in np.sort(rng.choice(len(files), size=min(n, len(files)), replace=False))]
        s = SampleList(paths=files, labels=np.zeros(len(files), np.int64), label_set=("neutral",), source="replay photos")
        faces, ok, _ = aligned_faces(s, pre["img_size"], pre["channels"], pre.get("framing", "fer2013"), detector,
                                     progress=progress)
        if not ok.any():
            raise DatasetError(f"replay data {root}: the front end found no face in its {len(files)} photos")
        return faces[ok]
    splits = DATASET_READERS[dataset](Path(root), label_set=CANONICAL)
    s = splits.get("train") or next(iter(splits.values()))
    pick = np.sort(rng.choice(len(s), size=min(n, len(s)), replace=False))
    imgs, ok = model_input_images(s.subset(pick), pre["img_size"], pre["channels"], pre.get("framing", "fer2013"),
                                  progress=False)
    return imgs[ok]


