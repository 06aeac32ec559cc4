"""Ship a trained, calibrated model inside the package under a name (`--model NAME`, `FaceAnalyzer(NAME)`).

    ferlab export runs/RUN/best runs/ship/NAME --int8
    ferlab calibrate runs/ship/NAME                 # its own selection splits: FER+ valid and ExpW valid
    .venv/bin/python benchmarks/ship_model.py NAME runs/ship/NAME --config CONFIG --summary "one line"

Copies the model to src/ferlab/weights/NAME.{safetensors,json} with the summary, the config it was
trained by and the shipped weights' accuracy on that config's selection splits (which `ferlab serve`
reports). The model must be int8 and calibrated.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ferlab.engine.config import load_config
from ferlab.engine.ensemble import selection_accuracy

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "ferlab" / "weights"


def ship(name: str, src, config, summary: str, shipped_by: str) -> dict:
    src = Path(src)
    meta = json.loads(src.with_suffix(".json").read_text())
    if "temperature" not in meta or "int8" not in str(meta.get("dtype", "")):
        raise SystemExit(f"{src} is not an int8, calibrated model (export it with --int8, then ferlab calibrate it)")
    meta["summary"] = summary
    meta["shipped_by"] = shipped_by
    meta["trained_by"] = f"ferlab train {Path(config).relative_to(ROOT) if Path(config).is_absolute() else config}"
    meta["valid"] = selection_accuracy(src, load_config(config)["data"])
    shutil.copyfile(src.with_suffix(".safetensors"), WEIGHTS / f"{name}.safetensors")
    (WEIGHTS / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {WEIGHTS / f'{name}.safetensors'} ({(WEIGHTS / f'{name}.safetensors').stat().st_size / 1e6:.1f} MB); "
          f"selection splits: {meta['valid']['per_source_accuracy']}")
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("src", help="the int8, calibrated model (PATH or PATH.safetensors)")
    ap.add_argument("--config", required=True, help="the config it was trained by (its selection splits)")
    ap.add_argument("--summary", required=True, help="one line for `ferlab models`")
    a = ap.parse_args()
    ship(a.name, a.src, a.config, a.summary,
         f"python benchmarks/ship_model.py {a.name} {a.src} --config {a.config} --summary {json.dumps(a.summary)}")


if __name__ == "__main__":
    main()
