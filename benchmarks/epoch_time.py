"""Estimated training time per FER+ epoch of each CPU recipe (the numbers quoted in configs/*_cpu.yaml
to size their epochs): median seconds of a few training steps (forward, loss, backward, step) at the
recipe's batch size and input, as the trainer runs them on a CPU (channels-last, the recipe's
autocast dtype), times the steps of an epoch of 27,947 images. SAM recipes count two
passes. Validation time is not included. Also: the landmark net's epoch, and a PCDA ablation row's
(benchmarks/ablations.py pcda: the attention module and classifier on cached backbone features).

    .venv/bin/python benchmarks/epoch_time.py [--only NAME ...]  -> benchmarks/results/epoch_time_estimates.json
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ferlab.engine.config import load_config
from ferlab.engine.profiling import example_inputs, git_commit, machine_info, now_utc
from ferlab.engine.train import amp_dtype
from ferlab.models import create_model
from ferlab.models.mobilefacenet import MobileFaceNetLandmarks
from ferlab.models.weights import WEIGHT_FILE_KWARGS

ROOT = Path(__file__).resolve().parents[1]
N_TRAIN = 27947
RECIPES = ["resnet18_ferplus_cpu", "dan_ferplus_cpu", "swin_se_ferplus_cpu", "pcda_ferplus_cpu", "convcut_ferplus_cpu"]


class HeadOnFeatures(torch.nn.Module):
    """A model's head run on its backbones' outputs, as ferlab.engine.head_training trains it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *feats):
        return self.model.forward_from_features(*feats)


def step_seconds(model, args, n_classes, passes=1, repeats=3, amp=None) -> float:
    model = model.to(memory_format=torch.channels_last).train()
    if args[0].ndim == 4:
        args = (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    y = torch.randint(0, n_classes, (args[0].shape[0],))
    times = []
    for i in range(repeats + 1):
        t = time.perf_counter()
        for _ in range(passes):
            with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
                out = model(*args)
            loss = F.cross_entropy(out, y) if out.ndim == 2 else out.float().pow(2).mean()
            opt.zero_grad()
            loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None, help="measure these rows only; the others keep their record")
    only = ap.parse_args().only
    torch.set_num_threads(2)
    out = ROOT / "benchmarks" / "results" / "epoch_time_estimates.json"
    rows = json.loads(out.read_text())["rows"] if only and out.is_file() else {}
    for name in RECIPES:
        if only and name not in only:
            continue
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        d, bs = cfg["data"], int(cfg["train"]["batch_size"])
        kw = {k: v for k, v in cfg["model"].get("kwargs", {}).items() if k not in WEIGHT_FILE_KWARGS}
        m = create_model(cfg["model"]["name"], num_classes=8, in_chans=d["channels"], **kw)
        args = example_inputs(m, (bs, d["channels"], d["img_size"], d["img_size"]))
        amp = amp_dtype(cfg["train"].get("amp", "auto"), torch.device("cpu"))
        s = step_seconds(m, args, 8, passes=2 if cfg["optim"].get("sam") else 1, amp=amp)
        rows[name] = {"seconds_per_step": s, "batch_size": bs, "minutes_per_epoch": s * (N_TRAIN // bs) / 60,
                      "epochs": cfg["schedule"]["epochs"]}
        print(f"{name}: {rows[name]['minutes_per_epoch']:.1f} min per epoch", flush=True)
    if not only or "landmarks_ferplus" in only:
        s = step_seconds(MobileFaceNetLandmarks(), (torch.randn(64, 3, 112, 112),), 8)  # trained in float32
        rows["landmarks_ferplus"] = {"seconds_per_step": s, "batch_size": 64, "minutes_per_epoch": s * (N_TRAIN // 64) / 60}
        print(f"landmarks_ferplus: {rows['landmarks_ferplus']['minutes_per_epoch']:.1f} min per epoch")
    if not only or "pcda_ablation_row" in only:  # the full model's head on its cached backbone features
        cfg = load_config(ROOT / "configs" / "pcda_ferplus_cpu.yaml")
        d, bs = cfg["data"], int(cfg["train"]["batch_size"])
        kw = {k: v for k, v in cfg["model"]["kwargs"].items() if k not in WEIGHT_FILE_KWARGS}
        m = create_model("pcda", num_classes=8, in_chans=d["channels"], freeze_backbone=True, **kw)
        with torch.no_grad():
            feats = tuple(f.detach() for f in m.backbone_features(torch.randn(bs, d["channels"], d["img_size"], d["img_size"])))
        amp = amp_dtype(cfg["train"].get("amp", "auto"), torch.device("cpu"))
        s = step_seconds(HeadOnFeatures(m), feats, 8, amp=amp)
        rows["pcda_ablation_row"] = {"seconds_per_step": s, "batch_size": bs, "minutes_per_epoch": s * (N_TRAIN // bs) / 60}
        print(f"pcda_ablation_row: {rows['pcda_ablation_row']['minutes_per_epoch']:.1f} min per epoch")
    out.write_text(json.dumps({"rows": rows, "command": "python benchmarks/epoch_time.py", "date": now_utc(),
                               "git_commit": git_commit(), "machine": machine_info()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
