"""Estimate the 'fer2013' alignment template: median five-point positions of dlib's 68 landmarks
on FER+ training crops (whole crop as the face box). Prints the template in unit coordinates.

    .venv/bin/python benchmarks/ferplus_template.py [N]
"""
import sys

import numpy as np

from ferlab.data.arrays import load_splits
from ferlab.data.imageio import read_image
from ferlab.faces.align import estimate_template
from ferlab.faces.landmarks import DlibLandmarks

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
train = load_splits({"dataset": "ferplus", "find_duplicates": False})["train"]
idx = np.random.RandomState(0).permutation(len(train))[:n]
lm = DlibLandmarks()
pts = np.stack([lm.on_crop(read_image(train.paths[i], "L")) for i in idx])
print(np.array2string(estimate_template(pts, 48), precision=4, separator=", "))
