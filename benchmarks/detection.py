"""Face detection benchmark: detection rate, recall, false positives and ms per image for every
detector ferlab has, on four sets made from real faces.

1. `ferplus_crops`: FER+ test crops (48x48, the face fills the crop) as they are: share of crops
   with at least one face found.
2. `ferplus_pasted`: FER+ test crops pasted into 640x480 cuts of real photos without faces
   (scikit-image's bundled pictures), the face 48, 96 or 160 px wide: share found at the pasted place.
3. `twperformers`: the 1,232 photos of ../shared/data/twperformers (256x256, one face each): share
   with a face found.
4. `multiface`: 640x480 cuts of the same backgrounds with 2-6 real faces of 24-200 px (log-uniform
   sides, no overlaps): recall by face size and by source, false positives per image; the ms per
   image here is the time per 640x480 frame. BlazeFace's thresholds were chosen on this draw
   (seed 0); `multiface_seed1` is a second, independent draw that checks them. Half the faces are FER+ test crops (gray, 48 px
   sources: blurred when large), half are twperformers head-and-shoulder cut-outs (colour, 256 px
   sources), placed so that dlib's HOG box of the source photo (1.6 box sides are cut out) has the
   drawn side; that box is the face's true box.

A detection matches a pasted face when its centre lies inside the pasted square and its side is
0.35-1.6 of the square's side (detectors frame faces differently); each face matches at most one
detection, best score first; an unmatched detection is a false positive.

    .venv/bin/python benchmarks/detection.py [--quick]   -> benchmarks/results/detection.json
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from ferlab.data.arrays import load_splits
from ferlab.data.imageio import read_image
from ferlab.engine.profiling import git_commit, machine_info, now_utc
from ferlab.faces.detect import FaceDetector

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"
# scikit-image's bundled pictures with no human (or cat) face in them (not `coins`: its coins bear
# portrait heads, which the detectors rightly find)
BACKGROUNDS = ["coffee", "rocket", "gravel", "brick", "grass", "hubble_deep_field", "moon", "page", "text",
               "chessboard_RGB", "motorcycle_left", "clock_motion", "ihc", "retina", "colorwheel", "horse", "cell"]
DETECTORS = {"blazeface": dict(method="blazeface"), "blazeface-tiles": dict(method="blazeface", schedule="tiles"),
             "blazeface-full": dict(method="blazeface-full"),
             "hog": dict(method="hog"), "haar": dict(method="haar")}


def backgrounds() -> list[np.ndarray]:
    out = []
    for name in BACKGROUNDS:
        fn = getattr(skdata, name, None)
        if fn is None:
            continue
        try:
            img = fn()
        except Exception:  # noqa: BLE001 - a picture that needs a download is left out
            continue
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float32) / max(float(img.max()), 1e-6))).astype(np.uint8)
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        out.append(np.ascontiguousarray(img[..., :3]))
    return out


def background_cut(bgs, rng, w=640, h=480) -> np.ndarray:
    bg = bgs[rng.randint(len(bgs))]
    scale = max(w / bg.shape[1], h / bg.shape[0]) * rng.uniform(1.0, 1.6)
    big = cv2.resize(bg, (int(np.ceil(bg.shape[1] * scale)), int(np.ceil(bg.shape[0] * scale))))
    y, x = rng.randint(0, big.shape[0] - h + 1), rng.randint(0, big.shape[1] - w + 1)
    return np.ascontiguousarray(big[y:y + h, x:x + w])


def paste(canvas, face_gray, x, y, side):
    face = cv2.resize(face_gray, (side, side), interpolation=cv2.INTER_CUBIC if side > 48 else cv2.INTER_AREA)
    canvas[y:y + side, x:x + side] = face[:, :, None]
    return (float(x), float(y), float(x + side), float(y + side))


CUT = 1.6  # a twperformers cut-out is 1.6 face-box sides wide


def tw_cutouts(rows, n, rng) -> list[np.ndarray]:
    """Square colour cut-outs of twperformers photos, CUT HOG-box sides wide around the face."""
    from ferlab.faces.detect import HogDetector
    hog = HogDetector(upsample=1, threshold=0.0)
    out = []
    for i in rng.permutation(len(rows)):
        img = read_image(TW / rows[i]["path"], "RGB")
        d = hog(img)
        if len(d) != 1:
            continue
        x0, y0, x1, y1 = d[0].box
        side = max(x1 - x0, y1 - y0) * CUT
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        p = int(side)
        big = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)
        l, t = int(round(cx - side / 2)) + p, int(round(cy - side / 2)) + p
        out.append(np.ascontiguousarray(big[t:t + int(side), l:l + int(side)]))
        if len(out) >= n:
            break
    return out


def paste_cutout(canvas, cut, x, y, side):
    """Place a cut-out so that its face box has `side` pixels with its corner at (x, y); the part
    of the cut-out outside the canvas is clipped. Returns the face box."""
    full = int(round(side * CUT))
    img = cv2.resize(cut, (full, full), interpolation=cv2.INTER_AREA if full < cut.shape[0] else cv2.INTER_LINEAR)
    m = (full - side) // 2
    X, Y = x - m, y - m
    h, w = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, X), max(0, Y), min(w, X + full), min(h, Y + full)
    canvas[cy0:cy1, cx0:cx1] = img[cy0 - Y:cy1 - Y, cx0 - X:cx1 - X]
    return (float(x), float(y), float(x + side), float(y + side))


def match(dets, truths) -> tuple[list[bool], int]:
    """Greedy matching (best score first): per truth box whether it was found; unmatched detections."""
    found = [False] * len(truths)
    fp = 0
    for d in sorted(dets, key=lambda d: -d.score):
        x0, y0, x1, y1 = d.box
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
        hit = None
        for i, (tx0, ty0, tx1, ty1) in enumerate(truths):
            if not found[i] and tx0 <= cx <= tx1 and ty0 <= cy <= ty1 and 0.35 <= side / (tx1 - tx0) <= 1.6:
                hit = i
                break
        if hit is None:
            fp += 1
        else:
            found[hit] = True
    return found, fp


def timed(det, rgb):
    t = time.perf_counter()
    dets = det(rgb)
    return dets, (time.perf_counter() - t) * 1000


def make_sets(quick: bool, seed: int = 0):
    rng = np.random.RandomState(seed)
    test = load_splits({"dataset": "ferplus", "label_mode": "majority"})["test"]
    order = rng.permutation(len(test))
    n_crops = 300 if quick else len(test)
    crops = [read_image(test.paths[i], "L") for i in order[:n_crops]]
    bgs = backgrounds()
    pasted = []
    for j, face in enumerate(crops[:150 if quick else 500]):
        for side in (48, 96, 160):
            canvas = background_cut(bgs, rng)
            x, y = rng.randint(0, 640 - side), rng.randint(0, 480 - side)
            pasted.append((canvas, [paste(canvas, face, x, y, side)], side))
    tw, rows = [], []
    if (TW / "index.csv").is_file():
        with open(TW / "index.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        tw = [read_image(TW / r["path"], "RGB") for r in (rows[::8] if quick else rows)]
    multi = []
    pool = [read_image(test.paths[i], "L") for i in order[-1200:]]
    cutouts = tw_cutouts(rows, 400, rng) if rows else []
    for _ in range(60 if quick else 300):
        canvas = background_cut(bgs, rng)
        boxes, sources = [], []
        for _ in range(rng.randint(2, 7)):
            side = int(round(np.exp(rng.uniform(np.log(24), np.log(200)))))
            use_tw = bool(cutouts) and rng.rand() < 0.5
            m = int(side * (CUT - 1) / 2) if use_tw else 0  # a cut-out's margin must not cover another face
            for _try in range(30):
                x, y = rng.randint(0, 640 - side), rng.randint(0, 480 - side)
                if all(x + side + m + 4 < b[0] or b[2] + m + 4 < x or y + side + m + 4 < b[1] or b[3] + m + 4 < y
                       for b in boxes):
                    if use_tw:
                        boxes.append(paste_cutout(canvas, cutouts[rng.randint(len(cutouts))], x, y, side))
                    else:
                        boxes.append(paste(canvas, pool[rng.randint(len(pool))], x, y, side))
                    sources.append("twperformers" if use_tw else "ferplus")
                    break
        multi.append((canvas, boxes, sources))
    return crops, pasted, tw, multi


def multiface_scores(det, multi) -> dict:
    sides, found, fps, ms, srcs = [], [], [], [], []
    for canvas, truth, sources in multi:
        d, t = timed(det, canvas)
        f, fp = match(d, truth)
        sides += [b[2] - b[0] for b in truth]
        found += f
        srcs += sources
        fps.append(fp)
        ms.append(t)
    sides, found, srcs = np.array(sides), np.array(found), np.array(srcs)
    bins = [(24, 40), (40, 80), (80, 140), (140, 201)]
    return {"images": len(multi), "faces": int(len(found)),
            "recall_min40": float(found[sides >= 40].mean()),
            "recall_by_side": {f"{a}-{b - 1}": float(found[(sides >= a) & (sides < b)].mean()) for a, b in bins},
            "recall_min40_by_source": {src: float(found[(sides >= 40) & (srcs == src)].mean())
                                       for src in sorted(set(srcs.tolist()))},
            "false_positives_per_image": float(np.mean(fps)),
            "ms_per_640x480_frame": float(np.median(ms)), "ms_p90": float(np.percentile(ms, 90))}


def run(name, det, sets, heldout=None) -> dict:
    crops, pasted, tw, multi = sets
    res = {}
    hits, ms = [], []
    for c in crops:
        d, t = timed(det, np.stack([c] * 3, -1))
        hits.append(bool(d))
        ms.append(t)
    res["ferplus_crops"] = {"n": len(crops), "detection_rate": float(np.mean(hits)), "ms_per_image": float(np.median(ms))}
    by_side, ms = {}, []
    for canvas, truth, side in pasted:
        d, t = timed(det, canvas)
        by_side.setdefault(side, []).append(match(d, truth)[0][0])
        ms.append(t)
    res["ferplus_pasted"] = {"n": len(pasted), "found_by_side": {str(k): float(np.mean(v)) for k, v in by_side.items()},
                             "found": float(np.mean([x for v in by_side.values() for x in v])),
                             "ms_per_image": float(np.median(ms))}
    if tw:
        hits, ms = [], []
        for img in tw:
            d, t = timed(det, img)
            hits.append(bool(d))
            ms.append(t)
        res["twperformers"] = {"n": len(tw), "detection_rate": float(np.mean(hits)), "missed": int(len(tw) - sum(hits)),
                               "ms_per_image": float(np.median(ms))}
    res["multiface"] = multiface_scores(det, multi)
    if heldout is not None:
        res["multiface_seed1"] = multiface_scores(det, heldout)
    print(name, json.dumps(res), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small subsets (a smoke run; not recorded)")
    ap.add_argument("--only", nargs="*", default=list(DETECTORS), choices=list(DETECTORS))
    a = ap.parse_args()
    import cv2 as _cv2
    _cv2.setNumThreads(1)
    sets = make_sets(a.quick)
    heldout = make_sets(True if a.quick else False, seed=1)[3]  # a second draw of multi-face frames
    command = "python benchmarks/detection.py" + (" --quick" if a.quick else "") + \
        (" --only " + " ".join(a.only) if set(a.only) != set(DETECTORS) else "")
    record_path = ROOT / "benchmarks" / "results" / "detection.json"
    results = {}
    if set(a.only) != set(DETECTORS) and record_path.is_file():  # the other detectors' rows stay as recorded
        old = json.loads(record_path.read_text())
        results = {k: {**v, "recorded": v.get("recorded", {k2: old[k2] for k2 in ("command", "date", "git_commit")})}
                   for k, v in old["detectors"].items() if k not in a.only}
    for name in a.only:
        results[name] = {**run(name, FaceDetector(**DETECTORS[name], threads=1), sets, heldout),
                         "recorded": {"command": command, "date": now_utc(), "git_commit": git_commit()}}
    results = {k: results[k] for k in DETECTORS if k in results}
    out = {"detectors": results, "targets": {"ferplus_crops": 0.99, "twperformers": 1.0, "multiface_recall_min40": 0.95,
                                             "multiface_false_positives_per_image": 0.05,
                                             "ms_per_640x480_frame": "less than hog"},
           "settings": "default settings of each detector; one thread; cv2 one thread",
           "command": command, "date": now_utc(),
           "git_commit": git_commit(), "machine": machine_info()}
    if not a.quick:
        record_path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
