"""Ship the fast student distilled from the ensemble default as `fast`.

    cp src/ferlab/weights/fast.safetensors src/ferlab/weights/fast_ferplus.safetensors   # the FER+-only
    cp src/ferlab/weights/fast.json src/ferlab/weights/fast_ferplus.json                 # fast, kept by name
    ferlab train configs/fastnet_l_distill_multisource_from_ensemble_20ep.yaml train.threads=1
    ferlab export runs/fastnet_l_distill_multisource_from_ensemble_20ep/best runs/fast_ship/fast --int8
    ferlab calibrate runs/fast_ship/fast          # its own selection splits: FER+ valid and ExpW valid
    .venv/bin/python benchmarks/ship_fast.py runs/fast_ship/fast

Copies the model to src/ferlab/weights/fast.{safetensors,json} with a summary and the shipped
weights' accuracy on the selection splits (which `ferlab serve` reports).
"""
import json
import shutil
import sys
from pathlib import Path

from ferlab.engine.config import load_config
from ferlab.engine.ensemble import selection_accuracy

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "ferlab" / "weights"
CONFIG = ROOT / "configs" / "fastnet_l_distill_multisource_from_ensemble_20ep.yaml"


def main(src):
    src = Path(src)
    meta = json.loads(src.with_suffix(".json").read_text())
    if meta.get("arch") != "fastnet_l" or "temperature" not in meta:
        raise SystemExit(f"{src} is not a calibrated fastnet_l (export it with --int8, then ferlab calibrate it)")
    meta["summary"] = ("a small CNN (48x48 gray) distilled for speed from the default on FER+, ExpW and SFEW, "
                       "about 7x faster per face than one ResNet-18")
    meta["shipped_by"] = "python benchmarks/ship_fast.py " + str(src)
    meta["valid"] = selection_accuracy(src, load_config(CONFIG)["data"])
    shutil.copyfile(src.with_suffix(".safetensors"), WEIGHTS / "fast.safetensors")
    (WEIGHTS / "fast.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {WEIGHTS / 'fast.safetensors'} ({(WEIGHTS / 'fast.safetensors').stat().st_size / 1e6:.1f} MB); "
          f"selection splits: {meta['valid']['per_source_accuracy']}")


if __name__ == "__main__":
    main(sys.argv[1])
