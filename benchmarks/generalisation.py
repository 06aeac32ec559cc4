"""What each change gives beyond FER+, one row per change:
- FER+ valid/test (majority protocol, the model on the FER+ crops);
- twperformers through the whole photo pipeline (largest face; ../shared/data/twperformers, its
  README's protocol; intervals resample performers);
- with `--sets all` (rows added since faces from elsewhere joined training): SFEW 2.0 Val on the crop
  protocol (the organisers' aligned face straight to the model, as papers report) and the pipeline
  protocol (the face as a photo through detection and alignment, a miss counted wrong), intervals
  resampling movies; ExpW valid and test through the pipeline, the face on the labelled box (IoU at
  least 0.3, else "no face"), intervals resampling source photos. Every set reports the expected
  calibration error (ECE, 15 bins, faces found) beside accuracy.

Rows (each adds one change to the row above, unless it names another model):
- `hog_direct`: the shipped default as it was: dlib HOG front end, alignment by a direct warp
- `blazeface`: BlazeFace front end (the new default detector)
- `antialias`: faces larger than the model input area-averaged when aligning (the shipped pipeline)
- `flip_tta`: probabilities averaged with the mirrored face (a FaceAnalyzer option, off by default)
- any `--model NAME=PATH` given: that model on the shipped pipeline (e.g. a fine-tuned candidate); PATH
  may name a shipped model (`fast`)

    .venv/bin/python benchmarks/generalisation.py [--model la_finetune=runs/.../best.safetensors]
        -> benchmarks/results/generalisation.json
    .venv/bin/python benchmarks/generalisation.py --add --model NAME=PATH   (one more row, the rest kept)
    .venv/bin/python benchmarks/generalisation.py --add --sets all --model NAME=PATH   (with SFEW and ExpW)

FER+ test is evaluated here for rows whose model has been evaluated on it before (the shipped
default: the same weights and numbers as benchmarks/results/resnet18_ferplus.json; `fast`: as in
benchmarks/results/fast_default.json); a new model's
test numbers come from the one test pass of its own training run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ferlab.app.analyzer import FaceAnalyzer, shipped_models
from ferlab.app.photo_eval import evaluate_crops, evaluate_photos, read_photo_dataset
from ferlab.data.arrays import load_images, load_splits, restrict_labels
from ferlab.engine.inputs import model_input_landmarks
from ferlab.engine.metrics import classification_metrics, expected_calibration_error
from ferlab.engine.profiling import git_commit, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TW = DATA / "twperformers"
PHOTO_KEYS = ("n", "accuracy", "macro_recall", "per_class_recall", "bootstrap", "ece", "ms_per_image")
ROWS = {"hog_direct": dict(detector="hog", antialias=False), "blazeface": dict(antialias=False),
        "antialias": dict(), "flip_tta": dict(flip_tta=True)}


def ferplus_probs(fa: FaceAnalyzer, split):
    """(the split's readable samples of the analyser's labels, their probabilities) for the FER+
    crops of one split, the analyser's model on each crop as it is."""
    s = restrict_labels(split, tuple(fa.labels))
    imgs, ok = load_images(s, fa.pre["img_size"], fa.pre["channels"])
    keep = np.flatnonzero(ok)
    s, imgs = s.subset(keep), imgs[keep]
    # a landmark model (RASA) reads dlib's cached points of each crop, as in training
    pts = model_input_landmarks(s, fa.pre["img_size"]) if fa.needs_landmarks else None
    return s, np.concatenate([fa.predict_tensor(imgs[i:i + 512], None if pts is None else pts[i:i + 512])
                              for i in range(0, len(imgs), 512)])


def ferplus_scores(fa: FaceAnalyzer, splits: dict) -> dict:
    out = {}
    for name in ("valid", "test"):
        s, probs = ferplus_probs(fa, splits[name])
        m = classification_metrics(s.labels, probs.argmax(1), tuple(fa.labels))
        out[name] = {"n": m["n"], "accuracy": m["accuracy"], "mean_class_accuracy": m["mean_class_accuracy"],
                     "ece": expected_calibration_error(probs.max(1), probs.argmax(1) == s.labels)}
        for flag, mask in s.flags.items():
            if mask.dtype == bool and mask.any():
                sub = classification_metrics(s.labels[~mask], probs.argmax(1)[~mask], tuple(fa.labels))
                out[name][f"without_{flag}"] = {"n": sub["n"], "accuracy": sub["accuracy"]}
    return out


def photo_row(r: dict) -> dict:
    """The recorded part of an `evaluate_photos` report."""
    out = {k: r[k] for k in PHOTO_KEYS if k in r}
    out["no_face"] = r["no_face"]["n"]
    return out


