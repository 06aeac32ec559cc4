"""Do the shipped models read better together? The ensemble of `default`, `fast` and
`resnet18_ferplus` (the weighted mean of their calibrated probabilities), its weights searched on
a grid over the simplex (step 0.1) by the selection score of the default's training data: the mean
of FER+ valid and ExpW valid accuracy. No test set is looked at.

    python benchmarks/ensemble_shipped.py   -> benchmarks/results/ensemble_shipped.json
                                               (and runs/ensemble/shipped3.safetensors, int8)
"""
from __future__ import annotations

import json
from pathlib import Path

from ferlab.app.analyzer import resolve_model
from ferlab.engine.ensemble import write_ensemble
from ferlab.engine.profiling import git_commit, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ("default", "fast", "resnet18_ferplus")


def main():
    out = ROOT / "runs" / "ensemble" / "shipped3"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = write_ensemble([resolve_model(m) for m in MEMBERS], out, int8=True)
    chosen = meta["ensemble"]["chosen_on"]
    record = {"members": list(MEMBERS), "weights": chosen["weights"], "grid_step": chosen["grid_step"],
              "n_valid_faces": chosen["n"], "selection": chosen["selection"],
              "members_alone": dict(zip(MEMBERS, chosen["members_alone"])),
              "command": "python benchmarks/ensemble_shipped.py", "date": now_utc(), "git_commit": git_commit(),
              "machine": machine_info()}
    path = ROOT / "benchmarks" / "results" / "ensemble_shipped.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("weights", "selection")}))


if __name__ == "__main__":
    main()
