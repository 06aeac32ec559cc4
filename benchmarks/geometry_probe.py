"""Does face shape carry over where pixels do not? (issue 20, part 3: landmark geometry as an input)

A classifier on the 68 landmark points alone (aligned by the same five-point similarity as the
crops, so only expression and identity shape remain), trained on FER+ train (dlib on the crops,
the cache the RASA model trains from), chosen on FER+ valid; then scored on twperformers through
the shipped front end, alone and fused with the default model (log-probabilities added with a
weight chosen on FER+ valid). twperformers only measures here: nothing is fitted to it.

    .venv/bin/python benchmarks/geometry_probe.py  -> benchmarks/results/geometry_probe.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ferlab.app.analyzer import FaceAnalyzer
from ferlab.app.photo_eval import largest_face, read_photo_dataset
from ferlab.data.arrays import restrict_labels
from ferlab.engine.profiling import git_commit, machine_info, now_utc
from ferlab.faces.align import five_points, similarity_matrix
from ferlab.faces.landmarks import dataset_landmarks

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def shape_features(lm: np.ndarray) -> np.ndarray:
    """(N, 68, 2) points -> (N, 136): the points in the unit frame of the fer2013 template."""
    out = np.zeros((len(lm), 136), np.float32)
    for i, p in enumerate(lm):
        try:
            m = similarity_matrix(five_points(p), "fer2013", 1)
        except ValueError:
            continue
        out[i] = (p @ m[:, :2].T + m[:, 2]).reshape(-1)
    return out


def main():
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fast_default import ferplus_arrays
    from generalisation import ferplus_probs
    if not (TW / "index.csv").is_file():
        raise SystemExit(f"{TW} is not here: this benchmark needs ../shared/data/twperformers")
    fa = FaceAnalyzer()
    labels = tuple(fa.labels)
    data = {}
    for name, split in ferplus_arrays().items():
        s = restrict_labels(split, labels)
        lm, ok = dataset_landmarks(s)
        x = shape_features(lm)
        data[name] = (s, x, ok)
    clf_rows = {}
    best = None
    for hidden in ((64,), (256,), (256, 128)):
        s, x, ok = data["train"]
        clf = make_pipeline(StandardScaler(), MLPClassifier(hidden, alpha=1e-3, max_iter=200, early_stopping=True,
                                                            random_state=0))
        clf.fit(x[ok], np.asarray(s.labels)[ok])
        vs, vx, vok = data["valid"]
        acc = float((clf.predict(vx) == np.asarray(vs.labels))[vok].mean())
        clf_rows[str(hidden)] = {"ferplus_valid_accuracy_landmarks_found": round(acc, 4)}
        print("geometry", hidden, "FER+ valid", round(acc, 4), flush=True)
        if best is None or acc > best[0]:
            best = (acc, hidden, clf)
    _, hidden, clf = best

    def geo_logp(x):
        p = np.zeros((len(x), len(labels)))
        p[:, clf.classes_] = clf.predict_proba(x)
        return np.log(np.maximum(p, 1e-6))

    fer = {}
    for name in ("valid", "test"):
        s, probs = ferplus_probs(fa, data[name][0])
        # ferplus_probs keeps readable images: all FER+ crops are, so rows match data[name]
        assert len(s.labels) == len(data[name][1])
        g = geo_logp(data[name][1])
        g[~data[name][2]] = 0.0  # no landmarks: the CNN alone
        fer[name] = (np.log(np.maximum(probs, 1e-12)), g, np.asarray(s.labels))
    tw = read_photo_dataset(TW, "twperformers")
    names = list(tw.label_set)
    col = np.array([names.index(n) if n in names else -1 for n in labels])
    y = np.asarray(tw.labels)
    cnn = np.zeros((len(y), len(labels)))
    pts = np.zeros((len(y), 68, 2), np.float32)
    found = np.zeros(len(y), bool)
    for i, p in enumerate(tw.paths):
        f = largest_face(fa.analyze(p))
        if f:
            found[i] = True
            cnn[i] = np.log(np.maximum([f["probs"][n] for n in labels], 1e-12))
            pts[i] = f["landmarks"]
    geo = geo_logp(shape_features(pts))
    rows = {}
    for w in WEIGHTS:
        row = {}
        for name in ("valid", "test"):
            c, g, yy = fer[name]
            row[f"ferplus_{name}"] = round(float(((c + w * g).argmax(1) == yy).mean()), 4)
        pred = np.where(found, col[(cnn + w * geo).argmax(1)], -1)
        rec = {names[k]: round(float(np.mean(pred[y == k] == k)), 3) for k in sorted(set(y.tolist()))}
        row.update(twperformers=round(float(np.mean(pred == y)), 4),
                   twperformers_macro_recall=round(float(np.mean(list(rec.values()))), 4), per_class_recall=rec)
        rows[f"cnn + {w} x geometry"] = row
        print(w, json.dumps(row), flush=True)
    pred = np.where(found, col[geo.argmax(1)], -1)
    rec = {names[k]: round(float(np.mean(pred[y == k] == k)), 3) for k in sorted(set(y.tolist()))}
    rows["geometry alone"] = {"ferplus_valid": round(best[0], 4), "twperformers": round(float(np.mean(pred == y)), 4),
                              "twperformers_macro_recall": round(float(np.mean(list(rec.values()))), 4),
                              "per_class_recall": rec}
    print("geometry alone", json.dumps(rows["geometry alone"]), flush=True)
    out = ROOT / "benchmarks" / "results" / "geometry_probe.json"
    out.write_text(json.dumps({"classifier": {"hidden": list(hidden), "tried": clf_rows}, "rows": rows,
                               "note": "FER+ test is reported for every fusion weight; choose the weight on valid",
                               "command": "python benchmarks/geometry_probe.py", "date": now_utc(),
                               "git_commit": git_commit(), "machine": machine_info()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
