"""The `ferlab` command line. Every user error ends in one clear message and a non-zero exit
(FERLAB_DEBUG=1 shows the traceback instead)."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# the registered architectures with one line each, here so that `ferlab models` imports no torch
# (tests/test_layout.py checks it against the registry)
MODELS = {
    "convcut": "paper 004: ConvNeXt cut after stage 2, detail extraction + self-attention",
    "fastnet_l": "ferlab's small residual CNN, 32-256 channels (a distilled student: the fast path)",
    "fastnet_m": "ferlab's small residual CNN, 24-192 channels (a distilled student)",
    "fastnet_s": "ferlab's small residual CNN, 16-128 channels (a distilled student)",
    "dlib_resnet29": "dlib's 29-layer face-recognition ResNet with a FER head (pretrained_file: dlib, 104 px or more)",
    "dan": "paper 001: ResNet-18 with a multi-head cross attention network (affinity + partition losses)",
    "ensemble": "trained models read as one: the weighted mean of their calibrated probabilities (ferlab ensemble)",
    "efficientnet_lite0": "EfficientNet-Lite0 (timm), optionally from ImageNet weights (pretrained_file: imagenet)",
    "pcda": "paper 003: IR-50 image branch + MobileFaceNet landmark branch, cross-attention, NeAA loss",
    "rasa": "paper 000: landmark-centred patches through a small transformer",
    "rasa_grid": "paper 000's transformer on a regular grid of patches (its ablation)",
    "resnet18": "ResNet-18 baseline (timm); the shipped default",
    "resnet34": "ResNet-34 baseline (timm)",
    "swin_se": "paper 002: Swin-T with squeeze-and-excitation, trained with SAM",
    "swin_t": "Swin-T without SE (paper 002's baseline)",
}

# the detector names of ferlab.faces.DETECTORS (kept here so that parsing arguments imports no OpenCV)
DETECTOR_CHOICES = ("auto", "blazeface", "blazeface-full", "hog", "haar")
def add_model_opt(q) -> None:
    """--model: a .safetensors path or a shipped name; every command's default is ferlab.DEFAULT_MODEL."""
    from .app.defaults import DEFAULT_MODEL
    q.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model file (PATH.safetensors) or shipped name (see `ferlab models`; default: {DEFAULT_MODEL})")


def engine_opts(a) -> dict:
    """FaceAnalyzer's backend and thread options from a command's arguments."""
    return {"backend": getattr(a, "backend", "auto"), "threads": getattr(a, "threads", None),
            "min_face": getattr(a, "min_face", 40)}


def add_engine_opts(q) -> None:
    q.add_argument("--backend", default="auto", choices=["auto", "onnx", "torch"],
                   help="model inference: ONNX Runtime (auto: when the model exports) or PyTorch")
    q.add_argument("--threads", type=whole_number(1), default=None,
                   help="the model's CPU threads (default 1 on ONNX Runtime: no oversubscription on a busy machine)")
    q.add_argument("--min-face", type=whole_number(8), default=40,
                   help="smallest face looked for, in pixels (BlazeFace; larger is faster on small photos)")


