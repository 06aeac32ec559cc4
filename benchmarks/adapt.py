"""`ferlab adapt` on people it has never seen: folds by performer (twperformers) or by movie (SFEW Val).

For each fold, the shipped model is adapted (`ferlab.adapt`, the recipe as a user gets it) on photos
of the other folds' people only -- 5 or 20 photos per class drawn from them (seeded), or all of
them -- and tested on the fold's people, each photo through the same front end (detection, 68
points, alignment; the largest face; a photo with no face counts wrong). Every photo is tested once,
by a model that never saw its person; the pooled accuracy, macro recall and per-class recall come
with 95 % intervals resampling people (movies for SFEW). Beside each: the base model on the same
photos, and, after adapting on all photos, FER+ test (what was not forgotten; FER+ valid when the
recipes are compared, since that is where `auto`'s recipe is chosen).

    python benchmarks/adapt.py                          # twperformers, default and fast, 5/20/all
    python benchmarks/adapt.py --domain sfew_val        # SFEW 2.0 Val's movies (the default trained on Train)
    python benchmarks/adapt.py --recipes                # the modes compared (which one `auto` takes)
    python benchmarks/adapt.py --timing                 # fast on 1,000 photos, cold cache: time, memory

Results: benchmarks/results/adapt.json (each section keyed by its arguments, with command, date,
machine and git commit; written as cells finish).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "adapt.json"
# name -> engine.adapt.Recipe keywords, every one spelled out (the `auto` recipe is app.adapt's
# default); "replay" > 0 also hands the adapt FER+ train (../shared/data/ferplus) as replay faces,
# or, with "replay_photos", a folder of ../shared/data read as unlabelled photos
RECIPES = {
    "head_replay": {"mode": "head", "lr": 3e-3, "distill": 0.0, "replay": 1.0, "l2sp": 0.0},
    "head_plain": {"mode": "head", "lr": 3e-3, "distill": 0.0, "replay": 0.0, "l2sp": 0.0},
    "last_replay": {"mode": "last", "lr": 3e-4, "distill": 0.0, "replay": 1.0, "l2sp": 0.0},
    "full_replay": {"mode": "full", "lr": 3e-4, "distill": 0.0, "replay": 1.0, "l2sp": 0.0},
    "full_plain": {"mode": "full", "lr": 3e-4, "distill": 0.0, "replay": 0.0, "l2sp": 0.0},
    "last_plain": {"mode": "last", "lr": 3e-4, "distill": 0.0, "replay": 0.0, "l2sp": 0.0},
    "full_same_face_distill_l2sp": {"mode": "full", "lr": 3e-4, "distill": 1.0, "replay": 0.0, "l2sp": 0.01},
    # what a user without FER+ can do: replay any photos of faces, unlabelled (here SFEW 2.0 Train's
    # movie frames, labels unread)
    "last_replay_unlabelled_photos": {"mode": "last", "lr": 3e-4, "distill": 0.0, "replay": 1.0, "l2sp": 0.0,
                                      "replay_photos": "sfew/Train"},
}


# a domain -> (dataset folder, the split used or None for all). SFEW: Val alone (its 24 movies), as
# the shipped default trained on SFEW Train
DOMAINS = {"twperformers": ("twperformers", None), "sfew_val": ("sfew", "test")}
DOMAIN_NAMES = {"twperformers": "twperformers (posed)", "sfew_val": "SFEW 2.0 Val (movies)"}


def read_domain(name: str):
    """(paths, canonical labels, person or movie ids) of every photo of a domain."""
    from ferlab.data.labels import CANONICAL
    from ferlab.data.readers import DATASET_READERS
    from ferlab.data.splits import merge
    folder, split = DOMAINS[name]
    if not (DATA / folder / "index.csv").is_file():
        raise SystemExit(f"{DATA / folder} is not here: this benchmark needs ../shared/data/{folder}")
    splits = DATASET_READERS[folder](DATA / folder, label_set=CANONICAL)
    if split is not None:
        splits = {split: splits[split]}
    s = merge(list(splits.values())) if len(splits) > 1 else next(iter(splits.values()))
    return [Path(p).resolve() for p in s.paths], [s.label_set[i] for i in s.labels], list(s.groups)


def folds_by_person(groups, k: int, seed: int = 0) -> np.ndarray:
    people = sorted(set(groups))
    rng = np.random.RandomState(seed)
    rng.shuffle(people)
    fold_of = {p: i % k for i, p in enumerate(people)}
    return np.array([fold_of[g] for g in groups])


def pick(labels, pool: np.ndarray, per_class, seed: int) -> np.ndarray:
    if per_class == "all":
        return pool
    rng = np.random.RandomState(seed)
    lab = np.asarray(labels)
    out = []
    for c in sorted(set(lab[pool])):
        idx = pool[lab[pool] == c]
        out += rng.choice(idx, size=min(int(per_class), len(idx)), replace=False).tolist()
    return np.array(sorted(out))


def write_csv(path: Path, paths, labels, groups, idx) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "subject"])
        for i in idx:
            w.writerow([str(paths[i]), labels[i], groups[i]])
    return path


def test_faces(paths, model_name_or_path):
    """Aligned faces of every photo at the model's input (the front end's cache), and which were found."""
    from ferlab.app.analyzer import resolve_model
    from ferlab.data.readers import SampleList
    from ferlab.engine.checkpoint import load_meta
    from ferlab.faces.aligned_cache import aligned_faces
    pre = load_meta(resolve_model(model_name_or_path))["preprocess"]
    s = SampleList(paths=list(paths), labels=np.zeros(len(paths), np.int64), label_set=("neutral",), source="test")
    faces, ok, _ = aligned_faces(s, pre["img_size"], pre["channels"], pre.get("framing", "fer2013"), progress=False)
    return faces, ok


def predict_names(model_path, faces) -> list[str]:
    import torch

    from ferlab.app.analyzer import resolve_model
    from ferlab.data.arrays import standardise
    from ferlab.engine.checkpoint import load_model
    model, meta = load_model(resolve_model(model_path))
    norm = {"mean": meta["preprocess"]["mean"], "std": meta["preprocess"]["std"]}
    out = []
    with torch.no_grad():
        for i in range(0, len(faces), 256):
            x = standardise(torch.from_numpy(faces[i:i + 256]).float() / 255.0, norm)
            out += [meta["labels"][j] for j in model(x).argmax(1).tolist()]
    return out


def pooled(true_names, pred_names, groups, n_boot=1000) -> dict:
    from ferlab.engine.metrics import bootstrap, score
    classes = sorted(set(true_names), key=true_names.index)
    t = np.array([classes.index(n) for n in true_names])
    p = np.array([classes.index(n) if n in classes else -1 for n in pred_names])
    s = score(t, p, list(range(len(classes))))
    return {"n": s["n"], "accuracy": round(s["accuracy"], 4), "macro_recall": round(s["macro_recall"], 4),
            "per_class_recall": {classes[c]: round(v, 4) for c, v in s["recall"].items()},
            "bootstrap": bootstrap(t, p, list(range(len(classes))), groups, n_boot)}


def ferplus_split(model_path, split: str = "test", cache={}) -> tuple[float, float]:
    """FER+ `split` (majority labels, the model on the crops): (accuracy, mean class accuracy); the
    second does not move when a model only learns another mix of classes."""
    from ferlab.app.analyzer import resolve_model
    from ferlab.data.labels import CANONICAL
    from ferlab.data.readers import DATASET_READERS
    from ferlab.engine.evaluate import evaluate_checkpoint_on_split
    if split not in cache:
        cache[split] = DATASET_READERS["ferplus"](DATA / "ferplus", label_set=CANONICAL, splits=(split,))[split]
    m = evaluate_checkpoint_on_split(resolve_model(model_path), cache[split])
    return round(float(m["accuracy"]), 4), round(float(m["mean_class_accuracy"]), 4)


def cell(domain, model, per_class, k, recipe_name, work: Path, log, forgetting: str = "test") -> dict:
    """One table cell: every fold adapted and tested; pooled over the domain's photos. After adapting
    on all photos, FER+ `forgetting` (valid when recipes are compared and chosen, test for the
    recipe users get) says what was not forgotten."""
    from ferlab import adapt
    from ferlab.engine.adapt import Recipe
    paths, labels, groups = read_domain(domain)
    fold = folds_by_person(groups, k)
    faces, ok = test_faces(paths, model)
    pred_adapted = [""] * len(paths)
    pred_base = [""] * len(paths)
    base_names = predict_names(model, faces[ok])
    for j, i in enumerate(np.flatnonzero(ok)):
        pred_base[i] = base_names[j]
    per_fold, ferplus_after, seconds = [], [], []
    for f in range(k):
        pool = np.flatnonzero(fold != f)
        train = pick(labels, pool, per_class, seed=f)
        data = write_csv(work / f"{domain}_{f}_{per_class}.csv", paths, labels, groups, train)
        spec = dict(RECIPES.get(recipe_name, {}))
        photos_dir = spec.pop("replay_photos", None)
        # "auto": no recipe given, so the command's own choice (app.adapt's AUTO_MODE and defaults) runs
        recipe = Recipe(seed=f, **spec) if recipe_name != "auto" else None
        wants_replay = recipe is None or recipe.replay > 0
        replay = DATA / "ferplus" if wants_replay and (DATA / "ferplus").is_dir() else None
        replay_dataset = "ferplus"
        if photos_dir:
            replay, replay_dataset = DATA / photos_dir, "photos"
        t0 = time.time()
        res = adapt(model, data, work / f"out_{domain}_{model}_{per_class}_{recipe_name}_{f}", seed=f, recipe=recipe,
                    replay=replay, replay_dataset=replay_dataset, n_boot=100, progress=False, log=lambda *_: None)
        seconds.append(round(time.time() - t0, 1))
        test = np.flatnonzero((fold == f) & ok)
        names = predict_names(res.path, faces[test])
        for j, i in enumerate(test):
            pred_adapted[i] = names[j]
        sel = np.flatnonzero(fold == f)
        acc = float(np.mean([pred_adapted[i] == labels[i] for i in sel]))
        per_fold.append({"fold": f, "people": len({groups[i] for i in sel}), "trained_on": int(len(train)),
                         "held_out_in_adapt": res.report["data"]["held_out"], "best_step": res.report["training"]["best_step"],
                         "steps_planned": res.report["training"]["steps_planned"], "test_photos": int(len(sel)),
                         "mode": res.report["recipe"]["mode"],
                         "replay": (res.report["recipe"]["replay_data"] or {}).get("dataset"),
                         "accuracy": round(acc, 4)})
        if per_class == "all" and DATA.joinpath("ferplus").is_dir():
            ferplus_after.append(ferplus_split(res.path, forgetting))
        log(f"  {domain} {model} {per_class}/class {recipe_name} fold {f}: {acc:.4f} ({seconds[-1]} s)")
    out = {"adapted": pooled(labels, pred_adapted, groups), "base": pooled(labels, pred_base, groups),
           "folds": per_fold, "seconds_per_adapt": seconds, "no_face": int((~ok).sum())}
    if ferplus_after:
        f = f"ferplus_{forgetting}"
        base_acc, base_mca = ferplus_split(model, forgetting)
        out[f + "_after"] = [a for a, _ in ferplus_after]
        out[f + "_after_mean"] = round(float(np.mean([a for a, _ in ferplus_after])), 4)
        out[f + "_base"] = base_acc
        out[f + "_mean_class_accuracy_after_mean"] = round(float(np.mean([m for _, m in ferplus_after])), 4)
        out[f + "_mean_class_accuracy_base"] = base_mca
    return out


def timing(model: str, n: int, work: Path) -> dict:
    """`ferlab adapt` on n photos in a fresh process with an empty cache: the front end included."""
    paths, labels, groups = read_domain("twperformers")
    idx = np.random.RandomState(0).choice(len(paths), size=min(n, len(paths)), replace=False)
    data = write_csv(work / "timing.csv", paths, labels, groups, np.sort(idx))
    env = {**os.environ, "FERLAB_CACHE": str(work / "cold_cache")}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "ferlab.cli", "adapt", model, "--photos", str(data), "--out",
                        str(work / "timing_out"), "--quiet"], capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if p.returncode:
        raise SystemExit(p.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rep = json.loads((work / "timing_out" / "report.json").read_text())
    return {"model": model, "photos": int(len(idx)), "wall_s": round(wall, 1), "peak_rss_mb_largest_process": round(peak),
            "cpus": os.cpu_count(), "steps_run": rep["training"]["steps_run"], "stdout": p.stdout.strip().splitlines()}


def record(key: str, value: dict) -> None:
    from ferlab.engine.profiling import git_commit, machine_info, now_utc
    rec = json.loads(OUT.read_text()) if OUT.is_file() else {}
    value.update({"command": "python benchmarks/adapt.py " + " ".join(sys.argv[1:]), "date": now_utc(),
                  "git_commit": git_commit(), "machine": machine_info()})
    rec[key] = value
    OUT.write_text(json.dumps(rec, indent=2) + "\n")


TABLE_HEAD = ("| faces | model | recipe | base | 5 per class | 20 per class | all | FER+ test, base → after (mean class accuracy) |\n"
              "|---|---|---|---|---|---|---|---|")
# the recipes compared: what was forgotten is measured on FER+ valid (the choice is made there), or,
# in rows recorded before that, on FER+ test
RECIPES_HEAD = ("| faces | model | recipe | base | 5 per class | 20 per class | all | FER+ valid, base → after (mean class accuracy) | FER+ test, base → after (mean class accuracy) |\n"
                "|---|---|---|---|---|---|---|---|---|")


def _forgetting(allc: dict, split: str) -> str:
    f = f"ferplus_{split}"
    if f + "_after_mean" not in allc:
        return "–"
    out = f"{allc[f + '_base']:.2%} → {allc[f + '_after_mean']:.2%}"
    if f + "_mean_class_accuracy_after_mean" in allc:
        out += (f" ({allc[f + '_mean_class_accuracy_base']:.1%} → "
                f"{allc[f + '_mean_class_accuracy_after_mean']:.1%})")
    return out


def table_rows(rec: dict, kind: str = "adapt") -> list[str]:
    """The published tables from the record (kind "adapt": the recipe users get; "recipes": the
    recipes compared): per domain and model, the base and the adapted model on unseen people (pooled
    accuracy with its 95 % interval) at each size, FER+ before and after adapting on all (test for
    the users' recipe; valid, where the recipes are chosen, for the comparison)."""
    out = []
    for key, r in sorted(rec.items()):
        if not key.startswith(kind + "_"):
            continue
        cells = []
        for size in ("5", "20", "all"):
            c = r["by_size"].get(size)
            if c is None:
                cells.append("–")
                continue
            lo, hi = c["adapted"]["bootstrap"]["accuracy_95"]
            cells.append(f"{c['adapted']['accuracy']:.1%} [{lo:.1%}, {hi:.1%}]")
        allc = r["by_size"].get("all", {})
        base = next(iter(r["by_size"].values()))["base"]["accuracy"]
        fer = (_forgetting(allc, "test") if kind == "adapt"
               else f"{_forgetting(allc, 'valid')} | {_forgetting(allc, 'test')}")
        out.append(f"| {DOMAIN_NAMES.get(r['domain'], r['domain'])} | `{r['model']}` | {r['recipe']} | {base:.1%} | {' | '.join(cells)} | {fer} |")
    return out


def _between(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    i, j = text.index(start) + len(start), text.index(end)
    return text[:i] + "\n" + body + "\n" + text[j:]


def publish(rec: dict) -> None:
    """docs/adapt.md's and the README's tables (and the timing) from the record."""
    doc, readme = ROOT / "docs" / "adapt.md", ROOT / "README.md"
    users = "\n".join([TABLE_HEAD, *table_rows(rec, "adapt")])
    d = _between(doc.read_text(), "adapt-table", users)
    d = _between(d, "recipes-table", "\n".join([RECIPES_HEAD, *table_rows(rec, "recipes")]))
    t = rec.get("timing_fast_1000")
    if t:
        i = d.index("<!-- adapt-timing -->")
        j = d.index(" on 2 CPU cores", i)
        d = d[:i] + f"<!-- adapt-timing --> {t['wall_s']} s, peak memory {t['peak_rss_mb_largest_process']} MB" + d[j:]
    doc.write_text(d)
    readme.write_text(_between(readme.read_text(), "adapt-table", users))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", default="twperformers", choices=list(DOMAINS))
    ap.add_argument("--models", nargs="+", default=["default", "fast"])
    ap.add_argument("--sizes", nargs="+", default=["5", "20", "all"])
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--recipes", action="store_true", help="compare the recipes of RECIPES on the first model")
    ap.add_argument("--only", nargs="+", default=None, help="with --recipes: only these recipes")
    ap.add_argument("--timing", action="store_true", help="time `ferlab adapt` on 1,000 photos, cold cache")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--table", action="store_true", help="print the recorded tables (markdown) and stop")
    ap.add_argument("--publish", action="store_true",
                    help="write the recorded tables into docs/adapt.md and the README (between their markers) and stop")
    a = ap.parse_args(argv)
    if a.publish:
        publish(json.loads(OUT.read_text()))
        return
    if a.table:
        rec = json.loads(OUT.read_text())
        for kind, head in (("adapt", TABLE_HEAD), ("recipes", RECIPES_HEAD)):
            print("\n".join([head, *table_rows(rec, kind)]) + "\n")
        for key in sorted(k for k in rec if k.startswith("timing_")):
            t = rec[key]
            print(f"timing: `{t['model']}` on {t['photos']} photos: {t['wall_s']} s, peak {t['peak_rss_mb_largest_process']} MB")
        return
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if a.timing:
            for m in a.models:
                record(f"timing_{m}_1000", timing(m, 1000, work))
            return
        names = (a.only or list(RECIPES)) if a.recipes else ["auto"]
        for m in (a.models[:1] if a.recipes else a.models):
            for r in names:
                key = f"{'recipes' if a.recipes else 'adapt'}_{a.domain}_{m}_{r}"
                res = {"domain": a.domain, "model": m, "recipe": r, "folds": a.folds, "by_size": {}}
                for size in a.sizes:
                    res["by_size"][size] = cell(a.domain, m, size, a.folds, r, work, print,
                                              forgetting="valid" if a.recipes else "test")
                    a_ = res["by_size"][size]
                    print(f"{key} {size}/class: adapted {a_['adapted']['accuracy']:.4f} base {a_['base']['accuracy']:.4f}"
                          + "".join(f" FER+ {sp} {a_[f'ferplus_{sp}_after_mean']:.4f} (base {a_[f'ferplus_{sp}_base']:.4f})"
                                    for sp in ("valid", "test") if f"ferplus_{sp}_after_mean" in a_))
                    record(key, dict(res))


if __name__ == "__main__":
    main()

