"""Where the parallel folder run spends its main process (a probe): `ferlab predict`'s batch function
on the twperformers photos with two front-end workers, the model's input standardised with PyTorch
(as before) or in NumPy (as now), and with 8 or 32 photos per model batch; photos per second and the
main process's CPU time per second of the run. Runs alternate, twice each.

    .venv/bin/python benchmarks/folder_probe.py -> benchmarks/results/folder_probe.json
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"


def main():
    if not (TW / "index.csv").is_file():
        raise SystemExit(f"{TW} is not here: this probe needs ../shared/data/twperformers")
    import torch

    from ferlab.app import analyzer as an
    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.app.batch import run_batch
    from ferlab.data.arrays import standardise
    from ferlab.data.imageio import list_images
    from ferlab.engine.profiling import git_commit, machine_info, now_utc
    items = [(str(f), f) for f in list_images(TW)]
    fa = FaceAnalyzer("fast", backend="onnx", threads=1)
    run_batch(fa, items[:8], Path(tempfile.mkdtemp()), annotate=False, progress=False)

    def torch_standardise(x, norm):  # the earlier path: NumPy -> PyTorch -> NumPy
        return standardise(torch.from_numpy(np.ascontiguousarray(x)), norm).numpy()
    variants = {"pytorch, batch 8": (torch_standardise, 8), "numpy, batch 8": (standardise, 8),
                "numpy, batch 32": (standardise, 32)}
    runs = {k: [] for k in variants}
    for _ in range(2):
        for name, (fn, per_batch) in variants.items():
            an.standardise = fn
            c0, t0 = time.process_time(), time.perf_counter()
            run_batch(fa, items, Path(tempfile.mkdtemp()), annotate=False, progress=False, workers=2,
                      images_per_batch=per_batch)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            runs[name].append({"photos_per_s": round(len(items) / wall, 1), "main_cpu_share": round(cpu / wall, 3)})
            print(name, runs[name][-1], flush=True)
    an.standardise = standardise
    rec = {"probe": "folder", "photos": len(items), "workers": 2, "model": "fast (onnx, 1 thread)", "runs": runs,
           "command": "python benchmarks/folder_probe.py", "date": now_utc(), "git_commit": git_commit(),
           "machine": machine_info()}
    (ROOT / "benchmarks" / "results" / "folder_probe.json").write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
