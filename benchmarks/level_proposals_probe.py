"""Does the whole-frame view's say over the finer level lose faces? (a probe, one thread)

On frames of 256x256 (a portrait's size, where the detector's one finer level is the costliest
pass) BlazeFace runs its finer level only where the plain whole-frame view saw a candidate scoring
at least `PROPOSAL_SCORE` outside the faces it found (`BlazeFaceDetector.proposes`). This probe
compares that schedule with every level run, on three sets drawn from real faces, two seeds each:

- `small_face`: a cut of a real background (benchmarks/detection.py's pictures) with one face of
  40-112 px (the level's sizes), half FER+ test crops (grey), half twperformers cut-outs (colour);
- `portrait_and_small_face`: a twperformers portrait with a second face of 40-64 px pasted in a
  corner where it does not cover the portrait's face (the sizes only the level finds);
- `portraits`: twperformers portraits as they are.

Recall (the detection benchmark's matching), false positives per frame, the share of frames whose
level ran and the median ms per frame, for each proposal score tried. Then, on every photo of the
photo datasets that models are trained and measured on (twperformers, ExpW, SFEW), how many photos'
faces differ from those of every level run (count, or a box moved by more than 0.01 px): a skipped
level must not change the faces the shipped models were trained and measured on.

    .venv/bin/python benchmarks/level_proposals_probe.py -> benchmarks/results/level_proposals_probe.json
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import detection as bench  # noqa: E402  (the detection benchmark's backgrounds, pasting and matching)

from ferlab.data.arrays import load_splits  # noqa: E402
from ferlab.data.imageio import read_image  # noqa: E402
from ferlab.engine.profiling import git_commit, machine_info, now_utc  # noqa: E402
from ferlab.faces.blazeface import BlazeFaceDetector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIDE = 256


def make_sets(seed: int, n: int):
    rng = np.random.RandomState(seed)
    rows = list(csv.DictReader(open(bench.TW / "index.csv", newline="")))
    test = load_splits({"dataset": "ferplus", "label_mode": "majority"})["test"]
    fer = [read_image(test.paths[i], "L") for i in rng.permutation(len(test))[:400]]
    cuts = bench.tw_cutouts(rows, 200, rng)
    bgs = bench.backgrounds()
    det = BlazeFaceDetector()
    small, both = [], []
    for j in range(n):
        canvas = bench.background_cut(bgs, rng, SIDE, SIDE)
        side = int(round(np.exp(rng.uniform(np.log(40), np.log(112)))))
        x, y = rng.randint(0, SIDE - side), rng.randint(0, SIDE - side)
        box = (bench.paste(canvas, fer[rng.randint(len(fer))], x, y, side) if j % 2
               else bench.paste_cutout(canvas, cuts[rng.randint(len(cuts))], x, y, side))
        small.append((canvas, [box], side))
    portraits = [read_image(bench.TW / rows[i]["path"], "RGB") for i in rng.permutation(len(rows))[:n]]
    for j, img in enumerate(portraits):
        found = det(img, skip_levels=False)
        if not found:
            continue
        fx0, fy0, fx1, fy1 = found[0].box
        side = int(round(np.exp(rng.uniform(np.log(40), np.log(64)))))
        spots = [(x, y) for x in (2, SIDE - side - 2) for y in (2, SIDE - side - 2)
                 if x + side + 4 < fx0 or fx1 + 4 < x or y + side + 4 < fy0 or fy1 + 4 < y]
        if not spots:
            continue
        x, y = spots[rng.randint(len(spots))]
        canvas = img.copy()
        box = (bench.paste(canvas, fer[rng.randint(len(fer))], x, y, side) if j % 2
               else bench.paste_cutout(canvas, cuts[rng.randint(len(cuts))], x, y, side))
        both.append((canvas, [tuple(found[0].box), box], side))
    return {"small_face": small, "portrait_and_small_face": both,
            "portraits": [(img, None, None) for img in portraits]}


def score(det, frames, skip_levels: bool) -> dict:
    level_runs, ms, found, fps, sides = [], [], [], [], []
    run_level = det._run_level

    def counted(*a, **k):
        level_runs[-1] = 1
        return run_level(*a, **k)
    det._run_level = counted
    try:
        for canvas, truth, side in frames:
            level_runs.append(0)
            t = time.perf_counter()
            d = det(canvas, skip_levels=skip_levels)
            ms.append((time.perf_counter() - t) * 1000)
            if truth is not None:
                f, fp = bench.match(d, truth)
                found.append(f[-1])  # the small face (a portrait's own face is the first truth)
                fps.append(fp)
                sides.append(side)
            else:
                fps.append(max(0, len(d) - 1))
                found.append(bool(d))
    finally:
        det._run_level = run_level
    found, sides = np.array(found), np.array(sides)
    out = {"frames": len(frames), "recall": round(float(found.mean()), 4),
           "false_positives_per_frame": round(float(np.mean(fps)), 4),
           "level_ran": round(float(np.mean(level_runs)), 4), "ms_median": round(float(np.median(ms)), 3)}
    if len(sides):
        out["recall_by_side"] = {f"{a}-{b - 1}": round(float(found[(sides >= a) & (sides < b)].mean()), 4)
                                 for a, b in ((40, 64), (64, 90), (90, 113)) if np.any((sides >= a) & (sides < b))}
    return out


def dataset_changes(det) -> dict:
    """Per photo dataset: photos read, and photos whose faces differ from every level run's."""
    import glob
    data = ROOT.parent / "shared" / "data"
    sets = {"twperformers": sorted(glob.glob(str(data / "twperformers" / "**" / "*.jpg"), recursive=True)),
            "expw": sorted(glob.glob(str(data / "expw" / "images" / "*.jpg"))),
            "sfew": sorted(glob.glob(str(data / "sfew" / "**" / "*.png"), recursive=True))}
    out = {}
    for name, paths in sets.items():
        n = differ = 0
        for p in paths:
            try:
                img = read_image(p, "RGB")
            except Exception:  # noqa: BLE001 - an unreadable photo is no face either way
                continue
            n += 1
            a, b = det(img), det(img, skip_levels=False)
            if len(a) != len(b) or any(np.abs(np.subtract(x.box, y.box)).max() > 0.01 for x, y in zip(a, b)):
                differ += 1
        out[name] = {"photos": n, "faces_differ": differ}
        print(name, out[name], flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--scores", type=float, nargs="+", default=[0.05, 0.1])
    a = ap.parse_args()
    if not (bench.TW / "index.csv").is_file():
        raise SystemExit(f"{bench.TW} is not here: this probe needs ../shared/data/twperformers")
    cv2.setNumThreads(1)
    det = BlazeFaceDetector(threads=1)
    res = {}
    for seed in (0, 1):
        sets = make_sets(seed, a.frames)
        for name, frames in sets.items():
            det(frames[0][0])  # the level's interpreter prepared before timing
            row = {"every level": score(det, frames, False)}
            for s in a.scores:
                det.PROPOSAL_SCORE = s
                row[f"proposals at {s}"] = score(det, frames, True)
            det.PROPOSAL_SCORE = BlazeFaceDetector.PROPOSAL_SCORE
            res.setdefault(f"seed{seed}", {})[name] = row
            print(seed, name, json.dumps(row), flush=True)
    changes = dataset_changes(det)
    rec = {"probe": "level_proposals", "frame_side": SIDE, "results": res, "dataset_photos_changed": changes,
           "shipped_proposal_score": BlazeFaceDetector.PROPOSAL_SCORE,
           "command": "python benchmarks/level_proposals_probe.py", "date": now_utc(), "git_commit": git_commit(),
           "machine": machine_info()}
    (ROOT / "benchmarks" / "results" / "level_proposals_probe.json").write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
