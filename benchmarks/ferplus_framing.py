"""How a FER2013/FER+ crop frames a face, measured against dlib's HOG face box: the crop's side in
box sides and the box centre's offset from the crop centre (in box sides), on 600 random FER+
training crops (upscaled 4x for the detector). The landmark net (trained on such crops) uses these
numbers to cut a photo's face box to the same framing.

    .venv/bin/python benchmarks/ferplus_framing.py     -> benchmarks/results/ferplus_framing.json
"""
import json
from pathlib import Path

import cv2
import numpy as np

from ferlab.data.arrays import load_splits
from ferlab.data.imageio import read_image
from ferlab.engine.profiling import git_commit, now_utc
from ferlab.faces.detect import HogDetector


def main():
    s = load_splits({"dataset": "ferplus", "label_mode": "majority"})["train"]
    det = HogDetector(upsample=0, threshold=0.0)
    ratio, dx, dy = [], [], []
    for i in np.random.RandomState(0).permutation(len(s))[:600]:
        big = cv2.resize(read_image(s.paths[i], "L"), (192, 192), interpolation=cv2.INTER_CUBIC)
        found = det(np.stack([big] * 3, -1))
        if not found:
            continue
        x0, y0, x1, y1 = found[0].box
        side = max(x1 - x0, y1 - y0)
        ratio.append(192 / side)
        dx.append(((x0 + x1) / 2 - 95.5) / side)
        dy.append(((y0 + y1) / 2 - 95.5) / side)
    res = {"crops_tried": 600, "faces_found": len(ratio),
           "crop_side_over_box_side": {"median": float(np.median(ratio)), "iqr": np.percentile(ratio, [25, 75]).tolist()},
           "box_centre_minus_crop_centre_in_box_sides": {"x_median": float(np.median(dx)), "y_median": float(np.median(dy))},
           "command": "python benchmarks/ferplus_framing.py", "date": now_utc(), "git_commit": git_commit()}
    out = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ferplus_framing.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