def elsewhere_scores(fa: FaceAnalyzer, n_boot: int) -> dict:
    """SFEW 2.0 Val (crop and pipeline protocols) and ExpW valid / test (pipeline, labelled box)."""
    sfew = read_photo_dataset(DATA / "sfew", "sfew", "test")  # SFEW's Val: the split papers report
    out = {"sfew_val_crop": evaluate_crops(fa, sfew, n_boot),
           "sfew_val_pipeline": photo_row(evaluate_photos(fa, sfew, None, n_boot=n_boot, progress=False))}
    for split in ("valid", "test"):
        expw = read_photo_dataset(DATA / "expw", "expw", split)
        out[f"expw_{split}"] = photo_row(evaluate_photos(fa, expw, None, n_boot=n_boot, progress=False))
    return out


ELSEWHERE = ("sfew_val_crop", "expw_test", "twperformers")  # the sets whose mean ranks candidates


def elsewhere_mean(row: dict) -> float:
    """Mean accuracy over SFEW Val (crop protocol), ExpW test and twperformers."""
    return float(np.mean([row[k]["accuracy"] for k in ELSEWHERE]))


def _ci(r: dict) -> str:
    lo, hi = r["bootstrap"]["accuracy_95"]
    return f"{r['accuracy']:.1%} [{lo:.1%}, {hi:.1%}]"


def readme_rows(record: dict) -> list[str]:
    """The README's table rows of faces from elsewhere (rows scored with --sets all): accuracy with
    95 % intervals, macro recall, the mean that ranks candidates, then the calibration errors."""
    acc, cal = [], []
    for name, r in record["rows"].items():
        if "sfew_val_crop" not in r:
            continue
        t, sc, sp, ev, et = (r[k] for k in ("twperformers", "sfew_val_crop", "sfew_val_pipeline", "expw_valid",
                                            "expw_test"))
        acc.append(f"| `{name}` | {r['ferplus_valid']['accuracy']:.2%} | {r['ferplus_test']['accuracy']:.2%} | "
                   f"{_ci(sc)} | {sp['accuracy']:.1%} | {ev['accuracy']:.1%} | {_ci(et)} | {et['macro_recall']:.1%} | "
                   f"{_ci(t)} | {t['macro_recall']:.1%} | {elsewhere_mean(r):.1%} |")
        cal.append(f"| `{name}` | {r.get('temperature', 1.0):.2f} | {r['ferplus_valid']['ece']:.3f} | {sc['ece']:.3f} | "
                   f"{et['ece']:.3f} | {t['ece']:.3f} |")
    return acc + cal


LEAD = (("shipped default (a ResNet-18, `dan` and `pcda`, each trained on FER+, ExpW and SFEW, combined; int8)", "default"),
        ("`--model fast` (fastnet_l, 64 px colour, distilled from the default on FER+, ExpW and SFEW at temperature 2, int8)", "fast_colour64_t2"),
        ("`--model fast_ferplus` (fastnet_l distilled from the FER+-only ResNet-18, the fast model before, int8)",
         "ferplus_fast"),
        ("`--model resnet18_ferplus` (the FER+-only ResNet-18, the default before)", "ferplus_default"),
        ("`--model dan` (DAN, paper 001: a ResNet-18 with 4 attention heads, 64 px colour, on FER+, ExpW and SFEW, int8)",
         "dan_multisource"),
        ("`--model pcda` (PCDA, paper 003: ResNet-18 stages and a landmark net, dual attention, 48 px colour, on FER+, ExpW and SFEW, int8)",
         "pcda_multisource"),
        ("`--model ensemble` (two of the default's three networks: its ResNet-18 and `dan`, int8)",
         "ensemble_default_dan"),
        ("`--model rasa` (RASA, paper 000: landmark patches through a transformer, 96 px colour, from scratch on "
         "FER+, ExpW and SFEW, int8)", "rasa_multisource"),
        ("`--model convcut` (Conv-cut, paper 004: ConvNeXt cut after stage 2 and Detail Extraction, 64 px colour, from "
         "scratch on FER+, ExpW and SFEW for 16 epochs, int8)", "convcut_multisource_16ep"),
        ("`--model swin_se` (Swin-SE, paper 002: Swin-T with squeeze-and-excitation, trained with SAM, 64 px colour, from "
         "scratch on FER+, ExpW and SFEW, int8)", "swin_se_multisource"))


