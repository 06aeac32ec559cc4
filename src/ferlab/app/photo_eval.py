"""Evaluation through the photo pipeline on any labelled photos (`ferlab evaluate MODEL --photos DATA`).

Every image goes through `FaceAnalyzer.analyze` (detection -> landmarks -> alignment -> model) as a
user's photo would; the face scored is the one on the dataset's labelled box when it gives one (ExpW:
the detected face with the largest IoU with the box, at least 0.3, else "no face"), else the largest. An image with no face found counts as wrong and is
listed; a predicted class the dataset lacks (contempt on a 7-class set) counts as wrong.

Reported: accuracy, macro recall (mean recall over the dataset's classes), per-class recall, the
expected calibration error of the faces found (top-label confidence, 15 bins), the
confusion matrix (true classes x the model's classes + "no face"), with 95 % bootstrap intervals
that resample subjects when the dataset names them (images of one person are not independent),
else images; the same for every boolean subset flag a reader sets (twperformers: observers_agree).
Predictions are written to a CSV as they come, so an interrupted run keeps what it did.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from ..data.imageio import BadImageError
from ..data.labels import CANONICAL
from ..data.readers import DATASET_READERS, DatasetError, SampleList
from ..data.splits import merge
from ..engine.metrics import bootstrap, expected_calibration_error, score, write_confusion  # noqa: F401 (re-exported)
from ..faces.frontend import largest_index, pick_face
from . import face_table

NO_FACE = "no face"


def read_photo_dataset(path, dataset: str | None = None, split: str | None = None) -> SampleList:
    """Labelled photos from a class-folder tree (ROOT/<class>/ or ROOT/<split>/<class>/), a CSV
    (path,label[,subject][,split]; or a folder holding index.csv / labels.csv), or any dataset
    reader ferlab has (`dataset=`). Every split is used unless `split` names one."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if dataset is None:
        if path.is_file() and path.suffix.lower() == ".csv":
            dataset, kw, root = "csv", {"csv_file": str(path.resolve())}, path.parent
        elif (path / "index.csv").is_file() and _has_columns(path / "index.csv"):
            dataset, kw, root = "csv", {"csv_file": "index.csv"}, path
        elif (path / "labels.csv").is_file():
            dataset, kw, root = "csv", {"csv_file": "labels.csv"}, path
        elif path.is_dir():
            dataset, kw, root = "folder", {}, path
        else:
            raise DatasetError(f"{path}: give a folder of class folders, a CSV list or --dataset NAME")
    else:
        if dataset not in DATASET_READERS:
            raise DatasetError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(DATASET_READERS))}")
        kw, root = {}, path
    splits = DATASET_READERS[dataset](root, label_set=CANONICAL, **kw)
    if split is not None:
        if split not in splits:
            raise DatasetError(f"split {split!r} not in {path} (has {', '.join(splits)})")
        samples = splits[split]
    else:
        samples = merge(list(splits.values())) if len(splits) > 1 else next(iter(splits.values()))
    if not len(samples):
        raise DatasetError(f"{path}: no labelled images found")
    return samples


def _has_columns(csv_path: Path) -> bool:
    with open(csv_path, newline="") as fh:
        header = next(csv.reader(fh), [])
    return {"path", "label"} <= set(header)


def largest_face(faces: list[dict]) -> dict | None:
    i = largest_index([f["box"] for f in faces])
    return None if i is None else faces[i]


def scored_face(faces: list[dict], labelled_box=None) -> dict | None:
    """The face a labelled photo is scored on: with a labelled box (ExpW), the detected face that
    overlaps it most (IoU at least 0.3; else None, "no face"); without one, the largest face."""
    i = pick_face([f["box"] for f in faces], labelled_box)
    return None if i is None else faces[i]


