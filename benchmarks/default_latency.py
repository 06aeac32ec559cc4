"""What the shipped default costs per face beside its members and the other shipped models: the
model alone (no front end), PyTorch on the CPU, one thread, the median of 50 batch-1 forwards (after 5
warm-up calls) and the per-face time in batches of 32, all in one call so the rows compare.

    .venv/bin/python benchmarks/default_latency.py   -> benchmarks/results/default_latency.json
"""
import json
from pathlib import Path

import torch

from ferlab.app.analyzer import resolve_model
from ferlab.engine.checkpoint import load_model
from ferlab.engine.profiling import count_flops, git_commit, latency_ms, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]


def row(model, pre) -> dict:
    model.eval()
    shape = (1, int(pre["channels"]), int(pre["img_size"]), int(pre["img_size"]))
    x1, x32 = torch.zeros(shape), torch.zeros((32,) + shape[1:])
    with torch.no_grad():
        b1 = latency_ms(lambda: model(x1))
        b32 = latency_ms(lambda: model(x32), repeats=10, warmup=2) / 32
    return {"input": f"{shape[2]}x{shape[3]}x{shape[1]}", "ms_batch1": round(b1, 2), "ms_per_face_batch32": round(b32, 2),
            "gflops": round(count_flops(model, shape) / 1e9, 3)}


def main():
    torch.set_num_threads(1)
    rows = {}
    ens, meta = load_model(resolve_model("default"))
    rows["default"] = row(ens, meta["preprocess"])
    for i, m in enumerate(meta["ensemble"]["members"]):
        spec = meta["model_kwargs"]["members"][i]
        pre = {**meta["preprocess"], **spec.get("input", {})}
        rows[f"default member {m['name']}"] = row(ens.members[i], pre)
    for name in ("fast", "resnet18_ferplus"):
        model, m = load_model(resolve_model(name))
        rows[name] = row(model, m["preprocess"])
    for k, v in rows.items():
        print(f"{k:28s} {v}")
    rec = {"rows": rows, "threads": 1, "backend": "pytorch", "command": "python benchmarks/default_latency.py",
           "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    (ROOT / "benchmarks" / "results" / "default_latency.json").write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
