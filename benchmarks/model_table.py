"""The table `ferlab models` prints: for every name a user can pass (the shipped models and the five
papers' architectures), its paper, its accuracy on FER+ test, SFEW 2.0 Val (crop protocol), ExpW test
and twperformers (through the pipeline), its parameters, its milliseconds per face and whether its
weights ship. Accuracies are read from the records in benchmarks/results (none typed by hand); the
parameters and times are measured here, all in one call on one machine: the model alone, batch 1,
one thread, median of 100 forwards after 5 warm-up calls, at the model's own input (a paper model
that does not ship is timed with random weights: the cost does not depend on their values).

    .venv/bin/python benchmarks/model_table.py
        -> benchmarks/results/model_table.json (the record: date, machine, commit)
        -> src/ferlab/weights/model_table.json (what `ferlab models` reads, the same rows)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ferlab.app.analyzer import shipped_models
from ferlab.engine.checkpoint import load_model, weights_size
from ferlab.engine.config import load_config
from ferlab.engine.profiling import count_params, example_inputs, git_commit, latency_ms, machine_info, now_utc
from ferlab.models import create_model
from ferlab.models.weights import WEIGHT_FILE_KWARGS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PACKAGED = ROOT / "src" / "ferlab" / "weights" / "model_table.json"

PAPERS = {"rasa": "000 RASA", "dan": "001 DAN", "swin_se": "002 Swin-SE + SAM", "pcda": "003 PCDA + NeAA",
          "convcut": "004 Conv-cut"}
# each shipped name's row in generalisation.json (the row measured on the shipped file)
GENERALISATION_ROW = {"default": "default", "fast": "fast_colour64_t2", "fast_ferplus": "ferplus_fast",
                      "resnet18_ferplus": "ferplus_default", "dan": "dan_multisource",
                      "pcda": "pcda_multisource", "ensemble": "ensemble_default_dan", "rasa": "rasa_multisource",
                      "convcut": "convcut_multisource_16ep", "swin_se": "swin_se_multisource"}
SETS = {"ferplus_test": "ferplus_test", "sfew_val": "sfew_val_crop", "expw_test": "expw_test",
        "twperformers": "twperformers"}


def accuracies(name: str) -> tuple[dict, str]:
    """The four accuracies (None where not measured) and the record they come from."""
    rows = json.loads((RESULTS / "generalisation.json").read_text())["rows"]
    row = rows.get(GENERALISATION_ROW.get(name, ""))
    if row is not None:
        acc = {k: (row[src]["accuracy"] if src in row else None) for k, src in SETS.items()}
        return acc, f"benchmarks/results/generalisation.json row {GENERALISATION_ROW[name]}"
    rec = json.loads((RESULTS / f"{name}_ferplus.json").read_text())  # a paper model trained on FER+ only
    return ({"ferplus_test": rec["test"]["accuracy"], "sfew_val": None, "expw_test": None, "twperformers": None},
            f"benchmarks/results/{name}_ferplus.json (FER+ only; its weights are not kept)")


def readme_rows(record: dict) -> list[str]:
    """The README's table of models by name, one row per record row (the same numbers `ferlab models` prints)."""
    def pct(v):
        return "–" if v is None else f"{v:.1f}%"
    out = []
    for name, r in record["rows"].items():
        weights = f"ships, {r['file_mb']:.1f} MB" if r["ships"] else "not shipped (trained on FER+ only)"
        out.append(f"| `{name}` | {r['paper']} | {pct(r['ferplus_test'])} | {pct(r['sfew_val'])} | {pct(r['expw_test'])} | "
                   f"{pct(r['twperformers'])} | {r['params_m']:.1f} M | {r['ms_per_face']:.1f} | {weights} |")
    return out


def timed(model, channels: int, size: int) -> float:
    model.eval()
    args = example_inputs(model, (1, channels, size, size))
    return latency_ms(lambda: model(*args), 100)


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shipped = shipped_models()
    rows = {}
    for name in list(shipped) + [p for p in PAPERS if p not in shipped]:
        acc, source = accuracies(name)
        if name in shipped:
            model, meta = load_model(shipped[name])
            pre = meta["preprocess"]
            ch, size = int(pre["channels"]), int(pre["img_size"])
            ships = {"ships": True, "file_mb": round(weights_size(shipped[name]) / 1e6, 1),
                     "how": meta.get("summary", meta["arch"])}
        else:
            rec = json.loads((RESULTS / f"{name}_ferplus.json").read_text())
            d = load_config(ROOT / "configs" / f"{name}_ferplus_cpu.yaml")["data"]
            ch, size = int(d["channels"]), int(d["img_size"])
            kw = {k: v for k, v in (rec.get("model_kwargs") or {}).items() if k not in WEIGHT_FILE_KWARGS}
            kw.setdefault("in_chans", ch)
            model = create_model(rec["model"], num_classes=len(rec["test_per_class"]), **kw)
            ships = {"ships": False, "file_mb": None, "how": f"train it: ferlab train configs/{name}_ferplus_cpu.yaml"}
        rows[name] = {"paper": PAPERS.get(name, "-"), **{k: None if v is None else round(100 * v, 2) for k, v in acc.items()},
                      "params_m": round(count_params(model) / 1e6, 2), "ms_per_face": round(timed(model, ch, size), 2),
                      "input": f"{size}x{size} {'colour' if ch == 3 else 'gray'}", **ships, "accuracy_from": source}
        print(name, rows[name], flush=True)
    record = {"rows": rows, "units": "accuracy in %; SFEW 2.0 Val on the crop protocol; ms per face: the model "
                                     "alone in PyTorch, batch 1, one thread", "command": "python benchmarks/model_table.py",
              "date": now_utc(), "git_commit": git_commit(), "machine": machine_info()}
    (RESULTS / "model_table.json").write_text(json.dumps(record, indent=1) + "\n")
    PACKAGED.write_text(json.dumps({k: record[k] for k in ("rows", "units", "date")}, indent=1) + "\n")
    print(f"wrote {RESULTS / 'model_table.json'} and {PACKAGED}")


if __name__ == "__main__":
    main()
