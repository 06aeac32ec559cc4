"""Where a portrait's time goes on its trip through `fast` (a probe, one thread): the detector (its
network passes), landmarks and alignment, the model call; with the detector's default schedule (one
pass per face-size level over the resized frame; the bordered whole-frame views skipped beside a
large face), with the earlier tile schedule, and with the tile schedule's every view. Then the parts
of the trip a profile points at, each timed two ways on the same photos: decoding the JPEG file
(PIL, which ferlab uses for EXIF orientation and every format, against OpenCV's imdecode), the
network's input (a float copy handed over, against scaling straight into the interpreter's buffer),
and dlib's 68 points alone against right after a detector pass (its 100 MB model read from caches the
detector has emptied). The level's resize is compared in benchmarks/detection_resize_probe.py.

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


def parts(fa, det, paths, imgs) -> dict:
    """Median ms per photo of each part, two ways, the ways timed in turn over 5 rounds."""
    from ferlab.data.imageio import decode_image
    det.schedule = "scaled"
    raws = [Path(p).read_bytes() for p in paths]
    boxes = [(im, d[0].box_for_landmarks) for im in imgs for d in [det(im)] if d]
    canvases = [cv2.resize(im, (208, 208), interpolation=cv2.INTER_AREA) for im in imgs]
    it, inp, *_ = det._interpreter(208, 208)

    def copy_in(c):
        it.set_tensor(inp, (c.astype(np.float32) * (1 / 127.5) - 1.0)[None])

    def write_in(c):
        x = it.tensor(inp)()
        np.multiply(c, np.float32(1 / 127.5), out=x[0], casting="unsafe")
        x -= np.float32(1.0)
        del x

    def after_detector(b):
        det(b[0])
        t = time.perf_counter()
        fa.landmarker(*b)
        return time.perf_counter() - t

    ways = {
        "decode: PIL": (raws, lambda r: decode_image(r)),
        "decode: cv2.imdecode": (raws, lambda r: cv2.cvtColor(cv2.imdecode(np.frombuffer(r, np.uint8), cv2.IMREAD_COLOR),
                                                              cv2.COLOR_BGR2RGB)),
        "network input: float copy + set_tensor": (canvases, copy_in),
        "network input: scaled into the buffer": (canvases, write_in),
        "dlib 68 points: alone": (boxes, lambda b: fa.landmarker(*b)),
        "dlib 68 points: right after a detector pass": (boxes, after_detector),
    }
    times = {k: [] for k in ways}
    for _ in range(5):
        for name, (xs, f) in ways.items():
            total = 0.0
            for x in xs:
                t = time.perf_counter()
                r = f(x)
                total += r if isinstance(r, float) else time.perf_counter() - t
            times[name].append(total / len(xs) * 1000)
    return {k: round(float(np.median(v)), 3) for k, v in times.items()}


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
    out_parts = parts(fa, det, [TW / rows[i]["path"] for i in picked], imgs)
    print("parts", out_parts, flush=True)
    rec = {"probe": "trip", "model": a.model, "photos": a.photos, "medians": out, "parts_ms": out_parts,
           "command": "python benchmarks/trip_probe.py" + (f" --photos {a.photos}" if a.photos != 150 else ""),
           "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    (ROOT / "benchmarks" / "results" / "trip_probe.json").write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
