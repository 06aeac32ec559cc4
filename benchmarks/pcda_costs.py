"""PCDA (paper 003) parameters and FLOPs per module (paper Table 8) and CPU latency per image, at the
paper's size (112x112 RGB, c_t 768) and at the FER+ CPU recipe's (48x48 gray).

    .venv/bin/python benchmarks/pcda_costs.py

Writes benchmarks/results/pcda_costs.json. FLOPs count a multiply-add as 2 (the paper's "FLOPs"
are multiply-adds: its 5.5 G for IR-50 is our 11 G).
"""
import json
from pathlib import Path

import torch

from ferlab.engine.config import load_config
from ferlab.engine.profiling import costs_by_module, example_inputs, git_commit, latency_ms, machine_info, now_utc
from ferlab.models import create_model
from ferlab.models.weights import WEIGHT_FILE_KWARGS

ROOT = Path(__file__).resolve().parents[1]
PAPER_TABLE8 = {"image_backbone": (17.6e6, 5.5e9), "landmark_backbone": (1.0e6, 0.2e9),
                "cross_attention_module": (15.6e6, 3.6e9), "total": (34.2e6, 9.3e9)}


def measure(cfg_path: str) -> dict:
    cfg = load_config(ROOT / cfg_path)
    d = cfg["data"]
    kw = {k: v for k, v in cfg["model"]["kwargs"].items() if k not in WEIGHT_FILE_KWARGS}
    m = create_model("pcda", num_classes=7 if d.get("labels") == "basic7" else 8, in_chans=d["channels"], **kw).eval()
    shape = (1, d["channels"], d["img_size"], d["img_size"])
    parts = costs_by_module(m, shape, {"image_backbone": m.image_backbone, "landmark_backbone": m.landmark_net})
    # the dual attention module: everything that is neither backbone (heatmap, embeddings, tokens, blocks, head)
    parts["cross_attention_module"] = {
        "params": parts["total"]["params"] - parts["image_backbone"]["params"] - parts["landmark_backbone"]["params"],
        "flops": parts["total"]["flops"] - parts["image_backbone"]["flops"] - parts["landmark_backbone"]["flops"]}
    torch.set_num_threads(2)
    args = example_inputs(m, shape)
    return {"config": cfg_path, "input": list(shape), "modules": parts,
            "cpu_latency_ms_per_image": latency_ms(lambda: m(*args), 30)}


def main():
    res = {"paper_table8_multiply_adds": {k: {"params": p, "multiply_adds": f} for k, (p, f) in PAPER_TABLE8.items()},
           "paper_size": measure("configs/pcda_rafdb_paper.yaml"), "ferplus_cpu": measure("configs/pcda_ferplus_cpu.yaml"),
           "command": "python benchmarks/pcda_costs.py", "date": now_utc(), "git_commit": git_commit(),
           "machine": machine_info()}
    out = ROOT / "benchmarks" / "results" / "pcda_costs.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print("| module | paper params | paper GMACs | params (112 px) | GMACs (112 px) | params (FER+ CPU) | GMACs (FER+ CPU) |")
    print("|---|---|---|---|---|---|---|")
    for k in ("image_backbone", "landmark_backbone", "cross_attention_module", "total"):
        p, f = PAPER_TABLE8[k]
        a, b = res["paper_size"]["modules"][k], res["ferplus_cpu"]["modules"][k]
        print(f"| {k} | {p / 1e6:.1f} M | {f / 1e9:.1f} | {a['params'] / 1e6:.1f} M | {a['flops'] / 2e9:.2f} | "
              f"{b['params'] / 1e6:.1f} M | {b['flops'] / 2e9:.2f} |")
    print(f"CPU latency per image: {res['paper_size']['cpu_latency_ms_per_image']:.1f} ms (112 px), "
          f"{res['ferplus_cpu']['cpu_latency_ms_per_image']:.1f} ms (FER+ CPU recipe); paper: 1.3 ms on a GPU")


if __name__ == "__main__":
    main()