def whole_number(lo: int, what: str = "a whole number"):
    """An argparse type: an int of at least `lo` (argparse turns the error into one usage line)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least {lo}")
        return v
    return parse


def finite_number(text: str) -> float:
    import math
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def cmd_train(a):
    from .engine.config import load_config
    from .engine.train import train
    cfg = load_config(None if a.config == "-" else a.config, a.overrides)
    if a.out_dir:
        cfg["train"]["out_dir"] = a.out_dir
    if cfg.get("distill"):  # a student trained on a teacher's cached logits
        from .engine.distill import distill as train
    r = train(cfg, resume=a.resume, log=lambda m: print(m, flush=True))
    print(f"best epoch {r['best_epoch'] + 1}, valid accuracy {r['best_valid_accuracy']:.4f}; "
          f"outputs in {r['out_dir']}")
    return 0


def _astronaut():
    from skimage import data
    return data.astronaut(), "astronaut.png"


def _print_faces(name, faces):
    print(f"{name}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
    for i, f in enumerate(faces, 1):
        x0, y0, x1, y1 = f["box"]
        print(f"  face {i}: box=({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) detector={f['detector']} "
              f"score={f['score']:.2f} -> {f['label']} ({f['confidence']:.1%})")
        ranked = sorted(f["probs"].items(), key=lambda kv: -kv[1])
        print("    " + "  ".join(f"{k} {v:.3f}" for k, v in ranked))


def cmd_predict(a):
    import json
    from pathlib import Path

    from .app.analyzer import FaceAnalyzer
    from .app.batch import run_batch
    from .data.imageio import BadImageError, list_images
    out_dir = Path(a.out)
    inputs = a.inputs or [None]
    items = []  # (display name, source)
    for inp in inputs:
        if inp is None:
            rgb, name = _astronaut()
            items.append((name, rgb))
            continue
        p = Path(inp)
        if p.is_dir():
            files = list_images(p)
            others = sorted(f for f in p.rglob("*") if f.is_file() and f not in set(files))
            items += [(str(f), f) for f in files]
            items += [(str(f), ("not-image", f)) for f in others]
            if not files and not others:
                raise UserError(f"{p}: folder holds no files")
        else:
            items.append((str(p), p))
    single = len(items) == 1
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a folder")
    annotate = a.annotate if a.annotate is not None else len(items) <= 10
    fa = FaceAnalyzer(a.model, detector=a.detector, upsample=a.upsample, min_score=a.min_score, landmarks=a.landmarks,
                      **engine_opts(a))
    verbose = len(items) <= 10

    def show(rec):
        if verbose:
            _print_faces(rec["input"], rec["faces"])
            if "annotated" in rec:
                print(f"  annotated image: {rec['annotated']}")
    from .app.batch import default_workers
    workers = getattr(a, "workers", None) or (default_workers() if len(items) > 1 else 1)
    results, skipped = run_batch(fa, items, out_dir, annotate, progress=not verbose and (sys.stderr.isatty() or a.progress),
                                 on_faces=show, workers=workers)
    if single and skipped:
        if skipped[0]["reason"] == "no face found":
            print(f"{items[0][0]}: no face found", file=sys.stderr)
            return 3
        raise BadImageError(skipped[0]["reason"])
    report = {"model": str(fa.model_path), "labels": fa.labels, "results": results, "skipped": skipped}
    (out_dir / "predictions.json").write_text(json.dumps(report, indent=1))
    if skipped:
        print(f"skipped {len(skipped)} of {len(items)} inputs:", file=sys.stderr)
        for s in skipped:
            reason = s["reason"] if s["reason"].startswith(s["input"]) else f"{s['input']}: {s['reason']}"
            print(f"  {reason}", file=sys.stderr)
    n_faces = sum(len(r["faces"]) for r in results)
    print(f"{len(results)} of {len(items)} images done, {n_faces} face(s); results in {out_dir / 'predictions.json'} "
          f"(and one row per face in predictions.csv / predictions.jsonl)")
    if not verbose:
        from collections import Counter
        tally = Counter(f["label"] for r in results for f in r["faces"])
        if tally:
            print("faces by emotion: " + ", ".join(f"{k} {v}" for k, v in tally.most_common()))
        print(f"annotated copies: {out_dir}" if annotate else
              f"per-face lines and annotated copies are left out above 10 images; add --annotate for annotated copies "
              f"in {out_dir}")
    if not results:
        return 3
    return 0


def cmd_video(a):
    """`ferlab video INPUT`: tracked faces and their emotions over a video, a folder of frames, a
    webcam or a stream; tables written as the video is read."""
    from pathlib import Path

    from .app.analyzer import FaceAnalyzer
    from .app.video import VideoAnalyzer, run_video
    out = Path(a.out) if a.out else Path("outputs/video") / (Path(a.input).stem or "webcam")
    fa = FaceAnalyzer(a.model, detector=a.detector, **engine_opts(a))
    va = VideoAnalyzer(fa, smooth_seconds=a.smooth, detect_every=a.detect_every)
    r = run_video(va, a.input, out, stride=a.stride, fps=a.fps, write_video=not a.no_video,
                  progress=sys.stderr.isatty() or a.progress, max_frames=a.max_frames)
    if not r["frames_analysed"] and not r["interrupted"]:
        print(f"ferlab: error: {r['source']}: no frame could be read, nothing to analyse", file=sys.stderr)
        return 2
    print(f"{r['source']}: {r['frames_analysed']} frames analysed ({r['frames_read']} read), "
          f"{len(r['faces'])} face track(s)")
    for fid, f in r["faces"].items():
        print(f"  face {fid}: {f['first_seen_s']:.2f}-{f['last_seen_s']:.2f} s, mostly {f['dominant']} "
              f"({f['share_of_time'][f['dominant']]:.0%} of its frames)")
    timelines = sorted(out.glob("timeline_face*.png"))
    video = r.get("annotated_video")
    print(f"per-frame table {out / 'frames.csv'} (and frames.jsonl), summary {out / 'summary.json'}"
          + (f", timelines {out}/timeline_face*.png ({len(timelines)})" if timelines else "")
          + (f", annotated video {video} ({r['annotated_video_codec']})" if video else ""))
    if r.get("stopped_early"):
        print(f"ferlab: error: {r['source']}: {r['stopped_early']}; the rows read so far are kept", file=sys.stderr)
        return 2
    if r["interrupted"]:
        print("ferlab: interrupted; the rows read so far are kept", file=sys.stderr)
        return 130
    return 0


def cmd_serve(a):
    """`ferlab serve`: the REST API, the webcam stream and the web page (FastAPI + uvicorn)."""
    from .app.analyzer import FaceAnalyzer
    from .app.server import ServeSettings, serve
    settings = ServeSettings(max_upload_bytes=int(a.max_upload_mb * 2 ** 20), max_pixels=a.max_pixels,
                             max_faces=a.max_faces, max_batch_images=a.max_batch_images,
                             request_timeout_s=a.timeout, max_in_flight=a.max_in_flight,
                             batch_wait_ms=a.batch_wait_ms, workers=a.workers,
                             api_key=a.api_key or os.environ.get("FERLAB_API_KEY") or None,
                             cors_origins=tuple(a.cors_origin or ()), stream_max_fps=a.stream_fps)
    fa = FaceAnalyzer(a.model, detector=a.detector, **engine_opts(a))
    where = f"http://{a.host}:{a.port}"
    print(f"ferlab serve: {where}/ (page), {where}/docs (API); model {fa.model_path.name}, "
          f"API key {'required' if settings.api_key else 'off'}", flush=True)
    serve(fa, settings, a.host, a.port, log_level=a.log_level)
    return 0


def cmd_demo(a):
    a.inputs = [a.image] if a.image else []
    return cmd_predict(a)


def shipped_model_notes() -> list[tuple[str, str]]:
    """(name, one line) for each emotion model shipped in ferlab/weights, read from its JSON (no torch)."""
    import json
    from importlib import resources
    from .app.defaults import DEFAULT_MODEL
    out = []
    for f in sorted(resources.files("ferlab").joinpath("weights").iterdir(), key=lambda f: f.name):
        if not f.name.endswith(".json"):
            continue
        try:
            meta = json.loads(f.read_text())
        except ValueError:
            continue
        if meta.get("arch") in (None, "mobilefacenet_landmarks"):
            continue
        name = f.name[:-len(".json")]
        files = [f"{name}.safetensors"] + [n for n in meta.get("weight_shards", []) if isinstance(n, str)] \
            + [e["file"] for e in meta.get("weights_from", []) if isinstance(e, dict) and isinstance(e.get("file"), str)]
        parts = [f.parent / n for n in files]
        size = f" {sum(p.stat().st_size for p in parts) / 1e6:.1f} MB" if all(p.is_file() for p in parts) else ""
        out.append((name, f"{meta.get('summary', meta['arch'])} [{meta['arch']},{size}]"
                    + ("  <- the default" if name == DEFAULT_MODEL else "")))
    return sorted(out, key=lambda t: (t[0] != DEFAULT_MODEL, t[0]))


def model_table_lines() -> list[str]:
    """The table of every model name (shipped, and the papers' architectures): paper, accuracy on the
    four sets, parameters, ms per face, whether its weights ship; from the package's record (no torch)."""
    import json
    from importlib import resources
    f = resources.files("ferlab").joinpath("weights", "model_table.json")
    if not f.is_file():
        return []
    t = json.loads(f.read_text())

    def pct(v):
        return "-" if v is None else f"{v:.1f}"
    head = f"  {'name':17s} {'paper':18s} {'FER+':>5s} {'SFEW':>5s} {'ExpW':>5s} {'posed':>5s} {'params':>7s} {'ms/face':>7s}  weights"
    out = [f"Models by name: accuracy (%) on FER+ test, SFEW 2.0 Val (crop), ExpW test and twperformers (posed, "
           f"through the pipeline); {t['units'].split('; ms per face: ')[-1]} for ms/face:", head]
    for name, r in t["rows"].items():
        ships = f"ship ({r['file_mb']:.1f} MB)" if r["ships"] else r["how"]
        out.append(f"  {name:17s} {r['paper']:18s} {pct(r['ferplus_test']):>5s} {pct(r['sfew_val']):>5s} "
                   f"{pct(r['expw_test']):>5s} {pct(r['twperformers']):>5s} {r['params_m']:6.1f}M {r['ms_per_face']:7.1f}  {ships}")
    unshipped = any(not r["ships"] for r in t["rows"].values())
    return out + (["  (- : not measured; the papers' models not shipped were trained on FER+ only)"] if unshipped else []) + [""]


def cmd_models(a):
    for line in model_table_lines():
        print(line)
    shipped = shipped_model_notes()
    print("Shipped models (ready to run: --model NAME, FaceAnalyzer(NAME)):")
    width = max(map(len, [n for n, _ in shipped] + list(MODELS)))
    for name, what in shipped:
        print(f"  {name:{width}s}  {what}")
    print("\nArchitectures (train them: ferlab train CONFIG; configs/ holds one per recipe):")
    for name, what in sorted(MODELS.items()):
        print(f"  {name:{width}s}  {what}")
    return 0


def cmd_evaluate_photos(a):
    """`ferlab evaluate MODEL --photos DATA`: every image through the photo pipeline; the face on the
    labelled box when the data gives one, else the largest."""
    from pathlib import Path

    from .app.analyzer import FaceAnalyzer
    from .app.photo_eval import evaluate_photos, read_photo_dataset
    samples = read_photo_dataset(a.photos, a.dataset, a.photo_split)
    fa = FaceAnalyzer(a.checkpoint, detector=a.detector, **engine_opts(a))
    out = Path(a.out) if a.out else Path("outputs/evaluate") / Path(a.photos).stem
    from .app.batch import default_workers
    r = evaluate_photos(fa, samples, out, n_boot=a.bootstrap, workers=a.workers or default_workers())
    b = r["bootstrap"]
    print(f"{a.photos}: n={r['n']} accuracy {r['accuracy']:.4f} [{b['accuracy_95'][0]:.4f}, {b['accuracy_95'][1]:.4f}] "
          f"macro recall {r['macro_recall']:.4f} [{b['macro_recall_95'][0]:.4f}, {b['macro_recall_95'][1]:.4f}] "
          f"(95 % intervals, resampling {b['resampled']})")
    print("recall: " + "  ".join(f"{k} {v:.3f}" for k, v in r["per_class_recall"].items()))
    print(f"expected calibration error (faces found): {r['ece']:.4f}")
    print("predicted: " + "  ".join(f"{k} {v}" for k, v in r["predicted_counts"].items()))
    for flag, sub in r["subsets"].items():
        print(f"  subset {flag}: n={sub['n']} accuracy {sub['accuracy']:.4f} macro recall {sub['macro_recall']:.4f}")
    if r["no_face"]["n"]:
        print(f"{r['no_face']['n']} image(s) with no face found (counted wrong): "
              + ", ".join(r["no_face"]["images"][:5]) + (" ..." if r["no_face"]["n"] > 5 else ""))
    if r["unreadable"]["n"]:
        print(f"{r['unreadable']['n']} unreadable image(s) (counted wrong): " + "; ".join(r["unreadable"]["images"][:5]))
    if r["skipped_by_reader"]:
        print(f"{len(r['skipped_by_reader'])} dataset item(s) skipped by the reader: "
              + "; ".join(f"{p}: {why}" for p, why in r["skipped_by_reader"][:5]))
    print(f"report, predictions and confusion matrix under {out}")
    return 0


def cmd_evaluate(a):
    import copy
    from pathlib import Path

    from .engine.checkpoint import load_meta, load_model
    from .engine.config import apply_overrides, load_config
    from .engine.evaluate import evaluate
    from .app.analyzer import resolve_model
    if a.photos:
        return cmd_evaluate_photos(a)
    a.checkpoint = resolve_model(a.checkpoint)  # a shipped name or a model file, as every command takes
    meta = load_meta(a.checkpoint)
    load_model(a.checkpoint)  # a bad weights file is reported before any data is read
    # the data section of the model's own training config, unless a config is given; then overrides
    base = {"data": meta.get("config", {}).get("data", {"dataset": "ferplus"})}
    if a.config:
        base = load_config(a.config)
    data_cfg = apply_overrides(copy.deepcopy(base), a.overrides)["data"]
    data_cfg["label_mode"] = "majority"
    out = Path(a.out) / a.split if a.out else None
    m = evaluate(a.checkpoint, data_cfg, a.split, out)
    print(f"{a.split}: n={m['n']} accuracy {m['accuracy']:.4f} mean class accuracy {m['mean_class_accuracy']:.4f} "
          f"macro F1 {m['macro_f1']:.4f} weighted F1 {m['weighted_f1']:.4f}")
    for k, v in m.items():
        if k.startswith("without_"):
            print(f"  {k.replace('_', ' ')}: n={v['n']} accuracy {v['accuracy']:.4f}")
    for name, v in m.get("per_source", {}).items():
        print(f"  source {name}: n={v['n']} accuracy {v['accuracy']:.4f} expected calibration error {v['ece']:.4f}")
    print("per class:")
    for name, pc in m["per_class"].items():
        print(f"  {name:10s} precision {pc['precision']:.3f} recall {pc['recall']:.3f} f1 {pc['f1']:.3f} "
              f"support {pc['support']}")
    if m.get("skipped"):
        print(f"{len(m['skipped'])} dataset item(s) skipped (not evaluated):")
        for item, why in m["skipped"][:10]:
            print(f"  {item}: {why}")
        if len(m["skipped"]) > 10:
            print(f"  ... and {len(m['skipped']) - 10} more (listed in the metrics JSON)")
    if out:
        print(f"report, predictions and confusion matrix under {out.parent}")
    return 0


def cmd_export(a):
    from pathlib import Path

    from .app.analyzer import resolve_model
    from .engine.checkpoint import MAX_WEIGHT_FILE_BYTES, load_model, save_model
    from .models import needs_landmarks
    model, meta = load_model(resolve_model(a.checkpoint))
    out = Path(a.out)
    meta = {**meta, "exported_from": str(a.checkpoint),
            "dtype": "int8 weights (per-channel scales)" if a.int8 else "float16" if a.half else "float32"}
    meta.pop("config", None) if a.drop_config else None
    save_model(out, model, meta, half=a.half, int8=a.int8, max_file_bytes=MAX_WEIGHT_FILE_BYTES)
    print(f"wrote {out.with_suffix('.safetensors')} and {out.with_suffix('.json')}")
    if a.onnx:
        from .engine.onnx_runtime import export_onnx
        onnx_path = export_onnx(model, meta, out.with_suffix(".onnx"))
        names = ["image", "landmarks"][:2 if needs_landmarks(model) else 1]  # landmarks: (batch, 68, 2) in input pixels
        print(f"wrote {onnx_path} (inputs: {', '.join(names)})")
    return 0


def cmd_adapt(a):
    """`ferlab adapt BASE --photos DATA --out DIR`: the base model fitted to the user's labelled faces."""
    from .app.adapt import adapt
    r = adapt(a.base, a.photos, a.out, dataset=a.dataset, label_column=a.label_column,
              subject_column=a.subject_column, mode=a.mode, only_these_labels=a.only_these_labels,
              new_labels=a.new_labels, steps=a.steps, valid_fraction=a.valid_fraction, seed=a.seed,
              detector=a.detector, replay=a.replay, replay_dataset=a.replay_dataset, progress=not a.quiet).report
    t = r["training"]
    print(f"trained {t['steps_run']} of {t['steps_planned']} steps, kept step {t['best_step']} (best held-out log-loss)")
    for who in ("base", "adapted"):
        h = r["held_out"][who]
        b = h["bootstrap"]
        print(f"{who:8s} on the held-out {h['n']} faces: accuracy {h['accuracy']:.3f} "
              f"[{b['accuracy_95'][0]:.3f}, {b['accuracy_95'][1]:.3f}], macro recall {h['macro_recall']:.3f} "
              f"[{b['macro_recall_95'][0]:.3f}, {b['macro_recall_95'][1]:.3f}] (95 %, resampling {b['resampled']})")
        print("         recall: " + "  ".join(f"{k} {v:.2f}" for k, v in h["recall"].items()))
    print(f"adapted model: {a.out}/model.safetensors (use it as --model {a.out}/model); report: {a.out}/report.json "
          f"({r['seconds']:.0f} s)")
    if a.replay is None:
        print("note: adapted without --replay, the model reads faces like yours; on other faces it may now read "
              "worse than the base. To keep it general, add --replay FOLDER --replay-dataset photos (any photos of "
              "other faces, unlabelled): see docs/adapt.md")
    return 0


def cmd_calibrate(a):
    """`ferlab calibrate MODEL`: fit the model's temperature on its selection (valid) split."""
    from .app.analyzer import resolve_model
    from .engine.calibration import calibrate
    from .engine.config import load_config
    path = resolve_model(a.model)
    data_cfg = load_config(a.config, a.overrides)["data"] if a.config else None
    calibrate(path, data_cfg, write=not a.dry_run)
    if not a.dry_run:
        print(f"wrote the temperature into {path.with_suffix('.json')}")
    return 0


def cmd_ensemble(a):
    """`ferlab ensemble A B [C ...] --out OUT`: the models as one model file."""
    from .app.analyzer import resolve_model
    from .engine.config import load_config
    from .engine.ensemble import write_ensemble
    weights = None
    if a.weights is not None:
        try:
            weights = [float(w) for w in a.weights.split(",")]
        except ValueError:
            raise UserError(f"--weights {a.weights!r}: comma-separated numbers, one per model") from None
    data_cfg = load_config(a.config)["data"] if a.config else None
    meta = write_ensemble([resolve_model(m) for m in a.models], a.out, weights, data_cfg, a.step, a.int8)
    print(f"wrote {a.out}.safetensors and {a.out}.json: {meta['summary']}")
    return 0


def cmd_interpolate(a):
    """`ferlab interpolate BASE TUNED OUT --alpha A`: the model (1 - A) * BASE + A * TUNED."""
    from .app.analyzer import resolve_model
    from .engine.weight_average import write_interpolation
    write_interpolation(resolve_model(a.base), resolve_model(a.tuned), a.alpha, a.out)
    print(f"wrote {a.out}.safetensors and {a.out}.json ({1 - a.alpha:g} x base + {a.alpha:g} x tuned)")
    return 0


def cmd_soup(a):
    """`ferlab soup A B [C ...] --out OUT`: the weight-space mean of models of one starting point."""
    from .app.analyzer import resolve_model
    from .engine.config import load_config
    from .engine.weight_average import write_soup
    data_cfg = load_config(a.config)["data"] if a.config else None
    meta = write_soup([resolve_model(m) for m in a.models], a.out, data_cfg, greedy=not a.uniform)
    kept = [i["path"] for i in meta["soup"]["ingredients"] if i["kept"]]
    print(f"wrote {a.out}.safetensors and {a.out}.json: the mean of {len(kept)} model{'s' * (len(kept) > 1)} "
          f"(selection {meta['soup']['selection']:.4f})")
    return 0


def cmd_tsne(a):
    """`ferlab explain --tsne`: t-SNE of a model's features over a dataset split."""
    import copy
    from pathlib import Path

    import numpy as np
    import torch

    from .app.analyzer import resolve_model
    from .app.explain import feature_embedding, tsne_figure
    from .data.arrays import load_splits, standardise
    from .engine.checkpoint import load_model
    from .engine.config import load_config
    from .engine.inputs import model_input_images, model_input_landmarks
    from .models import model_args, needs_landmarks
    path = resolve_model(a.model)
    model, meta = load_model(path)
    data_cfg = copy.deepcopy(load_config(a.config)["data"] if a.config else meta.get("config", {}).get("data", {}))
    data_cfg["label_mode"] = "majority"
    splits = load_splits(data_cfg)
    if a.split not in splits:
        raise UserError(f"the data has no {a.split!r} split ({', '.join(splits)})")
    s = splits[a.split]
    pre = meta["preprocess"]
    imgs, ok = model_input_images(s, pre["img_size"], pre["channels"], pre.get("framing", "fer2013"))  # photos aligned
    idx = np.flatnonzero(ok)
    if a.max_images and len(idx) > a.max_images:
        idx = np.sort(np.random.RandomState(0).permutation(idx)[:a.max_images])
    lms = None
    if needs_landmarks(model):  # RASA: the points of the same faces (dlib's on crops, the aligning ones on photos)
        lms = model_input_landmarks(s, pre["img_size"])
    feats = []
    for i in range(0, len(idx), 256):
        b = idx[i:i + 256]
        x = standardise(torch.from_numpy(imgs[b]).float() / 255.0, pre)
        feats.append(feature_embedding(model, *model_args(model, x, None if lms is None else lms[b])).float().numpy())
    out = Path(a.out) if a.out else Path("outputs/explain") / f"{path.stem}_tsne_{a.split}.png"
    tsne_figure(np.concatenate(feats), s.labels[idx], list(meta["labels"]), out,
                f"{meta['arch']}: t-SNE of {len(idx)} {a.split} faces")
    print(f"wrote {out} ({len(idx)} faces)")
    return 0


def cmd_explain(a):
    if a.tsne:
        return cmd_tsne(a)
    from pathlib import Path

    from .app.analyzer import FaceAnalyzer
    from .app.explain import explain_faces
    from .data.imageio import as_rgb
    rgb, name = _astronaut() if a.image is None else (as_rgb(a.image), a.image)
    fa = FaceAnalyzer(a.model, detector=a.detector, upsample=a.upsample, min_score=a.min_score, landmarks=a.landmarks,
                      **engine_opts(a))
    out = Path(a.out) if a.out else Path("outputs/explain") / f"{Path(name).stem}_explain.png"
    faces = explain_faces(fa, rgb, out, max_faces=a.max_faces, is_crop=a.crop)
    if not faces:
        print(f"{name}: no face found", file=sys.stderr)
        return 3
    for i, f in enumerate(faces, 1):
        extra = f" (global patch {f['global_patch_weight']:.0%} of the attention)" if "global_patch_weight" in f else ""
        print(f"face {i}: {f['label']} ({f['confidence']:.1%}){extra}")
    print(f"wrote {out}")
    return 0


def cmd_landmarks(a):
    """`ferlab landmarks CONFIG`: cache dlib's points for a dataset; `ferlab landmarks train CONFIG`:
    fit the MobileFaceNet landmark net to them (ferlab.engine.landmark_training)."""
    from pathlib import Path

    import numpy as np

    from .data.arrays import load_splits
    from .engine.config import load_config
    from .faces import dataset_landmarks
    action, rest = ("train", a.args[1:]) if a.args[0] == "train" else ("cache", a.args)
    if not rest:
        raise UserError("usage: ferlab landmarks [train] CONFIG [section.key=value ...]")
    cfg = load_config(None if rest[0] == "-" else rest[0], rest[1:])
    if action == "train":
        from .engine.landmark_training import train_landmarks
        r = train_landmarks(cfg)
        print(f"best epoch {r['best_epoch']}: valid NME {r['valid_nme']:.4f} against dlib"
              + (f", test NME {r['test']['nme']:.4f}" if "test" in r else "")
              + f"; weights in {Path(cfg.get('landmarks', {}).get('out_dir', 'runs/landmarks')) / 'best.safetensors'}")
        return 0
    for name, s in load_splits(cfg["data"]).items():
        pts, ok = dataset_landmarks(s)
        print(f"{name}: landmarks for {int(ok.sum())} of {len(s)} images cached "
              f"(mean inter-ocular distance {np.linalg.norm(pts[ok, 36:42].mean(1) - pts[ok, 42:48].mean(1), axis=1).mean():.1f} px)"
              if ok.any() else f"{name}: no landmarks")
    return 0


def cmd_data(a):
    """Per-split, per-source, per-class counts of a data config (and the generated copies it would add)."""
    import numpy as np

    from .data.arrays import load_splits
    from .data.hybrid import balance_plan, composition
    from .engine.config import load_config
    data_cfg = load_config(None if a.config == "-" else a.config, a.overrides)["data"]
    splits = load_splits(data_cfg)
    for name, s in splits.items():
        comp = composition(s)
        labels = list(s.label_set)
        print(f"{name}: {len(s)} images")
        print("  " + f"{'source':<14}" + "".join(f"{n[:9]:>10}" for n in labels) + f"{'total':>9}")
        for src, counts in comp.items():
            print("  " + f"{src:<14}" + "".join(f"{counts[n]:>10}" for n in labels) + f"{sum(counts.values()):>9}")
        if name == "train" and data_cfg.get("balance_by_augmentation"):
            extra = np.bincount(s.labels[balance_plan(s.labels, len(labels), 0, data_cfg.get("balance_target"))],
                                minlength=len(labels))
            print("  " + f"{'+ generated':<14}" + "".join(f"{int(c):>10}" for c in extra) + f"{int(extra.sum()):>9}")
        for item, why in s.skipped[:5]:
            print(f"  skipped: {item}: {why}")
        if len(s.skipped) > 5:
            print(f"  ... and {len(s.skipped) - 5} more skipped")
    if a.export_faces:
        from .engine.inputs import export_faces
        counts = export_faces(splits, int(data_cfg["img_size"]), int(data_cfg["channels"]), a.export_faces,
                              data_cfg.get("framing", "fer2013"), a.format, a.only_photos)
        print(f"wrote {sum(counts.values())} faces ({', '.join(f'{k} {v}' for k, v in counts.items())}) and "
              f"index.csv to {a.export_faces}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferlab", description="Facial expression recognition toolkit")
    from .app.defaults import package_version
    p.add_argument("--version", action="version", version=f"ferlab {package_version()}")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config", help="YAML config, or - for the defaults (then only overrides)")
    t.add_argument("overrides", nargs="*", help="section.key=value overrides")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    t.add_argument("--out-dir", default=None)
    t.set_defaults(fn=cmd_train)

    def face_opts(q):
        add_model_opt(q)
        q.add_argument("--detector", default="auto", choices=list(DETECTOR_CHOICES))
        q.add_argument("--upsample", type=whole_number(0), default=1, help="dlib HOG upsampling (finds smaller faces)")
        q.add_argument("--min-score", type=finite_number, default=None,
                       help="detector score cut (BlazeFace: probability, default 0.5; HOG: margin, default 0.25)")
        q.add_argument("--out", default="outputs/predict", help="folder for annotated images and predictions.json")
        q.add_argument("--annotate", dest="annotate", action="store_true", default=None,
                       help="write an annotated copy of every photo (default: only for up to 10 photos)")
        q.add_argument("--no-annotate", dest="annotate", action="store_false")
        q.add_argument("--progress", action="store_true", help="a progress bar even when stderr is not a terminal")
        add_engine_opts(q)
        q.add_argument("--landmarks", default="dlib",
                       help="'dlib' (the fastest on a CPU), 'net' (the shipped landmark net) or weights from `ferlab landmarks train`")

    q = sub.add_parser("predict", help="faces and emotions in images or folders (default: the astronaut photo)")
    q.add_argument("inputs", nargs="*")
    face_opts(q)
    q.add_argument("--workers", type=whole_number(1), default=None,
                   help="photos run at once, each in a process of its own (default: one per CPU core; the rows are "
                        "the same and in the same order for any number)")
    q.set_defaults(fn=cmd_predict)
    d = sub.add_parser("demo", help="the main job: the shipped model on a real photo")
    d.add_argument("image", nargs="?", default=None)
    face_opts(d)
    d.set_defaults(fn=cmd_demo, out="outputs/demo")
    m = sub.add_parser("models", help="list registered models")
    m.set_defaults(fn=cmd_models)
    e = sub.add_parser("evaluate", help="metrics of a saved model on a dataset split")
    e.add_argument("checkpoint", help="model .safetensors (its .json beside it)")
    e.add_argument("overrides", nargs="*", help="data.key=value overrides (e.g. data.root=...)")
    e.add_argument("--config", default=None, help="YAML config whose data section to use")
    e.add_argument("--split", default="test")
    e.add_argument("--out", default=None, help="folder for metrics JSON, predictions CSV, confusion CSV/PNG")
    e.add_argument("--photos", default=None, metavar="DATA",
                   help="evaluate through the photo pipeline (detection, landmarks, alignment, model) on labelled "
                        "photos: a folder of class folders, a CSV list (path,label[,subject][,box_x0,box_y0,box_x1,"
                        "box_y1]) or a folder with index.csv; the face scored is the one on the labelled box when "
                        "there is one, else the largest; MODEL may be 'default'")
    e.add_argument("--dataset", default=None, help="with --photos: a dataset reader by name (e.g. twperformers)")
    e.add_argument("--photo-split", default=None, help="with --photos: one split of the dataset (default: all)")
    e.add_argument("--detector", default="auto", choices=list(DETECTOR_CHOICES))
    add_engine_opts(e)
    e.add_argument("--bootstrap", type=whole_number(1), default=1000, help="bootstrap resamples for the 95 %% intervals")
    e.add_argument("--workers", type=whole_number(1), default=None,
                   help="with --photos: photos run through the front end at once (default: one per CPU core)")
    e.set_defaults(fn=cmd_evaluate)
    lm = sub.add_parser("landmarks", help="cache dlib's 68 points for a dataset (CONFIG), or train the "
                                          "MobileFaceNet landmark net on them (train CONFIG)",
                        usage="ferlab landmarks [train] CONFIG [section.key=value ...]")
    lm.add_argument("args", nargs="+", metavar="[train] CONFIG [overrides]",
                    help="YAML config whose data section names the dataset (or -), then overrides")
    lm.set_defaults(fn=cmd_landmarks)
    dc = sub.add_parser("data", help="what a data config reads: images per split, source and class")
    dc.add_argument("config", help="YAML config whose data section to read, or -")
    dc.add_argument("overrides", nargs="*")
    dc.add_argument("--export-faces", default=None, metavar="DIR",
                    help="also write every face as the model sees it (photos aligned by the front end) to DIR, "
                         "with DIR/index.csv: a crop dataset of its own")
    dc.add_argument("--format", default="png", choices=["png", "jpg"], help="with --export-faces: image format")
    dc.add_argument("--only-photos", action="store_true", help="with --export-faces: only the photo sources' faces")
    dc.set_defaults(fn=cmd_data)
    v = sub.add_parser("video", help="tracked faces and smoothed emotions over a video, frames folder, webcam or stream")
    v.add_argument("input", help="a video file, a folder of frames, a webcam index (0) or a stream URL")
    v.add_argument("--out", default=None, help="output folder (default outputs/video/NAME)")
    v.add_argument("--stride", type=whole_number(1), default=1, help="analyse every N-th frame")
    v.add_argument("--smooth", type=finite_number, default=0.4,
                   help="smoothing time constant in seconds (0 = off)")
    v.add_argument("--fps", type=finite_number, default=30.0, help="frame rate of a folder of frames")
    v.add_argument("--detect-every", type=whole_number(1), default=5,
                   help="run the detector over the whole frame on every N-th analysed frame and follow the faces "
                        "in between (one look near each face); 1 = detect on every frame")
    v.add_argument("--max-frames", type=whole_number(1), default=None, help="stop after this many frames")
    v.add_argument("--no-video", action="store_true", help="no annotated video")
    v.add_argument("--progress", action="store_true", help="a progress bar even when stderr is not a terminal")
    add_model_opt(v)
    v.add_argument("--detector", default="auto", choices=list(DETECTOR_CHOICES))
    add_engine_opts(v)
    v.set_defaults(fn=cmd_video)
    sv = sub.add_parser("serve", help="a REST API, a webcam stream and a web page on this machine")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=whole_number(1), default=8000)
    add_model_opt(sv)
    sv.add_argument("--detector", default="auto", choices=list(DETECTOR_CHOICES))
    add_engine_opts(sv)
    sv.add_argument("--api-key", default=None,
                    help="require this key in the X-API-Key header (or set FERLAB_API_KEY, kept out of `ps`)")
    sv.add_argument("--cors-origin", action="append", help="allow this origin to call the API (repeatable; default none)")
    sv.add_argument("--max-upload-mb", type=finite_number, default=10.0, help="largest image upload (413 beyond)")
    sv.add_argument("--max-pixels", type=whole_number(1), default=40_000_000, help="largest decoded image (413 beyond)")
    sv.add_argument("--max-faces", type=whole_number(1), default=20, help="faces analysed per image")
    sv.add_argument("--max-batch-images", type=whole_number(1), default=16, help="images per batch request")
    sv.add_argument("--timeout", type=finite_number, default=30.0, help="seconds one request may take (504 beyond)")
    sv.add_argument("--max-in-flight", type=whole_number(1), default=32,
                    help="requests served at once (503 with Retry-After beyond)")
    sv.add_argument("--batch-wait-ms", type=finite_number, default=5.0,
                    help="how long a face waits for others to share a model batch")
    sv.add_argument("--workers", type=whole_number(1), default=2, help="front-end threads (detection, landmarks)")
    sv.add_argument("--stream-fps", type=finite_number, default=15.0, help="frames/s one webcam stream is served at")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.set_defaults(fn=cmd_serve)
    x = sub.add_parser("export", help="write a checkpoint for shipping (fp16 safetensors) and/or ONNX")
    x.add_argument("checkpoint")
    x.add_argument("out", help="output path without suffix")
    x.add_argument("--half", action="store_true", help="store weights as float16")
    x.add_argument("--int8", action="store_true", help="store weight matrices as int8 + per-channel scales (4x smaller)")
    x.add_argument("--onnx", action="store_true", help="also write OUT.onnx (float32)")
    x.add_argument("--drop-config", action="store_true", help="leave the training config out of the JSON")
    x.set_defaults(fn=cmd_export)
    ip = sub.add_parser("interpolate", help="a model between two of one architecture: (1 - alpha) x BASE + alpha x "
                                            "TUNED, weight by weight (e.g. a fine-tuned model and its base)")
    ip.add_argument("base", help="model file or shipped name (alpha = 0)")
    ip.add_argument("tuned", help="model file or shipped name (alpha = 1)")
    ip.add_argument("out", help="output path without suffix")
    ip.add_argument("--alpha", type=finite_number, required=True, help="between 0 and 1")
    ip.set_defaults(fn=cmd_interpolate)
    sp = sub.add_parser("soup", help="a model soup: the weight-space mean of models trained from one starting point "
                                     "(seeds, temperatures, schedules), greedy on the selection split by default")
    sp.add_argument("models", nargs="+", help="model files or shipped names of one architecture, labels and input")
    sp.add_argument("--out", required=True, help="the soup's path (OUT.safetensors and OUT.json are written)")
    sp.add_argument("--uniform", action="store_true", help="the mean of every model (default: greedy: a model joins "
                                                           "only if the soup's selection score does not fall)")
    sp.add_argument("--config", help="YAML config whose data section's valid split scores the models "
                                     "(default: the first model's training data)")
    sp.set_defaults(fn=cmd_soup)
    ad = sub.add_parser("adapt", help="fit a model to your own labelled faces (minutes on a CPU); the result is a "
                                      "model file every command takes")
    ad.add_argument("base", help="the model to start from: a shipped name (default, fast) or a model file")
    ad.add_argument("--photos", required=True, help="labelled photos: class folders (DIR/<label>/*.jpg), a CSV "
                                                    "(path,label[,subject]) or a folder with index.csv")
    ad.add_argument("--out", required=True, help="output folder (model.safetensors, model.json, report.json)")
    ad.add_argument("--dataset", default=None, help="read DATA with this ferlab dataset reader instead")
    ad.add_argument("--label-column", default="label", help="the CSV's label column (default: label)")
    ad.add_argument("--subject-column", default=None, help="the CSV's subject column: the held-out part is other "
                                                           "people (default: 'subject' when the CSV has it)")
    ad.add_argument("--mode", default="auto", choices=["auto", "head", "last", "full"],
                    help="which weights move: the classifier, the last stage and classifier, or all (auto: full, "
                         "held close to the base)")
    ad.add_argument("--only-these-labels", action="store_true", help="drop the base's outputs for classes you did "
                                                                     "not give")
    ad.add_argument("--new-labels", action="store_true", help="learn label names the base does not know as new classes")
    ad.add_argument("--steps", type=whole_number(1), default=None, help="training steps (default: scaled to the data)")
    ad.add_argument("--valid-fraction", type=finite_number, default=0.2, help="share held out (default 0.2)")
    ad.add_argument("--seed", type=whole_number(0), default=0)
    ad.add_argument("--detector", default="auto", choices=list(DETECTOR_CHOICES))
    ad.add_argument("--replay", default=None, help="faces other than yours (a dataset, or with --replay-dataset photos "
                                                   "any folder of photos, unlabelled): the adapted model is held to the "
                                                   "base on them, and forgets less of what it read well")
    ad.add_argument("--replay-dataset", default="ferplus",
                    help="how to read --replay: 'photos' (any photos, no labels needed) or a dataset reader "
                         "(default: ferplus)")
    ad.add_argument("--quiet", action="store_true", help="no progress bars")
    ad.set_defaults(fn=cmd_adapt)
    en = sub.add_parser("ensemble", help="several trained models read as one model file (the weighted mean of "
                                         "their calibrated probabilities), the weights chosen on the selection splits")
    en.add_argument("models", nargs="+", help="ferlab model files or shipped names (an ensemble among them gives its members); "
                                           "the first reads the largest input")
    en.add_argument("--out", required=True, help="the ensemble's path (OUT.safetensors and OUT.json are written)")
    en.add_argument("--weights", default=None, help="comma-separated weights, one per member (default: chosen on the "
                                                   "valid split of the first model's training data)")
    en.add_argument("--config", default=None, help="YAML config whose data section's valid split chooses the weights")
    en.add_argument("--step", type=finite_number, default=0.1, help="grid step of the weight search (default 0.1)")
    en.add_argument("--int8", action="store_true", help="store weights as int8 with per-channel scales (for shipping)")
    en.set_defaults(fn=cmd_ensemble)
    cb = sub.add_parser("calibrate", help="fit a model's temperature on its valid split, so that its probabilities "
                                          "mean what they say (stored in the model's JSON)")
    cb.add_argument("model", help="a ferlab model file (PATH.safetensors with PATH.json) or a shipped name")
    cb.add_argument("overrides", nargs="*", help="data.key=value overrides for --config")
    cb.add_argument("--config", default=None, help="YAML config whose data section's valid split to use "
                                                   "(default: the model's own training data)")
    cb.add_argument("--dry-run", action="store_true", help="report the temperature and ECE, write nothing")
    cb.set_defaults(fn=cmd_calibrate)
    ex = sub.add_parser("explain", help="where the model looks (attention map or Grad-CAM) over each face, as a PNG")
    ex.add_argument("image", nargs="?", default=None, help="photo (default: the astronaut)")
    add_model_opt(ex)
    ex.add_argument("--crop", action="store_true", help="the image is already a face crop (dataset image)")
    ex.add_argument("--max-faces", type=whole_number(1), default=4)
    ex.add_argument("--detector", default="auto", choices=list(DETECTOR_CHOICES))
    ex.add_argument("--upsample", type=whole_number(0), default=1)
    ex.add_argument("--min-score", type=finite_number, default=None)
    ex.add_argument("--landmarks", default="dlib", help="'dlib', 'net' (the shipped landmark net) or landmark-net weights")
    ex.add_argument("--tsne", action="store_true",
                    help="instead: a t-SNE plot of the model's features over a dataset split (paper 004 Fig. 4)")
    ex.add_argument("--config", default=None, help="with --tsne: config whose data section to read "
                                                   "(default: the model's training data)")
    ex.add_argument("--split", default="test", help="with --tsne: the split to embed")
    ex.add_argument("--max-images", type=whole_number(1), default=2000, help="with --tsne: at most this many faces (seeded)")
    ex.add_argument("--out", default=None, help="PNG path (default outputs/explain/NAME_explain.png)")
    ex.set_defaults(fn=cmd_explain)
    return p


