"""The `fer` library (pip install --no-deps fer==25.10.3, run with benchmarks/fer_standin/) on the sets
ferlab's generalisation table reports, as a new user would run it:
- SFEW 2.0 Val, crop protocol: each organiser-aligned face given to fer as one face rectangle (the
  whole image), fer's own padding, gray 64x64 and classifier;
- ExpW test: the photo with its labelled box as fer's face rectangle;
- twperformers: fer's own pipeline (its Haar detector, then its classifier), the largest face, a photo
  with no face counted wrong.
Accuracy, macro recall, per-class recall, 95 % intervals (resampling movies / source photos /
performers) and the expected calibration error, as for ferlab's rows.

    .venv/bin/python benchmarks/fer_elsewhere.py  -> benchmarks/results/fer_elsewhere.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from ferlab.app.photo_eval import bootstrap, read_photo_dataset, score
from ferlab.data.labels import canonical_name
from ferlab.engine.metrics import expected_calibration_error
from ferlab.engine.profiling import git_commit, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def run(fer, samples, rects_of, n_boot=1000) -> dict:
    names = list(samples.label_set)
    present = sorted(set(samples.labels.tolist()))
    pred, conf = np.full(len(samples), -1), np.full(len(samples), np.nan)
    for i, p in enumerate(samples.paths):
        bgr = cv2.imread(str(p))
        faces = fer.detect_emotions(bgr, rects_of(i, bgr)) if bgr is not None else []
        if not faces:
            continue
        face = max(faces, key=lambda f: f["box"][2] * f["box"][3])
        label, c = max(face["emotions"].items(), key=lambda kv: kv[1])
        pred[i] = names.index(canonical_name(label)) if canonical_name(label) in names else -1
        conf[i] = c / max(sum(face["emotions"].values()), 1e-9)
    sc = score(samples.labels, pred, present)
    found = np.isfinite(conf)
    return {"n": int(len(samples)), "accuracy": sc["accuracy"], "macro_recall": sc["macro_recall"],
            "per_class_recall": {names[c]: v for c, v in sc["recall"].items()},
            "bootstrap": bootstrap(samples.labels, pred, present, samples.groups, n_boot),
            "ece": expected_calibration_error(conf[found], (pred == samples.labels)[found]),
            "no_face": int((~found).sum())}


def main():
    for d in ("sfew", "expw", "twperformers"):
        if not (DATA / d / "index.csv").is_file():
            raise SystemExit(f"{DATA / d} is not here: this benchmark needs ../shared/data/{d}")
    sys.path.insert(0, str(ROOT / "benchmarks" / "fer_standin"))  # fer's TensorFlow imports, for this run only
    from fer.fer import FER
    fer = FER()
    sfew = read_photo_dataset(DATA / "sfew", "sfew", "test")
    expw = read_photo_dataset(DATA / "expw", "expw", "test")
    tw = read_photo_dataset(DATA / "twperformers", "twperformers")
    boxes = expw.flags["box"]
    out = {"sfew_val_crop": run(fer, sfew, lambda i, im: [(0, 0, im.shape[1], im.shape[0])]),
           "expw_test": run(fer, expw, lambda i, im: [(int(boxes[i][0]), int(boxes[i][1]),
                                                      int(boxes[i][2] - boxes[i][0]), int(boxes[i][3] - boxes[i][1]))]),
           "twperformers": run(fer, tw, lambda i, im: None)}
    for k, v in out.items():
        print(k, f"{v['accuracy']:.4f}", f"macro {v['macro_recall']:.4f}", f"ece {v['ece']:.3f}", flush=True)
    record = {"library": "fer 25.10.3", "sets": out, "command": "python benchmarks/fer_elsewhere.py",
              "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    (ROOT / "benchmarks" / "results" / "fer_elsewhere.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
