"""Where a portrait's time goes on its trip through `fast` (a probe, one thread): the detector (its
network passes), landmarks and alignment, the model call; with the detector's default schedule (one
pass per face-size level over the resized frame; the bordered whole-frame views skipped beside a
large face), with the earlier tile schedule, and with the tile schedule's every view.

    .venv/bin/python benchmarks/trip_probe.py [--photos 150] -> benchmarks/results/trip_probe.json
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np

from ferlab.app.analyzer import FaceAnalyzer
from ferlab.engine.profiling import git_commit, machine_info, now_utc
from ferlab.faces.frontend import align_detections

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=150)
    ap.add_argument("--model", default="fast")
    a = ap.parse_args()
    if not (TW / "index.csv").is_file():
        raise SystemExit(f"{TW} is not here: this probe needs ../shared/data/twperformers")
    cv2.setNumThreads(1)
    import torch
    torch.set_num_threads(1)
    rows = list(csv.DictReader(open(TW / "index.csv")))
    picked = np.random.RandomState(0).permutation(len(rows))[:a.photos]
    imgs = [cv2.cvtColor(cv2.imread(str(TW / rows[i]["path"])), cv2.COLOR_BGR2RGB) for i in picked]
    fa = FaceAnalyzer(a.model, backend="onnx", threads=1)
    fa.analyze(imgs[0])
    det = fa.detector._det
    run, passes = det._net, []

    def counted(*args, **kw):
        passes[-1] += 1
        return run(*args, **kw)
    det._net = counted
    out = {}
    for name, schedule, skip in (("levels", "scaled", True), ("tiles", "tiles", True),
                                 ("tiles, every view", "tiles", False)):
        det.schedule = schedule
        t = {k: [] for k in ("detect", "landmarks_align", "model", "total")}
        passes.clear()
        for im in imgs:
            passes.append(0)
            t0 = time.perf_counter()
            d = det(im, skip_padded=skip)
            t1 = time.perf_counter()
            batch, pts, _ = align_detections(im, d, fa.landmarker, fa.pre["img_size"], fa.pre["channels"],
                                             fa.pre.get("framing", "fer2013"), fa.antialias)
            t2 = time.perf_counter()
            fa.predict_tensor(batch, pts)
            t3 = time.perf_counter()
            for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                t[k].append(v)
        out[name] = {**{f"{k}_ms": round(1000 * float(np.median(v)), 2) for k, v in t.items()},
                     "passes": float(np.median(passes))}
        print(name, out[name], flush=True)
    rec = {"probe": "trip", "model": a.model, "photos": a.photos, "medians": out,
           "command": "python benchmarks/trip_probe.py" + (f" --photos {a.photos}" if a.photos != 150 else ""),
           "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    (ROOT / "benchmarks" / "results" / "trip_probe.json").write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