def architecture_names() -> list[str]:
    """The registered architectures' names, read from the model files' `@register_model` lines so that
    no torch import is needed (a test checks they equal `ferlab.models.list_models()`)."""
    import re
    from pathlib import Path
    names = set()
    for f in (Path(__file__).parent / "models").glob("*.py"):
        names.update(re.findall(r"^@register_model\s*\ndef (\w+)", f.read_text(encoding="utf-8"), re.M))
    return sorted(names)


def _model_exists(model) -> bool:
    """Whether --model names a shipped model or a model file (checked without importing torch)."""
    from pathlib import Path
    if model is None or str(model) in {n for n, _ in shipped_model_notes()}:
        return True
    p = Path(str(model))
    return p.is_file() or p.with_suffix(".safetensors").is_file() or p.with_suffix(".json").is_file()


def precheck(a) -> None:
    """The arguments a command would fail on, checked before its heavy imports (torch, OpenCV), so a
    mistyped path or model name is one line at once rather than after seconds of loading."""
    from pathlib import Path
    cmd = getattr(a, "cmd", None)
    for attr in ("model", "checkpoint", "base"):
        m = getattr(a, attr, None)
        if m is not None and cmd in ("predict", "demo", "video", "serve", "explain", "evaluate", "export", "adapt",
                                     "calibrate") and not _model_exists(m):
            names = ", ".join(n for n, _ in shipped_model_notes())
            hint = (f" ({str(m)!r} is an architecture: train it, e.g. `ferlab train configs/{m}_ferplus_cpu.yaml`, "
                    "and pass the run's best.safetensors)") if str(m) in architecture_names() else ""
            raise UserError(f"model {str(m)!r}: no such model file; give a ferlab model file (PATH.safetensors with "
                            f"PATH.json beside it) or a shipped name ({names}){hint}")
    for m in (getattr(a, "models", None) or []) if cmd == "ensemble" else []:
        if not _model_exists(m):
            names = ", ".join(n for n, _ in shipped_model_notes())
            raise UserError(f"model {str(m)!r}: no such model file; give ferlab model files (PATH.safetensors with "
                            f"PATH.json beside it) or shipped names ({names})")
    paths = []
    if cmd == "predict" and len(a.inputs) == 1:
        paths = a.inputs
    elif cmd in ("demo", "explain") and getattr(a, "image", None) and not getattr(a, "tsne", False):
        paths = [a.image]
    elif cmd == "video" and not str(a.input).isdigit() and "://" not in str(a.input):
        paths = [a.input]
    elif cmd in ("evaluate", "adapt") and getattr(a, "photos", None):
        paths = [a.photos]
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"{p}: no such file or folder")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # every ferlab error a user can cause is a ValueError (ConfigError, DatasetError, BadImageError,
    # CheckpointError, WeightsError, UnknownLabelError, SettingError, BlazeFaceUnavailable, VideoError)
    # or a UserError: caught below
    # without importing their modules (importing torch for the error classes cost seconds per command)
    try:
        precheck(args)
        return int(args.fn(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0
    except (UserError, KeyError, ValueError) as e:
        if os.environ.get("FERLAB_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ferlab: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable output folder, disk full, ...
        print(f"ferlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ferlab: interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
