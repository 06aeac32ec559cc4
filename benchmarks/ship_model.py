"""Ship a trained, calibrated model inside the package under a name (`--model NAME`, `FaceAnalyzer(NAME)`).

    ferlab export runs/RUN/best runs/ship/NAME --int8
    ferlab calibrate runs/ship/NAME                 # its own selection splits: FER+ valid and ExpW valid
    .venv/bin/python benchmarks/ship_model.py NAME runs/ship/NAME --config CONFIG --summary "one line"

Copies the model to src/ferlab/weights/NAME.{safetensors,json} (and the further files of a sharded
model, an ensemble's members, as NAME.memberN.safetensors) with the summary, the config it was
trained by (or, with --made-by, the command that made it) and the shipped weights' accuracy on that config's selection splits (which `ferlab serve`
reports). The model must be int8 and calibrated. `--share default dan`: an ensemble whose members ship
on their own reads their tensors from those files instead of holding a second copy.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ferlab.engine.checkpoint import own_weight_files, share_weights, weights_size
from ferlab.engine.config import load_config
from ferlab.engine.ensemble import selection_accuracy

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "ferlab" / "weights"


def ship(name: str, src, config, summary: str, shipped_by: str, made_by: str | None = None, share=()) -> dict:
    src = Path(src)
    meta = json.loads(src.with_suffix(".json").read_text())
    if "temperature" not in meta or "int8" not in str(meta.get("dtype", "")):
        raise SystemExit(f"{src} is not an int8, calibrated model (export it with --int8, then ferlab calibrate it)")
    meta["summary"] = summary
    meta["shipped_by"] = shipped_by
    if made_by:  # e.g. an ensemble: made by a command, not by one training run
        meta["made_by"] = made_by
    else:
        meta["trained_by"] = f"ferlab train {Path(config).relative_to(ROOT) if Path(config).is_absolute() else config}"
    for m in meta.get("ensemble", {}).get("members", []):  # the package names no path of this machine
        if Path(m["path"]).is_absolute() and Path(m["path"]).is_relative_to(ROOT):
            m["path"] = str(Path(m["path"]).relative_to(ROOT))
    meta["valid"] = selection_accuracy(src, load_config(config)["data"])
    if (WEIGHTS / f"{name}.json").is_file():  # the files of the model shipped under this name before go
        for f in own_weight_files(WEIGHTS / name):
            f.unlink(missing_ok=True)
    files = own_weight_files(src)  # a sharded model (an ensemble's further members) keeps its parts, renamed
    shards = [f.name.replace(src.stem + ".", name + ".", 1) for f in files[1:]]
    for f, new in zip(files, [f"{name}.safetensors", *shards]):
        shutil.copyfile(f, WEIGHTS / new)
    if shards:
        meta["weight_shards"] = shards
    (WEIGHTS / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    if share:  # members that other shipped models hold byte for byte are read from their files
        entries = share_weights(WEIGHTS / name, [WEIGHTS / s for s in share])
        print("shares " + ", ".join(f"{e['as']} <- {e['file']}" for e in entries))
    own = own_weight_files(WEIGHTS / name)
    print(f"wrote {WEIGHTS / f'{name}.safetensors'} ({sum(f.stat().st_size for f in own) / 1e6:.1f} MB of its own in "
          f"{len(own)} file(s), {weights_size(WEIGHTS / name) / 1e6:.1f} MB read in all); "
          f"selection splits: {meta['valid']['per_source_accuracy']}")
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("src", help="the int8, calibrated model (PATH or PATH.safetensors)")
    ap.add_argument("--config", required=True, help="the config it was trained by (its selection splits)")
    ap.add_argument("--summary", required=True, help="one line for `ferlab models`")
    ap.add_argument("--made-by", help="the command that made the model, when no training config did (an ensemble)")
    ap.add_argument("--share", nargs="+", default=[], metavar="SHIPPED",
                    help="shipped models whose files hold some of its tensors byte for byte (an ensemble's members): "
                         "read from there, not copied")
    a = ap.parse_args()
    made = (f" --made-by {json.dumps(a.made_by)}" if a.made_by else "") + (f" --share {' '.join(a.share)}" if a.share else "")
    ship(a.name, a.src, a.config, a.summary,
         f"python benchmarks/ship_model.py {a.name} {a.src} --config {a.config} --summary {json.dumps(a.summary)}{made}",
         a.made_by, a.share)


if __name__ == "__main__":
    main()
