"""CPU latency per face of every model with recorded FER+ results, all measured in one call on one
machine, so that the README's latency column can be compared across rows recorded on different days
(and machines).

    .venv/bin/python benchmarks/cpu_latency.py

For each benchmarks/results/NAME_ferplus.json, builds the same architecture (its recorded model name
and kwargs, input size and channels from configs/NAME_ferplus_cpu.yaml) with random weights — the
cost of a forward pass does not depend on the weights' values — and measures the median of 100
batch-1 forwards (2 threads, after 5 warm-up calls), as benchmarks/ferplus_results.py does.
Writes benchmarks/results/cpu_latency.json (date, machine, command).
"""
import json
from pathlib import Path

import torch

from ferlab.engine.config import load_config
from ferlab.engine.profiling import example_inputs, git_commit, latency_ms, machine_info, now_utc
from ferlab.models import create_model
from ferlab.models.weights import WEIGHT_FILE_KWARGS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    rows = {}
    for path in sorted(RESULTS.glob("*_ferplus.json")):
        name = path.name[: -len("_ferplus.json")]
        rec = json.loads(path.read_text())
        recipe = ROOT / "configs" / f"{name}_ferplus_cpu.yaml"
        if not recipe.is_file() or "test_per_class" not in rec:
            # a recipe's variant (resnet18_8ep: fewer epochs, same architecture), or not an emotion
            # model's record (landmarks_ferplus.json: the landmark net, timed against dlib there)
            print(f"{name:10s} skipped: no recipe of its own or not an emotion model", flush=True)
            continue
        d = load_config(recipe)["data"]
        kw = {k: v for k, v in (rec.get("model_kwargs") or {}).items() if k not in WEIGHT_FILE_KWARGS}
        kw.setdefault("in_chans", d["channels"])
        model = create_model(rec["model"], num_classes=len(rec["test_per_class"]), **kw).eval()
        args = example_inputs(model, (1, d["channels"], d["img_size"], d["img_size"]))
        ms = latency_ms(lambda: model(*args), 100)  # under no_grad, as ferplus_results.py
        rows[name] = {"model": rec["model"], "input": f"{d['channels']}x{d['img_size']}x{d['img_size']}",
                      "ms_per_face": ms, "recorded_with_results": rec["cpu_latency_ms_per_face_model"],
                      "recorded_on": rec["machine"]["cpu"]}
        print(f"{name:10s} {ms:6.1f} ms (recorded with its results: {rec['cpu_latency_ms_per_face_model']:.1f} "
              f"on {rec['machine']['cpu']})", flush=True)
    out = {"rows": rows, "command": "python benchmarks/cpu_latency.py", "date": now_utc(),
           "git_commit": git_commit(), "machine": machine_info()}
    (RESULTS / "cpu_latency.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
