"""What about a photo's face makes the default misread it? (issue 20, part 3: features or inputs?)

Every twperformers photo goes through the shipped front end once (BlazeFace, dlib 68 points); the
aligned face is then made several ways before the model sees it, each a hypothesis about how a
sharp studio photo differs from a FER+ crop:
- framing: the alignment template zoomed in or out (`zoom`), moved up or down (`shift`);
- aspect: the photo stretched vertically before alignment (`stretch_y`: the set's photos were resized
  to 256x256 without keeping their aspect ratio, and the faces look squashed), or the face brought
  to the template's proportions by a full affine map of its five points (`affine_align`);
- resolution: blurred, or brought down to 24 px and back up (many FER2013 faces are upscaled);
- tone: gamma, histogram equalisation, CLAHE, contrast;
- compression: JPEG at quality 20.
A variant that gains much says which augmentation (or pre-processing) training should get; if
none does, the features themselves are at fault. twperformers is a development set: this chooses
what to try, it does not score a model.

    .venv/bin/python benchmarks/photo_probe.py [--model default]  -> benchmarks/results/photo_probe.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from ferlab.app.analyzer import FaceAnalyzer
from ferlab.app.photo_eval import largest_face, read_photo_dataset
from ferlab.data.imageio import as_rgb
from ferlab.engine.profiling import git_commit, machine_info, now_utc
from ferlab.faces.align import TEMPLATES, align_face, five_points, warp_crop

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"


def template(zoom: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """The fer2013 template zoomed about the crop centre (zoom > 1: the face fills more of the crop)
    and moved down by `shift` crop sides."""
    t = TEMPLATES["fer2013"]
    return ((t - 0.5) * zoom + 0.5 + np.array([0.0, shift], np.float32)).astype(np.float32)


def affine_crop(rgb, lm, size, tpl) -> np.ndarray:
    """The face warped by a full affine map (not a similarity) of its five points onto the template:
    every face brought to the template's proportions, whatever its aspect."""
    m, _ = cv2.estimateAffine2D(five_points(lm), tpl * size, method=cv2.LMEDS)
    return cv2.cvtColor(warp_crop(rgb, m, size), cv2.COLOR_RGB2GRAY)


def gray_crop(rgb, lm, size, tpl, stretch: float = 1.0) -> np.ndarray:
    """The aligned gray face; `stretch` > 1 first stretches the photo (and its points) vertically;
    stretch None: the affine alignment."""
    if stretch is None:
        return affine_crop(rgb, lm, size, tpl)
    if stretch != 1.0:
        rgb = cv2.resize(rgb, (rgb.shape[1], round(rgb.shape[0] * stretch)), interpolation=cv2.INTER_LINEAR)
        lm = lm * np.array([1.0, stretch], np.float32)
    crop, _, _ = align_face(rgb, lm, size, tpl, antialias=True)
    return cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)


def jpeg(g: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", g, [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


def gamma(g: np.ndarray, v: float) -> np.ndarray:
    return (255.0 * (g / 255.0) ** v).clip(0, 255).astype(np.uint8)


def contrast(g: np.ndarray, v: float) -> np.ndarray:
    m = g.mean()
    return ((g.astype(np.float32) - m) * v + m).clip(0, 255).astype(np.uint8)


CLAHE = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
# name -> (template kwargs, a function of the 48x48 gray crop)
VARIANTS = {
    "as_shipped": ({}, None),
    "zoom_0.85": ({"zoom": 0.85}, None), "zoom_0.92": ({"zoom": 0.92}, None),
    "zoom_1.08": ({"zoom": 1.08}, None), "zoom_1.15": ({"zoom": 1.15}, None),
    "shift_up_0.04": ({"shift": -0.04}, None), "shift_down_0.04": ({"shift": 0.04}, None),
    "stretch_y_1.1": ({"stretch": 1.1}, None), "stretch_y_1.2": ({"stretch": 1.2}, None),
    "stretch_y_1.33": ({"stretch": 1.33}, None), "stretch_y_0.9": ({"stretch": 0.9}, None),
    "affine_align": ({"stretch": None}, None),
    "blur_0.7": ({}, lambda g: cv2.GaussianBlur(g, (0, 0), 0.7)),
    "blur_1.2": ({}, lambda g: cv2.GaussianBlur(g, (0, 0), 1.2)),
    "down_up_24": ({}, lambda g: cv2.resize(cv2.resize(g, (24, 24), interpolation=cv2.INTER_AREA), (48, 48),
                                            interpolation=cv2.INTER_LINEAR)),
    "jpeg_20": ({}, lambda g: jpeg(g, 20)),
    "gamma_0.7": ({}, lambda g: gamma(g, 0.7)), "gamma_1.4": ({}, lambda g: gamma(g, 1.4)),
    "equalize": ({}, cv2.equalizeHist), "clahe": ({}, CLAHE.apply),
    "contrast_0.7": ({}, lambda g: contrast(g, 0.7)), "contrast_1.4": ({}, lambda g: contrast(g, 1.4)),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="model name or weights (default: the shipped default)")
    ap.add_argument("--only", default=None, help="comma-separated variants to print (nothing is recorded)")
    a = ap.parse_args()
    variants = {k: VARIANTS[k] for k in a.only.split(",")} if a.only else VARIANTS
    if not (TW / "index.csv").is_file():
        raise SystemExit(f"{TW} is not here: this benchmark needs ../shared/data/twperformers")
    fa = FaceAnalyzer(a.model)
    size = fa.pre["img_size"]
    tw = read_photo_dataset(TW, "twperformers")
    names = list(tw.label_set)
    col = np.array([names.index(n) if n in names else -1 for n in fa.labels])  # model class -> dataset class
    faces = []
    for p in tw.paths:  # the shipped front end, once: (photo, its largest face's 68 points)
        rgb = as_rgb(p)
        f = largest_face(fa.analyze(rgb))
        faces.append(None if f is None else (rgb, np.asarray(f["landmarks"], np.float32)))
    y = np.asarray(tw.labels)
    present = sorted(set(y.tolist()))
    rows = {}
    for name, (tkw, fn) in variants.items():
        tkw = dict(tkw)
        stretch = tkw.pop("stretch", 1.0)
        tpl = template(**tkw)
        pred = np.full(len(y), -1)
        idx, batch = [], []
        for i, f in enumerate(faces):
            if f is None:
                continue
            g = gray_crop(f[0], f[1], size, tpl, stretch)
            batch.append((fn(g) if fn else g)[None])
            idx.append(i)
        probs = fa.predict_tensor(np.stack(batch))
        pred[idx] = col[probs.argmax(1)]
        rec = {names[c]: round(float(np.mean(pred[y == c] == c)), 3) for c in present}
        rows[name] = {"accuracy": round(float(np.mean(pred == y)), 4),
                      "macro_recall": round(float(np.mean(list(rec.values()))), 4), "per_class_recall": rec,
                      "predicted_neutral": int(np.sum(pred == names.index("neutral")))}
        print(f"{name:16s} acc {rows[name]['accuracy']:.3f} macro {rows[name]['macro_recall']:.3f} "
              f"neutral calls {rows[name]['predicted_neutral']}", flush=True)
    if a.only:
        return
    out = ROOT / "benchmarks" / "results" / "photo_probe.json"
    out.write_text(json.dumps({"model": str(fa.model_path), "twperformers": rows,
                               "command": "python benchmarks/photo_probe.py" + (f" --model {a.model}" if a.model else ""),
                               "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()},
                              indent=2) + "\n")


if __name__ == "__main__":
    main()
