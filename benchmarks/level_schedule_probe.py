"""The choices behind BlazeFace's level schedule (a probe on the detection benchmark's frames, one
thread): how large a face a level keeps (`LEVEL_LARGEST`), the second look's thresholds retried on
the new schedule, how many faces the level and tile schedules disagree on, the astronaut's mission
patch in the 24 MP test, and one network pass's time at the network's own 128 px and at a 256 px
portrait's 208 px level.

    .venv/bin/python benchmarks/level_schedule_probe.py -> benchmarks/results/level_schedule_probe.json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import detection as D  # noqa: E402  (the benchmark's frames and matching)

from ferlab.engine.profiling import git_commit, machine_info, now_utc  # noqa: E402
from ferlab.faces import blazeface as bf  # noqa: E402
from ferlab.faces.detect import FaceDetector  # noqa: E402


def scores(det, frames) -> dict:
    r = D.multiface_scores(det, frames)
    return {**{k: round(v, 4) for k, v in r["recall_by_side"].items()},
            "false_positives_per_image": round(r["false_positives_per_image"], 4)}


def main():
    cv2.setNumThreads(1)
    seed0 = D.make_sets(False)[3]
    seed1 = D.make_sets(False, seed=1)[3]
    out = {"level_largest": {}, "second_look_thresholds_seed0": {}}
    for largest in (0.5, 0.7, 0.85):
        old, bf.BlazeFaceDetector.LEVEL_LARGEST = bf.BlazeFaceDetector.LEVEL_LARGEST, largest
        det = FaceDetector("blazeface", threads=1)
        out["level_largest"][str(largest)] = {"seed0": scores(det, seed0), "seed1": scores(det, seed1)}
        bf.BlazeFaceDetector.LEVEL_LARGEST = old
        print("level_largest", largest, out["level_largest"][str(largest)], flush=True)
    det = FaceDetector("blazeface", threads=1)
    inner = det._det
    default = (inner.confident, inner.verify_min)
    for confident in (0.6, 0.65, 0.7):
        for verify_min in (0.6, 0.64, 0.68):
            inner.confident, inner.verify_min = confident, verify_min
            out["second_look_thresholds_seed0"][f"confident {confident}, verify_min {verify_min}"] = scores(det, seed0)
    inner.confident, inner.verify_min = default
    print("thresholds", out["second_look_thresholds_seed0"], flush=True)
    tiles = FaceDetector("blazeface", threads=1, schedule="tiles")
    differ, faces = 0, 0
    for canvas, truth, _ in seed1:
        a, b = D.match(det(canvas), truth)[0], D.match(tiles(canvas), truth)[0]
        differ += sum(x != y for x, y in zip(a, b))
        faces += len(truth)
    out["seed1_faces_found_by_one_schedule_only"] = {"faces": faces, "differ": differ}
    from skimage import data
    astro = data.astronaut()
    big = cv2.resize(astro, (6000, 6000), interpolation=cv2.INTER_CUBIC)[500:4500]
    small = cv2.resize(big, (1280, 853), interpolation=cv2.INTER_AREA)  # as the front end's 1280 px copy
    b, _, s = inner._run_level(small, *inner.levels(*small.shape[:2])[0])
    patch = [(float(sc), [round(float(v)) for v in box]) for box, sc in zip(b, s)
             if max(box[2] - box[0], box[3] - box[1]) < inner.min_face]
    out["mission_patch_candidates_under_min_face_at_0.8x"] = sorted(patch, reverse=True)[:3]
    ms = {}
    for side in (128, 208):
        canvas = np.zeros((side, side, 3), np.uint8)
        inner._net(canvas)
        t = time.perf_counter()
        for _ in range(200):
            inner._net(canvas)
        ms[f"{side}x{side}"] = round((time.perf_counter() - t) / 200 * 1000, 3)
    out["ms_per_network_pass"] = ms
    rec = {"probe": "level_schedule", **out, "command": "python benchmarks/level_schedule_probe.py",
           "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    (ROOT / "benchmarks" / "results" / "level_schedule_probe.json").write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()
