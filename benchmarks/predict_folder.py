"""`ferlab predict FOLDER` on one front-end worker and on one per core: photos per second and the
table each writes.

The 1,232 twperformers photos (../shared/data/twperformers), the shipped model given (`fast` by
default, ONNX Runtime, one model thread), through the function `ferlab predict` runs
(`app.batch.run_batch`, no annotated copies), timed from the first photo to the last row (the
command's start-up, the same for both, is left out). The runs alternate, workers 1 then N, for
`--rounds` rounds, so a noisy machine slows both alike; the median of each is recorded, with
whether every run's predictions.csv is byte for byte the one-worker table.

    .venv/bin/python benchmarks/predict_folder.py [--model fast] [--rounds 3]
        -> benchmarks/results/predict_folder.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TW = ROOT.parent / "shared" / "data" / "twperformers"
OUT = ROOT / "benchmarks" / "results" / "predict_folder.json"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fast")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="the parallel run's workers (default: one per core)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N photos (a smoke run; not recorded)")
    a = ap.parse_args(argv)
    if not (TW / "index.csv").is_file():
        raise SystemExit(f"{TW} is not here: this benchmark needs ../shared/data/twperformers")
    from ferlab.app.analyzer import FaceAnalyzer
    from ferlab.app.batch import default_workers, run_batch
    from ferlab.data.imageio import list_images
    from ferlab.engine.profiling import git_commit, machine_info, now_utc
    files = list_images(TW)[: a.limit]
    items = [(str(f), f) for f in files]
    workers = a.workers or default_workers()
    fa = FaceAnalyzer(a.model, backend="onnx", threads=1)
    run_batch(fa, items[:8], Path(tempfile.mkdtemp()), annotate=False, progress=False)  # warm-up
    seconds = {1: [], workers: []}
    digests = {1: [], workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for w in (1, workers):
                out = Path(tmp) / f"r{r}_w{w}"
                t0 = time.perf_counter()
                results, skipped = run_batch(fa, items, out, annotate=False, progress=False, workers=w)
                seconds[w].append(time.perf_counter() - t0)
                digests[w].append(hashlib.sha256((out / "predictions.csv").read_bytes()).hexdigest())
                print(f"round {r} workers {w}: {len(items) / seconds[w][-1]:.1f} photos/s "
                      f"({len(results)} with faces, {len(skipped)} skipped)", flush=True)
    med = {w: sorted(s)[len(s) // 2] for w, s in seconds.items()}
    rec = {"benchmark": "predict_folder", "photos": len(items), "model": a.model, "model_backend": "onnx, 1 thread",
           "cores_usable": len(os.sched_getaffinity(0)), "workers": workers, "rounds": a.rounds,
           "photos_per_s": {"1 worker": round(len(items) / med[1], 2), f"{workers} workers": round(len(items) / med[workers], 2)},
           "speed_up": round(med[1] / med[workers], 3),
           "seconds": {str(w): [round(x, 2) for x in s] for w, s in seconds.items()},
           "same_table_as_one_worker": all(d == digests[1][0] for ds in digests.values() for d in ds),
           "command": "python benchmarks/predict_folder.py" + (f" --model {a.model}" if a.model != "fast" else "")
           + (f" --rounds {a.rounds}" if a.rounds != 3 else ""),
           "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    print(json.dumps(rec, indent=1))
    if a.limit is None:
        OUT.write_text(json.dumps(rec, indent=2) + "\n")


if __name__ == "__main__":
    main()
