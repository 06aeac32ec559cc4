"""How far can a shift of the class prior take a model on twperformers? (issue 20, part 3: is the
default's bias towards neutral and sadness on posed faces a prior problem or a feature problem?)

Per-class offsets added to the model's log-probabilities re-weight its class prior and nothing
else (logit adjustment, balanced sampling and re-weighted losses all act, to first order, as such
an offset). Here the offsets are chosen on twperformers itself (coordinate ascent over a grid,
its accuracy maximised), under a floor on FER+ valid accuracy: an upper bound of what any prior
correction could give there, not a recipe (it is fitted to the set it is scored on). FER+ test is
reported for the same offsets.

    .venv/bin/python benchmarks/prior_shift.py [--model default]  -> benchmarks/results/prior_shift.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ferlab.app.analyzer import FaceAnalyzer
from ferlab.app.photo_eval import largest_face, read_photo_dataset
from ferlab.data.arrays import default_ferplus_root
from ferlab.engine.profiling import git_commit, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"
GRID = np.arange(-4.0, 4.001, 0.25)
FLOORS = (0.86, 0.85, 0.83, 0.80, 0.0)


def photo_log_probs(fa: FaceAnalyzer, samples) -> np.ndarray:
    """(N, K) log-probabilities of the largest face of each photo; a photo with no face: -inf."""
    out = np.full((len(samples.paths), len(fa.labels)), -np.inf)
    for i, p in enumerate(samples.paths):
        face = largest_face(fa.analyze(p))
        if face:
            out[i] = np.log(np.maximum([face["probs"][n] for n in fa.labels], 1e-12))
    return out


def ferplus_log_probs(fa: FaceAnalyzer) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fast_default import ferplus_arrays
    from generalisation import ferplus_probs
    out = {}
    for name, split in ferplus_arrays().items():
        if name in ("valid", "test"):
            s, probs = ferplus_probs(fa, split)
            out[name] = (np.log(np.maximum(probs, 1e-12)), np.asarray(s.labels))
    return out


def predictions(x, b) -> np.ndarray:
    """Top class of each row after the offsets; -1 (always wrong) for a photo with no face."""
    return np.where(np.isfinite(x).all(1), np.argmax(x + b, 1), -1)


def accuracy(x, y, b) -> float:
    return float((predictions(x, b) == y).mean())


def recalls(x, y, b, classes) -> dict:
    p = predictions(x, b)
    return {c: float((p[y == i] == i).mean()) for i, c in classes}


def best_offsets(tw, tw_y, valid, valid_y, floor: float, rounds: int = 4) -> np.ndarray:
    """Coordinate ascent on twperformers accuracy, every step keeping FER+ valid >= floor."""
    b = np.zeros(tw.shape[1])
    for _ in range(rounds):
        for c in range(len(b)):
            best_acc, best_v = accuracy(tw, tw_y, b), b[c]
            for v in GRID:
                trial = b.copy()
                trial[c] = v
                if accuracy(valid, valid_y, trial) >= floor:
                    a = accuracy(tw, tw_y, trial)
                    if a > best_acc + 1e-9:
                        best_acc, best_v = a, v
            b[c] = best_v
    return b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prior_shift.json"))
    a = ap.parse_args()
    if not (TW / "index.csv").is_file():
        print(f"{TW}: twperformers not found", file=sys.stderr)
        return 2
    if not (default_ferplus_root() / "FER2013Train").is_dir():
        print(f"{default_ferplus_root()}: FER+ not found (set FERLAB_FERPLUS)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    fa = FaceAnalyzer(a.model, backend="onnx", threads=1)
    labels = list(fa.labels)
    samples = read_photo_dataset(TW, "twperformers")
    names = list(samples.label_set)
    tw_y = np.array([labels.index(names[i]) for i in samples.labels])
    tw = photo_log_probs(fa, samples)
    fp = ferplus_log_probs(fa)
    (valid, valid_y), (test, test_y) = fp["valid"], fp["test"]
    present = [(i, labels[i]) for i in sorted(set(tw_y.tolist()))]
    rows = []
    for floor in (None, *FLOORS):
        b = np.zeros(len(labels)) if floor is None else best_offsets(tw, tw_y, valid, valid_y, floor)
        rec = recalls(tw, tw_y, b, present)
        rows.append({"ferplus_valid_floor": floor, "offsets": dict(zip(labels, b.round(2).tolist())),
                     "twperformers_accuracy": round(accuracy(tw, tw_y, b), 4),
                     "twperformers_macro_recall": round(float(np.mean(list(rec.values()))), 4),
                     "twperformers_recall": {k: round(v, 3) for k, v in rec.items()},
                     "ferplus_valid": round(accuracy(valid, valid_y, b), 4),
                     "ferplus_test": round(accuracy(test, test_y, b), 4)})
        r = rows[-1]
        print(f"floor {floor}: twperformers {r['twperformers_accuracy']:.3f} (macro {r['twperformers_macro_recall']:.3f}), "
              f"FER+ valid {r['ferplus_valid']:.4f}, test {r['ferplus_test']:.4f}", flush=True)
    out = {"benchmark": "prior_shift", "model": str(fa.model_path), "date": now_utc(), "git_commit": git_commit(),
           "machine": machine_info(), "command": "python benchmarks/prior_shift.py " + " ".join(sys.argv[1:]),
           "note": "offsets fitted on twperformers itself: an upper bound of prior correction, not a recipe",
           "rows": rows}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
