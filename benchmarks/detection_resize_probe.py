"""How BlazeFace's input is resized for a pass (a probe, one thread): pixel-area averaging at every
downscale (OpenCV's INTER_AREA, the detector's `resize_for_net`) against a faster way (area
averaging to half size or less; between half and full size a 3x3 Gaussian blur, sigma 0.5, and
bilinear interpolation). Recall and false positives on the detection benchmark's multi-face frames
(seeds 0 and 1), its pasted FER+ faces (both seeds), the detector's time on a 640x480 frame and on
150 twperformers portraits (the two ways taking turns), and what the shipped default reads through
the whole pipeline on ExpW valid and test (faces found, accuracy, labels changed each way).

    .venv/bin/python benchmarks/detection_resize_probe.py -> benchmarks/results/detection_resize_probe.json
"""
from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import detection as D  # noqa: E402  (the benchmark's frames and matching)

from ferlab.data.imageio import read_image  # noqa: E402
from ferlab.engine.profiling import git_commit, machine_info, now_utc  # noqa: E402
from ferlab.faces import blazeface as bf  # noqa: E402
from ferlab.faces.detect import FaceDetector  # noqa: E402

TW = ROOT.parent / "shared" / "data" / "twperformers"
SHIPPED = bf.resize_for_net


def blur_bilinear(img, nw, nh):
    """The way tried: area averaging to half size or less; between half and full size a 3x3
    Gaussian blur (sigma 0.5) and bilinear interpolation; bilinear to enlarge."""
    h, w = img.shape[:2]
    if (nw, nh) == (w, h):
        return img
    scale = max(nw / w, nh / h)
    if scale <= 0.5:
        return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    if scale < 1:
        img = cv2.GaussianBlur(img, (3, 3), 0.5)
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)


WAYS = {"area": SHIPPED, "blur_bilinear": blur_bilinear}


def accuracy(det, sets) -> dict:
    out = {}
    for seed, s in sets.items():
        m = D.multiface_scores(det, s[3])
        by = {}
        for canvas, truth, side in s[1]:
            by.setdefault(side, []).append(D.match(det(canvas), truth)[0][0])
        out[seed] = {"multiface_recall_by_side": {k: round(v, 4) for k, v in m["recall_by_side"].items()},
                     "false_positives_per_image": round(m["false_positives_per_image"], 4),
                     "pasted_found_by_side": {str(k): round(float(np.mean(v)), 4) for k, v in sorted(by.items())}}
    return out


def expw_default() -> dict:
    """The shipped default through the whole pipeline on ExpW valid and test, each way: accuracy,
    faces not found, and how many faces' labels the faster way turns right and wrong."""
    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.app.photo_eval import evaluate_photos, read_photo_dataset
    expw = ROOT.parent / "shared" / "data" / "expw"
    if not (expw / "index.csv").is_file():
        return {"skipped": f"{expw} is not here"}
    fa = FaceAnalyzer("default", backend="onnx", threads=1)
    out = {}
    for split in ("valid", "test"):
        s = read_photo_dataset(expw, "expw", split)
        got, right = {}, {}
        for name, fn in WAYS.items():
            bf.resize_for_net = fn
            with tempfile.TemporaryDirectory() as tmp:
                got[name] = evaluate_photos(fa, s, tmp, n_boot=10, progress=False, log=lambda *_: None)
                rows = list(csv.DictReader(open(Path(tmp) / "predictions.csv")))
            right[name] = np.array([r["label"] == r["true_label"] for r in rows])
        bf.resize_for_net = SHIPPED
        a, b = (right[k] for k in WAYS)
        out[split] = {**{k: {"accuracy": round(v["accuracy"], 4), "no_face": v["no_face"]["n"]} for k, v in got.items()},
                      "faces": len(a), "turned_right": int((~a & b).sum()), "turned_wrong": int((a & ~b).sum())}
    return out


def main():
    cv2.setNumThreads(1)
    sets = {"seed0": D.make_sets(False), "seed1": D.make_sets(False, seed=1)}
    det = FaceDetector("blazeface", threads=1)
    out = {}
    for name, fn in WAYS.items():
        bf.resize_for_net = fn
        out[name] = accuracy(det, sets)
        print(name, json.dumps(out[name]), flush=True)
    frame = sets["seed0"][3][0][0]
    portraits = []
    if (TW / "index.csv").is_file():
        rows = list(csv.DictReader(open(TW / "index.csv")))
        portraits = [read_image(TW / rows[i]["path"]) for i in np.random.RandomState(0).permutation(len(rows))[:150]]
    times = {name: {"frame_640x480": [], "portrait": []} for name in WAYS}
    for _ in range(5):
        for name, fn in WAYS.items():
            bf.resize_for_net = fn
            det(frame)
            t = time.perf_counter()
            for _ in range(20):
                det(frame)
            times[name]["frame_640x480"].append((time.perf_counter() - t) / 20 * 1000)
            if portraits:
                t = time.perf_counter()
                for im in portraits:
                    det(im)
                times[name]["portrait"].append((time.perf_counter() - t) / len(portraits) * 1000)
    bf.resize_for_net = SHIPPED
    for name in WAYS:
        out[name]["detector_ms"] = {k: round(float(np.median(v)), 2) for k, v in times[name].items() if v}
    print(json.dumps({k: v["detector_ms"] for k, v in out.items()}), flush=True)
    out["expw_default"] = expw_default()
    print(json.dumps(out["expw_default"]), flush=True)
    rec = {"probe": "detection_resize", **out, "command": "python benchmarks/detection_resize_probe.py",
           "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    (ROOT / "benchmarks" / "results" / "detection_resize_probe.json").write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
