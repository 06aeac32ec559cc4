"""Start-up time of the CLI and the cost of a big photo.

- `ferlab --help`, `ferlab models`: wall time of the whole command (a fresh process each, median of 5).
- `ferlab predict` on the astronaut (512x512): wall time of the whole command, model load included.
- A 24-megapixel photo (the astronaut scaled to 6000x4000, saved as JPEG): time of
  `FaceAnalyzer.analyze` on it (after one warm-up call on a small photo) and the process's peak RSS,
  in a fresh process; the face found and its label.

    .venv/bin/python benchmarks/startup_bigphoto.py   -> benchmarks/results/startup_bigphoto.json
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ferlab.engine.profiling import git_commit, machine_info, now_utc

ROOT = Path(__file__).resolve().parents[1]
FERLAB = [sys.executable, "-m", "ferlab.cli"]
BIG = r"""
import json, resource, sys, time
from ferlab.app.analyzer import FaceAnalyzer
from skimage import data
fa = FaceAnalyzer()
fa.analyze(data.astronaut())
t = time.perf_counter()
faces = fa.analyze(sys.argv[1])
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "faces": len(faces), "label": faces[0]["label"] if faces else None,
                  "box": faces[0]["box"] if faces else None}))
"""


def wall(cmd, n=5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    res = {"help_s": wall(FERLAB + ["--help"]), "models_s": wall(FERLAB + ["models"])}
    with tempfile.TemporaryDirectory() as d:
        res["predict_astronaut_s"] = wall(FERLAB + ["predict", "--out", d], n=3)
        import cv2
        from skimage import data
        big = cv2.resize(data.astronaut(), (6000, 6000), interpolation=cv2.INTER_CUBIC)[1000 - 500:5000 - 500]
        path = Path(d) / "big.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        out = subprocess.run([sys.executable, "-c", BIG, str(path)], capture_output=True, text=True, check=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
        res["photo_24mp"] = {"width": 6000, "height": 4000, **json.loads(out.stdout.strip().splitlines()[-1])}
    res.update({"targets": {"help_s": 2.0, "models_s": 2.0}, "command": "python benchmarks/startup_bigphoto.py",
                "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()})
    (ROOT / "benchmarks" / "results" / "startup_bigphoto.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
