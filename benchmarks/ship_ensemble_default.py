"""Ship the ensemble default: the colour model and the gray default before it, read as one.

    python benchmarks/wise_ft.py resnet18_ferplus \
        runs/resnet18_colour64_multisource_finetune/best runs/wise_ft/resnet18_colour64_multisource_wise \
        --alphas 0,0.2,0.35,0.5,0.65,0.8,0.9,1 --tolerance 0.005
    mkdir -p runs/ens && for e in safetensors json; do
        cp runs/wise_ft/resnet18_colour64_multisource_wise.$e runs/ens/colour64_wise.$e; done
    ferlab calibrate runs/ens/colour64_wise
    ferlab ensemble runs/ens/colour64_wise default --int8 --out runs/ens/ship   # weights searched on valid
    ferlab calibrate runs/ens/ship --config configs/resnet18_colour64_multisource_finetune.yaml
    .venv/bin/python benchmarks/ship_ensemble_default.py runs/ens/ship

Copies the ensemble to src/ferlab/weights/default.{safetensors,json} (the first member; the second in
default.member1.safetensors) with a summary and each
member's provenance (the gray member is the default shipped before; its file is replaced by this one)
and the shipped weights' accuracy on the selection splits (FER+ valid, ExpW valid), which
`ferlab serve` reports.
"""
import json
import sys
from pathlib import Path

from ferlab.engine.checkpoint import read_safetensors, weight_files, write_weights
from ferlab.engine.config import load_config
from ferlab.engine.ensemble import selection_accuracy

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "ferlab" / "weights"


def main(src):
    src = Path(src)
    meta = json.loads(src.with_suffix(".json").read_text())
    if meta.get("arch") != "ensemble":
        raise SystemExit(f"{src} is not an ensemble")
    colour, gray = meta["ensemble"]["members"]
    colour.update(name="colour64", path="runs/ens/colour64_wise (not shipped alone)", made_by=(
        "ResNet-18 fine-tuned 4 epochs at 64x64 colour on FER+ + ExpW + SFEW Train from resnet18_ferplus "
        "(ferlab train configs/resnet18_colour64_multisource_finetune.yaml), interpolated with resnet18_ferplus "
        "at alpha 0.8 (benchmarks/results/wise_ft_resnet18_colour64_multisource_wise.json), calibrated"))
    gray.update(name="gray48", path="the default shipped before (48x48 gray; its file is replaced by this ensemble)",
                made_by=("ResNet-18 fine-tuned on FER+ + ExpW + SFEW Train at 48x48 gray from resnet18_ferplus "
                         "(configs/resnet18_multisource_finetune.yaml), interpolated with it at alpha 0.8 "
                         "(benchmarks/results/wise_ft_resnet18_multisource_wise.json), calibrated"))
    meta["summary"] = ("two ResNet-18s trained on FER+, ExpW and SFEW (64x64 colour, weight 0.8; 48x48 gray, weight "
                       "0.2), their calibrated probabilities averaged: the model every command runs")
    meta["shipped_by"] = "python benchmarks/ship_ensemble_default.py " + str(src)
    data_cfg = load_config(ROOT / "configs" / "resnet18_colour64_multisource_finetune.yaml")["data"]
    meta["valid"] = selection_accuracy(src, data_cfg)
    # the tensors as they are (already int8), each member in a file of its own
    tensors = {}
    for f in weight_files(src):
        tensors.update(read_safetensors(f))
    members = len(meta["model_kwargs"]["members"])
    write_weights(WEIGHTS / "default", tensors, meta, {f"member{i}": f"members.{i}." for i in range(1, members)})
    print(f"wrote {', '.join(f'{f.name} ({f.stat().st_size / 1e6:.1f} MB)' for f in weight_files(WEIGHTS / 'default'))}")


if __name__ == "__main__":
    main(sys.argv[1])
