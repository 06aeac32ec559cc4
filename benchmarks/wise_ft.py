"""Interpolating a fine-tuned model with its base (WiSE-FT, `ferlab interpolate`): which alpha.

For each alpha in the grid, the model (1 - alpha) * BASE + alpha * TUNED is scored on the selection
splits of TUNED's own training config (FER+ valid by majority, ExpW valid through the front end; the
per-source accuracies and their mean, the training's selection score) and nothing else. The alpha
with the best mean is written as OUT (.safetensors + .json) and the scan recorded; with
`--tolerance T`, the smallest alpha (the one nearest the base) whose mean is within T of the best:
means closer than the selection splits can tell apart (one ExpW valid face moves the mean by 0.08
points) then favour what the base knew.

    .venv/bin/python benchmarks/wise_ft.py BASE TUNED OUT [--alphas 0,0.25,0.5,0.75,1] [--tolerance 0.005]
        -> benchmarks/results/wise_ft_<name of OUT>.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ferlab.app.analyzer import resolve_model
from ferlab.engine.checkpoint import save_model
from ferlab.engine.ensemble import selection_faces
from ferlab.engine.evaluate import predict_logits
from ferlab.engine.profiling import git_commit, machine_info, now_utc
from ferlab.engine.weight_average import interpolate_models

ROOT = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("tuned")
    ap.add_argument("out")
    ap.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="take the smallest alpha whose selection score is within this of the best (default 0)")
    a = ap.parse_args()
    base, tuned = resolve_model(a.base), resolve_model(a.tuned)
    alphas = [float(x) for x in a.alphas.split(",")]
    model, meta = interpolate_models(base, tuned, 1.0)
    valid, imgs = selection_faces(meta, meta["config"]["data"])
    pre = meta["preprocess"]
    src = valid.flags["source"]
    select_on = meta["config"]["train"].get("select_on") or sorted(set(src.tolist()))
    scan = []
    for alpha in alphas:
        model, meta = interpolate_models(base, tuned, alpha)
        pred = predict_logits(model, imgs, pre, torch.device("cpu")).argmax(1)
        per = {n: float(np.mean(pred[src == n] == valid.labels[src == n])) for n in dict.fromkeys(src.tolist())}
        row = {"alpha": alpha, "valid": per, "selection": float(np.mean([per[n] for n in select_on]))}
        scan.append(row)
        print(json.dumps(row), flush=True)
    top = max(r["selection"] for r in scan)
    row = min((r for r in scan if r["selection"] >= top - a.tolerance), key=lambda r: r["alpha"])
    model, meta = interpolate_models(base, tuned, row["alpha"])
    save_model(a.out, model, meta)
    tol = f" --tolerance {a.tolerance:g}" if a.tolerance else ""
    record = {"base": str(base), "tuned": str(tuned), "out": a.out, "select_on": select_on, "scan": scan,
              "tolerance": a.tolerance, "chosen_alpha": row["alpha"],
              "command": f"python benchmarks/wise_ft.py {a.base} {a.tuned} {a.out} --alphas {a.alphas}{tol}",
              "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    path = ROOT / "benchmarks" / "results" / f"wise_ft_{Path(a.out).name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"alpha {row['alpha']}: selection {row['selection']:.4f}; wrote {a.out} and {path}")


if __name__ == "__main__":
    main()
