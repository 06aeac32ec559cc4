"""Ship the fast student distilled from the three-network default as `fast`.

    ferlab train configs/fastnet_l_distill_multisource_from_default3_20ep.yaml   # caches the teacher's logits
    mkdir -p runs/fast_gray48 && for x in safetensors json; do                  # the 48x48 gray student it starts from
      git show e5aa259:src/ferlab/weights/fast.$x > runs/fast_gray48/fast.$x; done
    ferlab train configs/fastnet_l_colour64_distill_multisource_from_default3_t2.yaml
    ferlab export runs/fastnet_l_colour64_distill_multisource_from_default3_t2/best runs/ship/fast_t2/fast --int8
    ferlab calibrate runs/ship/fast_t2/fast        # its own selection splits: FER+ valid and ExpW valid
    .venv/bin/python benchmarks/ship_fast.py runs/ship/fast_t2/fast

(The FER+-only fast ships as `fast_ferplus`; the colour student starts from the 48x48 gray student
shipped as `fast` before it.) Copies the model to src/ferlab/weights/fast.{safetensors,json} with a
summary and the shipped weights' accuracy on the selection splits (which `ferlab serve` reports).
"""
import json
import sys
from pathlib import Path

from ship_model import ROOT, ship  # benchmarks/ship_model.py, beside this script

CONFIG = ROOT / "configs" / "fastnet_l_colour64_distill_multisource_from_default3_t2.yaml"
SUMMARY = ("a small CNN (64x64 colour) distilled for speed on FER+, ExpW and SFEW from the three-network default (at temperature 2), "
           "under 1 ms per face on ONNX Runtime, one CPU thread")


def main(src):
    if json.loads(Path(src).with_suffix(".json").read_text()).get("arch") != "fastnet_l":
        raise SystemExit(f"{src} is not a fastnet_l")
    ship("fast", src, CONFIG, SUMMARY, "python benchmarks/ship_fast.py " + str(src))


if __name__ == "__main__":
    main(sys.argv[1])
