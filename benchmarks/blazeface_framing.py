"""How BlazeFace's box relates to dlib's HOG box on the same face, so that dlib's shape predictor
(trained on HOG boxes) gets the framing it expects when BlazeFace is the detector.

On 600 random FER+ training crops (upscaled 4x to 192 px, on a 320 px gray canvas) and on every
twperformers photo, where both detectors find exactly one face and the boxes overlap: the HOG box
centre's offset from the BlazeFace box centre (in BlazeFace box sides) and the ratio of the sides.
The medians of the two sets, averaged, are `HOG_FRAMING` in src/ferlab/faces/blazeface.py.

    .venv/bin/python benchmarks/blazeface_framing.py   -> benchmarks/results/blazeface_framing.json
"""
import csv
import json
from pathlib import Path

import cv2
import numpy as np

from ferlab.data.arrays import load_splits
from ferlab.data.imageio import read_image
from ferlab.engine.profiling import git_commit, machine_info, now_utc
from ferlab.faces.blazeface import BlazeFaceDetector
from ferlab.faces.detect import HogDetector

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"


def ferplus_images(n=600):
    s = load_splits({"dataset": "ferplus", "label_mode": "majority"})["train"]
    for i in np.random.RandomState(0).permutation(len(s))[:n]:
        big = cv2.resize(read_image(s.paths[i], "L"), (192, 192), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((320, 320), 128, np.uint8)
        canvas[64:256, 64:256] = big
        yield np.stack([canvas] * 3, -1)


def tw_images():
    with open(TW / "index.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            yield read_image(TW / r["path"], "RGB")


def relation(images, blaze, hog):
    dx, dy, ratio = [], [], []
    for rgb in images:
        b, h = blaze(rgb), hog(rgb)
        if len(b) != 1 or len(h) != 1:
            continue
        bx0, by0, bx1, by1 = b[0].box
        hx0, hy0, hx1, hy1 = h[0].box
        side = max(bx1 - bx0, by1 - by0)
        ddx, ddy = ((hx0 + hx1) - (bx0 + bx1)) / 2 / side, ((hy0 + hy1) - (by0 + by1)) / 2 / side
        if abs(ddx) > 0.5 or abs(ddy) > 0.5:
            continue
        dx.append(ddx)
        dy.append(ddy)
        ratio.append(max(hx1 - hx0, hy1 - hy0) / side)
    return {"faces": len(dx), "dx": float(np.median(dx)), "dy": float(np.median(dy)), "scale": float(np.median(ratio)),
            "scale_iqr": np.percentile(ratio, [25, 75]).round(4).tolist()}


def main():
    blaze = BlazeFaceDetector("short", tiles=False)
    hog = HogDetector(upsample=1, threshold=0.0)
    res = {"ferplus_train_600": relation(ferplus_images(), blaze, hog)}
    if (TW / "index.csv").is_file():
        res["twperformers"] = relation(tw_images(), blaze, hog)
    sets = [v for v in res.values()]
    res["hog_framing"] = {k: round(float(np.mean([v[k] for v in sets])), 4) for k in ("dx", "dy", "scale")}
    res.update({"command": "python benchmarks/blazeface_framing.py", "date": now_utc(), "git_commit": git_commit(),
                "machine": machine_info()})
    (ROOT / "benchmarks" / "results" / "blazeface_framing.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
