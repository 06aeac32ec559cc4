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
import sys
from pathlib import Path

from ship_model import ROOT, ship  # benchmarks/ship_model.py, beside this script

CONFIG = ROOT / "configs" / "fastnet_l_distill_multisource_from_ensemble_20ep.yaml"
SUMMARY = ("a small CNN (48x48 gray) distilled for speed on FER+, ExpW and SFEW from the two-ResNet-18 default "
           "shipped before, about 7x faster per face than one ResNet-18")


def main(src):
    if json.loads(Path(src).with_suffix(".json").read_text()).get("arch") != "fastnet_l":
        raise SystemExit(f"{src} is not a fastnet_l")
    ship("fast", src, CONFIG, SUMMARY, "python benchmarks/ship_fast.py " + str(src))


if __name__ == "__main__":
    main(sys.argv[1])