def lead_rows(record: dict, fer: dict) -> list[str]:
    """The README's lead table: the shipped models and the `fer` library on FER+ test, SFEW 2.0 Val
    (crop and pipeline), ExpW test and twperformers, with the mean that ranks candidates."""
    out = []
    for label, name in LEAD:
        r = record["rows"][name]
        out.append(f"| {label} | {r['ferplus_test']['accuracy']:.2%} | {_ci(r['sfew_val_crop'])} | "
                   f"{r['sfew_val_pipeline']['accuracy']:.1%} | {_ci(r['expw_test'])} | {_ci(r['twperformers'])} | "
                   f"{elsewhere_mean(r):.1%} |")
    f = fer["sets"]
    out.append(f"| `fer` library (its classifier on the same faces; twperformers through its own pipeline) | – | "
               f"{_ci(f['sfew_val_crop'])} | – | {_ci(f['expw_test'])} | {_ci(f['twperformers'])} | "
               f"{np.mean([f[k]['accuracy'] for k in ELSEWHERE]):.1%} |")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                    help="another model to score on the shipped pipeline (its FER+ test from its own run)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--sets", choices=["ferplus_tw", "all"], default="ferplus_tw",
                    help="all: also SFEW 2.0 Val (crop and pipeline) and ExpW valid/test")
    ap.add_argument("--add", action="store_true",
                    help="score only the --model rows and add them to the recorded table (each row keeps its "
                         "own command, date and commit); the other rows stay as recorded")
    a = ap.parse_args()
    if a.add and not a.model:
        raise SystemExit("--add needs at least one --model NAME=PATH")
    if not (TW / "index.csv").is_file():
        raise SystemExit(f"{TW} is not here: this benchmark needs ../shared/data/twperformers")
    tw = read_photo_dataset(TW, "twperformers")
    splits = load_splits({"dataset": "ferplus", "label_mode": "majority"})
    rows = {}
    out_path = ROOT / "benchmarks" / "results" / "generalisation.json"
    record = {}
    if a.add:
        if not out_path.is_file():
            raise SystemExit(f"--add: {out_path} is not here; run the benchmark without --add first")
        record = json.loads(out_path.read_text())
        rows = record["rows"]
    plan = [] if a.add else [(name, None, kw) for name, kw in ROWS.items()]
    for spec in a.model:
        name, _, path = spec.partition("=")
        plan.append((name, path, {}))
    for name, path, kw in plan:
        fa = FaceAnalyzer(path, **kw)
        row = {"model": str(fa.model_path), "settings": kw}
        fer = ferplus_scores(fa, splits)
        row["ferplus_valid"] = fer["valid"]
        run_test = Path(path).parent / "test_metrics.json" if path else None
        if path is None or path in shipped_models():  # shipped weights: their test numbers are published already
            row["ferplus_test"] = fer["test"]
        elif run_test and not run_test.is_file() and a.sets == "all":  # no test pass in its run: this is it
            row["ferplus_test"] = {**fer["test"], "from": "this benchmark (the run's one FER+ test pass)"}
        elif run_test and run_test.is_file():
            t = json.loads(run_test.read_text())
            row["ferplus_test"] = {"accuracy": t["accuracy"], "mean_class_accuracy": t["mean_class_accuracy"],
                                   "from": str(run_test),
                                   **{k: v for k, v in t.items() if k.startswith("without_")}}
        r = evaluate_photos(fa, tw, None, n_boot=a.bootstrap, progress=False)
        row["twperformers"] = {k: r[k] for k in ("n", "accuracy", "macro_recall", "per_class_recall", "bootstrap",
                                                 "no_face", "predicted_counts", "subsets", "ms_per_image")}
        row["twperformers"]["no_face"] = r["no_face"]["n"]
        row["twperformers"]["ece"] = r["ece"]
        if a.sets == "all":
            if not all((DATA / d / "index.csv").is_file() for d in ("sfew", "expw")):
                raise SystemExit(f"--sets all needs {DATA / 'sfew'} and {DATA / 'expw'}")
            row.update(elsewhere_scores(fa, a.bootstrap))
            if run_test and run_test.is_file():  # the run's one test pass of its ExpW test faces (crops it aligned)
                per = json.loads(run_test.read_text()).get("per_source", {})
                if "ferplus" in per:  # a multi-source run: its FER+ test is the FER+ part of that pass
                    row["ferplus_test"] = {"accuracy": per["ferplus"]["accuracy"],
                                           "mean_class_accuracy": per["ferplus"]["mean_class_accuracy"],
                                           "from": f"{run_test} (per_source.ferplus)"}
        row["temperature"] = fa.temperature
        if a.add:
            sets = " --sets all" if a.sets == "all" else ""
            row.update(command=f"python benchmarks/generalisation.py --add{sets} --model {name}={path}", date=now_utc(),
                       git_commit=git_commit(), machine=machine_info())
        rows[name] = row
        print(name, json.dumps({"valid": fer["valid"]["accuracy"], "test": row.get("ferplus_test", {}).get("accuracy"),
                                "tw": r["accuracy"], "tw_macro": r["macro_recall"],
                                "tw_agree": r["subsets"]["observers_agree"]["accuracy"],
                                **{k: row[k]["accuracy"] for k in ("sfew_val_crop", "sfew_val_pipeline", "expw_valid",
                                                                   "expw_test") if k in row}}), flush=True)
        if a.add:  # the table's own command, date and commit stay those of the rows it made
            out = {**record, "rows": rows}
        else:
            out = {"rows": rows, "command": "python benchmarks/generalisation.py "
                   + " ".join(f"--model {m}" for m in a.model), "date": now_utc(), "git_commit": git_commit(),
                   "machine": machine_info()}
        out_path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
