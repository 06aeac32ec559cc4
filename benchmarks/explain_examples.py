"""Where a trained model looks on FER+ test faces (one per class), as one PNG: the figure in the README.

    .venv/bin/python benchmarks/explain_examples.py CHECKPOINT OUT.png

Takes the first test image of each class (majority labels), computes what `ferlab explain` shows
(RASA: attention rollout over the landmark patches; DAN: per-head maps + Grad-CAM; CNNs: Grad-CAM)
and draws one row per face with its true and predicted label.
"""
import sys

import numpy as np
import torch

from ferlab.app.explain import explain_batch, render
from ferlab.data.arrays import load_images, load_splits, standardise
from ferlab.engine.checkpoint import load_model
from ferlab.faces import dataset_landmarks
from ferlab.models import needs_landmarks


def main(ckpt, out):
    model, meta = load_model(ckpt)
    pre = meta["preprocess"]
    test = load_splits({"dataset": "ferplus", "label_mode": "majority"})["test"]
    idx = [int(np.flatnonzero(test.labels == c)[0]) for c in range(len(test.label_set)) if (test.labels == c).any()]
    sub = test.subset(np.array(idx))
    imgs, _ = load_images(sub, pre["img_size"], pre["channels"])
    x = standardise(torch.from_numpy(imgs).float() / 255.0, pre)
    # dlib's points only for a model that takes them (RASA): the others explain without dlib
    lm = torch.from_numpy(dataset_landmarks(sub, size=pre["img_size"])[0]) if needs_landmarks(model) else None
    out_d = explain_batch(model, x, lm)
    pred = out_d["logits"].argmax(1).tolist()
    titles = [f"true {sub.label_set[t]}\npred {meta['labels'][p]}" for t, p in zip(sub.labels, pred)]
    centres = out_d["centres"].numpy() if "centres" in out_d else None
    # RASA weighs its patch centres; PCDA's points (its landmark net's) are drawn unweighted
    weights = out_d["weights"][:, :centres.shape[1]].numpy() if centres is not None and "weights" in out_d else None
    render([im.transpose(1, 2, 0) for im in imgs], out_d["panels"], titles, out, centres, weights)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