def evaluate_photos(analyzer, samples: SampleList, out_dir=None, n_boot: int = 1000, progress: bool = True,
                    log=print, workers: int = 1) -> dict:
    """Run every image of `samples` through `analyzer` (a FaceAnalyzer); returns the report and,
    with out_dir, writes predictions.csv (as it goes), metrics.json, confusion.csv/.png. `workers`
    processes run the front end ahead of the model (the results are the same for any number)."""
    from tqdm import tqdm

    from .batch import prepared_in_order
    names = list(samples.label_set)
    present = sorted(set(samples.labels.tolist()))
    model_labels = list(analyzer.labels)
    out_dir = Path(out_dir) if out_dir else None
    writer = fh = None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        fh = open(out_dir / "predictions.csv", "w", newline="")
        writer = csv.writer(fh)
        writer.writerow(face_table.header(model_labels, extra=("true_label",)))
    pred_names, no_face, unreadable, t0 = [], [], [], time.perf_counter()
    boxes = samples.flags.get("box")
    confidence = np.full(len(samples), np.nan)
    try:
        stream = prepared_in_order(analyzer, [(str(p), p) for p in samples.paths], workers, keep_rgb=False)
        for i, (p, got) in enumerate(tqdm(zip(samples.paths, stream), total=len(samples.paths), desc="photos",
                                          unit="img", disable=not progress)):
            k = ""
            if isinstance(got[1], BadImageError):
                unreadable.append((str(p), str(got[1])))
                face = False
            else:
                faces = analyzer.classify_prepared([got[2]])[0]
                k = pick_face([f["box"] for f in faces], None if boxes is None else boxes[i])
                face = None if k is None else faces[k]
            if not face:
                if face is None:
                    no_face.append(str(p))
                pred_names.append(NO_FACE)
            else:
                pred_names.append(face["label"])
                confidence[i] = face["confidence"]
            if writer:
                writer.writerow(face_table.row(p, face or None, model_labels, index=k if face else "",
                                               extra=(names[samples.labels[i]],)))
                fh.flush()
    finally:
        if fh:
            fh.close()
    seconds = time.perf_counter() - t0
    idx = {n: i for i, n in enumerate(names)}
    pred = np.array([idx.get(n, -1) for n in pred_names])  # no face / a class the set lacks -> wrong
    true = samples.labels
    report = {"n": int(len(true)), "classes": [names[c] for c in present], "model": str(analyzer.model_path),
              "detector": analyzer.detector.name, "seconds": round(seconds, 1),
              "ms_per_image": round(1000 * seconds / max(1, len(true)), 1),
              **{k: v for k, v in score(true, pred, present).items() if k != "recall"}}
    found = np.isfinite(confidence)
    report["ece"] = expected_calibration_error(confidence[found], (pred == true)[found])  # faces found only
    report["per_class_recall"] = {names[c]: v for c, v in score(true, pred, present)["recall"].items()}
    report["bootstrap"] = bootstrap(true, pred, present, samples.groups, n_boot)
    report["no_face"] = {"n": len(no_face), "images": no_face}
    report["unreadable"] = {"n": len(unreadable), "images": [f"{p}: {e}" for p, e in unreadable]}
    report["skipped_by_reader"] = [list(s) for s in samples.skipped]
    cols = model_labels + [NO_FACE]
    cm = np.zeros((len(present), len(cols)), int)
    for t, pn in zip(true, pred_names):
        cm[present.index(t), cols.index(pn) if pn in cols else len(cols) - 1] += 1
    report["confusion"] = {"rows": [names[c] for c in present], "cols": cols, "counts": cm.tolist()}
    report["predicted_counts"] = {c: int(n) for c, n in zip(cols, cm.sum(0))}
    report["subsets"] = {}
    for flag, mask in samples.flags.items():
        if mask.dtype == bool and mask.any():
            sub = score(true[mask], pred[mask], present)
            groups = None if samples.groups is None else [g for g, m in zip(samples.groups, mask) if m]
            report["subsets"][flag] = {"n": sub["n"], "accuracy": sub["accuracy"], "macro_recall": sub["macro_recall"],
                                       "bootstrap": bootstrap(true[mask], pred[mask], present, groups, n_boot)}
    if out_dir:
        (out_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        write_confusion(cm, report["confusion"]["rows"], out_dir / "confusion",
                        "confusion through the photo pipeline (row-normalised)", cols=cols)
    return report


def evaluate_crops(analyzer, samples: SampleList, n_boot: int = 1000, batch: int = 256) -> dict:
    """The crop protocol: each image of `samples` is taken as the face itself (SFEW's organiser-
    aligned faces, as the papers report them), resized to the model's input with no detection.
    Accuracy, macro recall, per-class recall, 95 % intervals (resampling groups when the data names
    them) and the expected calibration error; unreadable images count wrong."""
    from ..data.imageio import read_image
    names = list(samples.label_set)
    present = sorted(set(samples.labels.tolist()))
    idx = {n: i for i, n in enumerate(names)}
    pred = np.full(len(samples), -1)
    conf = np.full(len(samples), np.nan)
    unreadable = []
    for start in range(0, len(samples), batch):
        rows, crops = [], []
        for i in range(start, min(start + batch, len(samples))):
            try:
                crops.append(read_image(samples.paths[i], "RGB"))
                rows.append(i)
            except BadImageError as e:
                unreadable.append(f"{samples.paths[i]}: {e}")
        for i, r in zip(rows, analyzer.classify_crops(crops) if crops else []):
            pred[i], conf[i] = idx.get(r["label"], -1), r["confidence"]
    true = samples.labels
    sc = score(true, pred, present)
    found = np.isfinite(conf)
    return {"n": int(len(true)), "accuracy": sc["accuracy"], "macro_recall": sc["macro_recall"],
            "per_class_recall": {names[c]: v for c, v in sc["recall"].items()},
            "bootstrap": bootstrap(true, pred, present, samples.groups, n_boot),
            "ece": expected_calibration_error(conf[found], (pred == true)[found]),
            "unreadable": len(unreadable)}
