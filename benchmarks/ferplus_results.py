"""Record a trained model's FER+ results: every number the README's results table publishes.

    .venv/bin/python benchmarks/ferplus_results.py CHECKPOINT NAME "TRAINING COMMAND"

Evaluates CHECKPOINT (best-on-valid weights) once on FER+ test (majority protocol; full and
de-duplicated) and on valid (on a GPU where there is one), and measures params, FLOPs and CPU latency per face. Writes
benchmarks/results/NAME_ferplus.json, NAME_ferplus_test_predictions.csv (per image) and the test
confusion matrix PNG, and prints the README row.
"""
import json
import shutil
import sys
from pathlib import Path

import torch

from ferlab.data.arrays import load_splits
from ferlab.engine.checkpoint import load_meta, load_model
from ferlab.engine.evaluate import evaluate_checkpoint_on_split
from ferlab.engine.profiling import (
    count_flops,
    count_params,
    example_inputs,
    git_commit,
    latency_ms,
    machine_info,
    now_utc,
)
from ferlab.engine.train import pick_device

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def scalar(m: dict) -> dict:
    return {k: v for k, v in m.items() if not isinstance(v, (dict, list))}


def record(ckpt, name: str, training_command: str, extra: dict | None = None, label: str | None = None) -> dict:
    ckpt = Path(ckpt)
    meta = load_meta(ckpt)
    model, _ = load_model(ckpt)
    splits = load_splits({"dataset": "ferplus", "label_mode": "majority"})
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS / f"_eval_{name}"
    device = pick_device()  # evaluated on a GPU where there is one (float32); latency always on the CPU
    test = evaluate_checkpoint_on_split(ckpt, splits["test"], out_prefix=tmp / "test", device=device)
    valid = evaluate_checkpoint_on_split(ckpt, splits["valid"], out_prefix=tmp / "valid", device=device)
    shutil.copy(tmp / "test_predictions.csv", RESULTS / f"{name}_ferplus_test_predictions.csv")
    shutil.copy(tmp / "test_confusion.png", RESULTS / f"{name}_ferplus_test_confusion.png")
    shutil.rmtree(tmp)
    pre = meta["preprocess"]
    shape = (1, pre["channels"], pre["img_size"], pre["img_size"])
    args = example_inputs(model, shape)
    result = {
        "model": meta["arch"], "model_kwargs": meta.get("model_kwargs"),
        "dataset": "FER+ (FER2013Test, majority protocol)", "weights": str(ckpt) + ".safetensors",
        "selection": f"best validation accuracy (FER2013Valid), epoch {meta['epoch'] + 1}",
        "test": scalar(test), "test_without_duplicates": test.get("without_duplicate"),
        "test_n_duplicates": test.get("n_duplicate"), "test_per_class": test["per_class"],
        "test_confusion_matrix": test["confusion_matrix"], "valid": scalar(valid),
        "params": count_params(model), "flops": count_flops(model, shape),
        "cpu_latency_ms_per_face_model": latency_ms(lambda: model(*args), 100),
        "training_command": training_command,
        "command": "python benchmarks/ferplus_results.py " + " ".join(f'"{a}"' if " " in a else a for a in sys.argv[1:]),
        "evaluated_on": str(device), "date": now_utc(), "git_commit": git_commit(), "machine": machine_info(),
        "pretrained": "none: trained from scratch",
    }
    result.update(extra or {})
    (RESULTS / f"{name}_ferplus.json").write_text(json.dumps(result, indent=2) + "\n")
    print(readme_row(label or name, result))
    return result


def readme_row(label: str, result: dict) -> str:
    t, d = result["test"], result["test_without_duplicates"]
    return (f"| {label} | {t['accuracy']:.2%} | {d['accuracy']:.2%} | {t['mean_class_accuracy']:.2%} | "
            f"{t['macro_f1']:.3f} | {result['params'] / 1e6:.2f} M | {result['flops'] / 1e9:.2f} G | "
            f"{result['cpu_latency_ms_per_face_model']:.1f} |")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    torch.set_num_threads(2)
    record(sys.argv[1], sys.argv[2], sys.argv[3])
