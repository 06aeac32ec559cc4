"""Ship and benchmark ferlab's default model (ResNet-18 on FER+), recording every number we publish.

    .venv/bin/ferlab train configs/resnet18_ferplus_cpu.yaml train.progress=false   # ~2 h on 2 CPU cores
    .venv/bin/python benchmarks/default_model.py runs/resnet18_ferplus_cpu/best

Writes src/ferlab/weights/default.{safetensors,json} (fp16 copy of the best-on-valid checkpoint),
then evaluates the *shipped* weights once on FER+ test (full and de-duplicated) and on valid, and
measures params, FLOPs and CPU latency. Results: benchmarks/results/resnet18_ferplus.json and the
per-image test predictions in benchmarks/results/resnet18_ferplus_test_predictions.csv.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ferlab.app import FaceAnalyzer, default_model_path
from ferlab.checkpoint import load_meta, load_model, save_model
from ferlab.data import load_splits
from ferlab.evaluate import evaluate_checkpoint_on_split
from ferlab.profiling import count_flops, count_params, git_commit, latency_ms, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main(ckpt):
    ckpt = Path(ckpt)
    train_meta = load_meta(ckpt)
    model, meta = load_model(ckpt)
    ship = default_model_path().with_suffix("")
    ship.parent.mkdir(parents=True, exist_ok=True)
    ship_meta = {k: v for k, v in meta.items() if k != "config"}
    ship_meta.update({"dtype": "float16", "trained_with": "ferlab train configs/resnet18_ferplus_cpu.yaml "
                      "train.progress=false", "training_config": meta.get("config")})
    save_model(ship, model, ship_meta, half=True)

    splits = load_splits({"dataset": "ferplus", "label_mode": "majority"})
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / "_eval"
    test = evaluate_checkpoint_on_split(ship, splits["test"], out_prefix=tmp / "test")
    valid = evaluate_checkpoint_on_split(ship, splits["valid"], out_prefix=tmp / "valid")
    shutil.copy(tmp / "test_predictions.csv", RESULTS / "resnet18_ferplus_test_predictions.csv")
    shutil.copy(tmp / "test_confusion.png", RESULTS / "resnet18_ferplus_test_confusion.png")
    shutil.rmtree(tmp)

    shipped, _ = load_model(ship)
    pre = meta["preprocess"]
    shape = (1, pre["channels"], pre["img_size"], pre["img_size"])
    x = torch.zeros(shape)
    fa = FaceAnalyzer()
    from skimage import data
    astro = data.astronaut()
    n_faces = len(fa.analyze(astro))
    scalar = lambda m: {k: v for k, v in m.items() if not isinstance(v, (dict, list))}
    result = {
        "model": "resnet18", "dataset": "FER+ (FER2013Test, majority protocol)", "weights": str(ship.relative_to(ROOT)) +
        ".safetensors (float16)",
        "selection": f"best validation accuracy (FER2013Valid), epoch {train_meta['epoch'] + 1}",
        "test": scalar(test), "test_without_duplicates": test.get("without_duplicate"),
        "test_n_duplicates": test.get("n_duplicate"), "test_per_class": test["per_class"],
        "test_confusion_matrix": test["confusion_matrix"], "valid": scalar(valid),
        "params": count_params(shipped), "flops": count_flops(shipped, shape),
        "cpu_latency_ms_per_face_model": latency_ms(lambda: shipped(x), 100),
        "cpu_latency_ms_per_photo_pipeline": latency_ms(lambda: fa.analyze(astro), 10, 2),
        "pipeline_photo": f"skimage astronaut 512x512, {n_faces} face(s) found",
        "training_command": ship_meta["trained_with"],
        "command": "python benchmarks/default_model.py " + " ".join(sys.argv[1:]),
        "date": now_utc(), "git_commit": git_commit(), "machine": machine_info(),
        "pretrained": "none: trained from scratch",
    }
    (RESULTS / "resnet18_ferplus.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("test", "test_without_duplicates", "params", "flops",
                                             "cpu_latency_ms_per_face_model", "cpu_latency_ms_per_photo_pipeline")},
                     indent=1))
    t, d = result["test"], result["test_without_duplicates"]
    print("\nREADME row:")
    print(f"| resnet18 (from scratch, 48x48 gray) | {t['accuracy']:.2%} | {d['accuracy']:.2%} | "
          f"{t['mean_class_accuracy']:.2%} | {t['macro_f1']:.3f} | {result['params'] / 1e6:.1f} M | "
          f"{result['flops'] / 1e9:.2f} G | {result['cpu_latency_ms_per_face_model']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/resnet18_ferplus_cpu/best")
