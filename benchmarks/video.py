"""Video speed and memory: generated 640x480, 30 fps videos of real faces (twperformers photos, or the
astronaut when the set is absent) moved and scaled across the frame: one face and four faces.

Per video: frames/s end to end through `ferlab.app.video.run_video` (decode, detect, landmarks +
align, model, write; every frame analysed) with the time split by stage, and the process's RSS at
frame 1,000 and at the last frame (memory must stay flat).

    .venv/bin/python benchmarks/video.py [--frames 3000] [--runs onnx:1:default,onnx:5:fast] [--long-frames 20000]
        -> benchmarks/results/video.json
    .venv/bin/python benchmarks/video.py --make-video four.mp4 [--faces 4] [--seconds 10]   # a test video
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ferlab.app.analyzer import FaceAnalyzer
from ferlab.app.video import VideoAnalyzer, run_video
from ferlab.engine.profiling import git_commit, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"


def faces_pool(n: int) -> list[np.ndarray]:
    if (TW / "index.csv").is_file():
        rows = list(csv.DictReader(open(TW / "index.csv")))
        return [cv2.cvtColor(cv2.imread(str(TW / rows[i]["path"])), cv2.COLOR_BGR2RGB)
                for i in np.random.RandomState(0).permutation(len(rows))[:n]]
    from skimage import data
    return [data.astronaut()[20:276, 120:376]] * n


def make_video(path: Path, n_frames: int, n_faces: int, fps: int = 30) -> None:
    """Faces (whole 256x256 portraits) drifting and breathing in scale across a 640x480 frame;
    each face's photo changes every 2 s (a new expression)."""
    pool = faces_pool(64)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    for f in range(n_frames):
        frame = np.full((480, 640, 3), 96, np.uint8)
        for k in range(n_faces):
            t = f / fps
            side = int(150 + 30 * np.sin(t * 0.7 + k)) if n_faces == 1 else int(120 + 20 * np.sin(t * 0.7 + k))
            cx = (320 if n_faces == 1 else 160 + 320 * (k % 2)) + 60 * np.sin(t * 0.5 + 2 * k)
            cy = (240 if n_faces == 1 else 120 + 240 * (k // 2)) + 30 * np.cos(t * 0.4 + k)
            img = cv2.resize(pool[(k * 7 + int(t / 2)) % len(pool)], (side, side), interpolation=cv2.INTER_AREA)
            x0, y0 = int(cx - side / 2), int(cy - side / 2)
            x0, y0 = min(max(x0, 0), 640 - side), min(max(y0, 0), 480 - side)
            frame[y0:y0 + side, x0:x0 + side] = img
        w.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    w.release()


class Timed:
    """Wrap the analyzer's stages to time them."""

    def __init__(self, fa: FaceAnalyzer):
        self.t = {"detect": 0.0, "landmarks_align": 0.0, "model": 0.0}
        det, lm, pred = fa.detector, fa.landmarker, fa.predict_tensor
        outer = self

        class D:
            name = det.name

            def __call__(self, rgb):
                s = time.perf_counter()
                r = det(rgb)
                outer.t["detect"] += time.perf_counter() - s
                return r

            def look(self, rgb, box):  # following a face counts as detection time
                s = time.perf_counter()
                r = det.look(rgb, box)
                outer.t["detect"] += time.perf_counter() - s
                return r

            def __getattr__(self, name):
                return getattr(det, name)

        class L:
            def __call__(self, img, box):
                s = time.perf_counter()
                r = lm(img, box)
                outer.t["landmarks_align"] += time.perf_counter() - s
                return r

            def __getattr__(self, name):
                return getattr(lm, name)

        def p(batch, pts=None):
            s = time.perf_counter()
            r = pred(batch, pts)
            outer.t["model"] += time.perf_counter() - s
            return r
        fa.detector, fa.landmarker, fa.predict_tensor = D(), L(), p


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(n_faces: int, n_frames: int, tmp: Path, detect_every: int = 1, backend: str = "auto",
          write_video: bool = False, model: str | None = None) -> dict:
    path = tmp / f"faces{n_faces}_{n_frames}.mp4"
    if not path.is_file():
        make_video(path, n_frames, n_faces)
    fa = FaceAnalyzer(model, backend=backend, threads=1)
    timer = Timed(fa)
    va = VideoAnalyzer(fa, detect_every=detect_every)
    marks = {}
    real_frames = va.frames

    def frames(*a, **k):
        for i, rec in enumerate(real_frames(*a, **k)):
            if i + 1 in (1000, 5000, 10000, n_frames):
                marks[i + 1] = rss_mb()
            yield rec
    va.frames = frames
    out = tmp / f"out{n_faces}_{detect_every}_{backend}_{model}"
    t = time.perf_counter()
    r = run_video(va, path, out, write_video=write_video, progress=False)
    total = time.perf_counter() - t
    rows = list(csv.DictReader(open(out / "frames.csv")))
    stages = {k: v / r["frames_analysed"] * 1000 for k, v in timer.t.items()}
    stages["decode_write_other"] = total / r["frames_analysed"] * 1000 - sum(stages.values())
    return {"faces": n_faces, "model": model or "default", "detect_every": detect_every, "backend": fa.backend,
            "frames": r["frames_analysed"],
            "fps": round(r["frames_analysed"] / total, 2), "ms_per_frame": {k: round(v, 2) for k, v in stages.items()},
            "rows": len(rows), "face_tracks": len(r["faces"]), "rss_mb": {str(k): round(v, 1) for k, v in marks.items()},
            "_rows": rows}


def agreement(rows: list[dict], ref: list[dict]) -> dict:
    """Per frame, faces matched to the every-frame run's faces (box IoU >= 0.5): the share of its
    faces found, the share of those given the same smoothed label, and their mean box IoU."""
    from ferlab.faces.detection import iou_matrix

    def by_frame(rs):
        d = {}
        for x in rs:
            if x["face"]:
                d.setdefault(x["frame"], []).append(x)
        return d
    a, b = by_frame(rows), by_frame(ref)
    n_ref = found = same = 0
    ious = []
    for frame, faces in b.items():
        n_ref += len(faces)
        mine = a.get(frame, [])
        if not mine:
            continue
        box = lambda x: [float(x[k]) for k in ("x0", "y0", "x1", "y1")]  # noqa: E731
        m = iou_matrix([box(x) for x in faces], [box(x) for x in mine])
        for i, x in enumerate(faces):
            j = int(m[i].argmax())
            if m[i, j] >= 0.5:
                found += 1
                ious.append(m[i, j])
                same += mine[j]["label"] == x["label"]
    return {"faces_found": round(found / max(n_ref, 1), 4), "same_label": round(same / max(found, 1), 4),
            "mean_box_iou": round(float(np.mean(ious)) if ious else 0.0, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--runs", default="torch:1:default,onnx:1:default,onnx:5:default,onnx:5:fast",
                    help="BACKEND:DETECT_EVERY:MODEL per run; agreement is measured against the first")
    ap.add_argument("--long-frames", type=int, default=0, help="also a 1-face run this long, for memory (20000)")
    ap.add_argument("--make-video", metavar="PATH", help="only write a generated test video (see --faces, --seconds)")
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    if a.make_video:  # e.g. the README's example: then `ferlab video PATH`
        make_video(Path(a.make_video), int(a.seconds * 30), a.faces)
        print(f"wrote {a.make_video}: {a.faces} face(s), {a.seconds:g} s at 30 fps, 640x480")
        return
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    plan = [(b, int(k), m) for b, k, m in (r.split(":") for r in a.runs.split(","))]
    runs = []
    with tempfile.TemporaryDirectory() as d:
        for n in (1, 4):
            ref = None
            for backend, k, model in plan:
                r = bench(n, a.frames, Path(d), k, backend, model=None if model == "default" else model)
                if ref is None:
                    ref = r["_rows"]
                else:
                    r["agreement_with_first_run"] = agreement(r["_rows"], ref)
                r.pop("_rows")
                print(json.dumps(r), flush=True)
                runs.append(r)
        res = {"videos": runs, "reference_run": "backend {}, detect_every {}, model {}".format(*plan[0])}
        if a.long_frames:
            backend, k, model = plan[-1]
            r = bench(1, a.long_frames, Path(d), k, backend, model=None if model == "default" else model)
            r.pop("_rows")
            marks = r["rss_mb"]
            r["rss_growth_mb_frame_1000_to_last"] = round(marks[str(a.long_frames)] - marks["1000"], 1)
            res["long_run"] = r
            print(json.dumps(r), flush=True)
    res.update({"targets": {"one_face_fps": 30, "four_faces_fps": 15,
                            "rss_growth_mb_frame_1000_to_20000": 50},
                "command": "python benchmarks/video.py " + " ".join(__import__("sys").argv[1:]), "date": now_utc(),
                "git_commit": git_commit(), "machine": machine_info()})
    (ROOT / "benchmarks" / "results" / "video.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "videos"}, indent=1))


if __name__ == "__main__":
    main()
