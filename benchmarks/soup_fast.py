"""Model soups of the fast student's runs (`ferlab soup`): every run below started from the same 48x48
gray student and was distilled from the three-network default on FER+, ExpW and SFEW for 10 epochs
(the temperature-2 recipe shipped as `fast`, with another seed, with a weight average, taught by the
teacher alone; temperature 1; 30 epochs at temperature 4).

- greedy: all six, ranked by their selection score (FER+ valid and ExpW valid), each joining only if
  the soup's score does not fall (the rule that needs no set from elsewhere);
- uniform: the mean of the four temperature-2 runs (a recipe, compared on SFEW Val and twperformers
  by `benchmarks/generalisation.py`: rows `fast_soup_t2_uniform4`).

    ferlab train configs/fastnet_l_colour64_distill_multisource_from_default3_{t2,t2_seed1,t2_ema,t2_alpha1,t1,30ep}.yaml
    .venv/bin/python benchmarks/soup_fast.py   -> benchmarks/results/soup_fast.json, runs/soup/{greedy6,t2_uniform4}
    ferlab export runs/soup/t2_uniform4 runs/ship/fast_soup_t2_uniform4/fast --int8
    ferlab calibrate runs/ship/fast_soup_t2_uniform4/fast
    .venv/bin/python benchmarks/generalisation.py --add --sets all --model fast_soup_t2_uniform4=runs/ship/fast_soup_t2_uniform4/fast
"""
from __future__ import annotations

import json
from pathlib import Path

from ferlab.engine.profiling import git_commit, machine_info, now_utc
from ferlab.engine.weight_average import write_soup

ROOT = Path(__file__).resolve().parents[1]
RUN = "runs/fastnet_l_colour64_distill_multisource_from_default3"
T2 = [f"{RUN}_t2/best", f"{RUN}_t2_seed1/best", f"{RUN}_t2_ema/best", f"{RUN}_t2_alpha1/best"]
SOUPS = {"greedy6": (T2 + [f"{RUN}_t1/best", f"{RUN}_30ep/best"], True), "t2_uniform4": (T2, False)}


def main():
    record = {"command": "python benchmarks/soup_fast.py", "date": now_utc(), "git_commit": git_commit(),
              "machine": machine_info(), "soups": {}}
    for name, (paths, greedy) in SOUPS.items():
        meta = write_soup([ROOT / f"{p}.safetensors" for p in paths], ROOT / "runs" / "soup" / name, greedy=greedy)
        rel = lambda p: str(Path(p).relative_to(ROOT))  # noqa: E731 - the record names no path of this machine
        record["soups"][name] = {**meta["soup"],
                                 "ingredients": [{**i, "path": rel(i["path"])} for i in meta["soup"]["ingredients"]],
                                 **({"greedy_trials": [{**t, "with": [rel(p) for p in t["with"]]}
                                                       for t in meta["soup"]["greedy_trials"]]} if greedy else {})}
    out = ROOT / "benchmarks" / "results" / "soup_fast.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
