"""Ablations of a paper's model on FER+, the paper's tables scaled to FER+ and a reduced budget.

    .venv/bin/python benchmarks/ablations.py rasa [--subset N] [--epochs E]
    .venv/bin/python benchmarks/ablations.py dan  [--subset N] [--epochs E]   (--subset 0: the full train set)
    .venv/bin/python benchmarks/ablations.py swin_se [--subset N] [--epochs E]

Every row trains the model's FER+ CPU recipe (configs/<model>_ferplus_cpu.yaml) with one change, on
the same fixed training subset (seeded) for the same number of epochs; the best epoch is chosen on
FER2013Valid and that model is evaluated once on FER2013Test. An interrupted run resumes from its
checkpoints. Results: benchmarks/results/<model>_ablations.json (rows, budget, command, machine).

RASA (paper 000; its tables are on CAER-S): the paper's 256x256 input / 32x32 patches become 96x96 /
12x12 here (the same 1/8 ratio), so its patch sizes 8/16/32/64 map to 3/6/12/24.
  Table I   grid vs adaptive patches (grid: 8x8 = 64 grid patches of 12x12, + the global patch)
  Table II  patch size 3 / 6 / 12 / 24 (adaptive, 52 patches)
  Table III 51 (no global patch) / 52 (+ global) / 69 (all 68 landmarks incl. jaw + global)
  and, not in the paper, two changes we tried to close the gap to the CNN baseline, and that
  baseline (ResNet-18, its own recipe) on the same subset and epochs.
DAN (paper 001; its ablations are on RAF-DB):
  Fig. 5    1 / 2 / 4 / 8 cross attention heads
  Table 1   FCN loss: none / center loss / affinity loss
  Table 2   AFN loss: without / with the partition loss
Swin-SE (paper 002; its Table 2 is on AffectNet, 7 classes, after hybrid training):
  Table 2   Swin-T / Swin-T + SE / Swin-T + SE + SAM (SAM makes two passes per step: the same
            epochs cost it about twice the time); and, not in the paper, the ResNet-18 baseline at the
            same epochs and Swin-T + SE without SAM for twice the epochs (SAM's compute)
PCDA (paper 003; its ablations are on RAF-DB; rows train on the cached features of the main FER+
run's frozen backbones, ferlab.engine.head_training: flips are the only augmentation):
  Table 1   the 8 on/off rows of dot-product attention, cross attention, NeAA loss
  Table 3   neutral recall and F1 without / with NeAA (Table 1 rows 5 and 8)
  Table 4   heatmap from the landmark features: Conv / Sum+Repeat / Abs+Sum+Repeat / Max+Repeat
Conv-cut (paper 004):
  Table 2   self-attention and Detail Extraction on/off (paper on FERPlus)
  Table 3   one / two / three separable convs in Detail Extraction (paper on RAF-DB)
  and where to cut ConvNeXt-Base (params, FLOPs, accuracy per cut point; not in the paper)
"""
import argparse
import json
import time
from pathlib import Path

from ferlab.data.cache import atomic_write_bytes
from ferlab.engine.config import load_config
from ferlab.engine.head_training import train_head
from ferlab.engine.profiling import git_commit, machine_info, now_utc
from ferlab.engine.train import train

ROOT = Path(__file__).resolve().parents[1]

STUDIES = {
    "rasa": {
        "subset": 6000, "epochs": 5, "paper_dataset": "CAER-S",
        "rows": {  # name -> (overrides of the FER+ recipe, the paper's accuracy for that row)
            "adaptive_p12_52": ([], 0.758),
            "grid_p12": (["model.name=rasa_grid", "model.kwargs.patch_mode=grid"], 0.605),
            "adaptive_p3": (["model.kwargs.patch_size=3"], 0.663),
            "adaptive_p6": (["model.kwargs.patch_size=6"], 0.691),
            "adaptive_p24": (["model.kwargs.patch_size=24"], 0.755),
            "adaptive_51_no_global": (["model.kwargs.global_patch=false"], 0.706),
            "adaptive_69_all": (["model.kwargs.landmark_set=all"], 0.757),
            "tried_cross_entropy": (["loss={name: cross_entropy}"], None),
            "tried_adamw_cosine": (["optim.name=adamw", "optim.weight_decay=0.05", "schedule.name=cosine"], None),
            # the CNN baseline on the same images and epochs (its own recipe otherwise)
            "baseline_resnet18": (["data.label_mode=majority"], None, "resnet18_ferplus_cpu"),
        },
        "tables": {
            "I (patch extraction)": [("Grid", "grid_p12"), ("Adaptive", "adaptive_p12_52")],
            "II (patch size; paper 8/16/32/64 at 256 px)": [
                ("3x3", "adaptive_p3"), ("6x6", "adaptive_p6"), ("12x12", "adaptive_p12_52"), ("24x24", "adaptive_p24")],
            "III (number of patches)": [("51 (w/o global)", "adaptive_51_no_global"), ("52 (w global)", "adaptive_p12_52"),
                                        ("69 (w global)", "adaptive_69_all")],
            "(not in the paper) changes tried on top of the faithful model": [
                ("faithful (BCE, full-width heads, Adam, step)", "adaptive_p12_52"),
                ("cross-entropy loss", "tried_cross_entropy"),
                ("AdamW wd 0.05 + cosine schedule", "tried_adamw_cosine"),
                ("ResNet-18 baseline, same subset and epochs", "baseline_resnet18")],
        },
    },
    "dan": {
        # from scratch, 6000 images x 5 epochs leave DAN (and ResNet-18) predicting neutral for every
        # face (valid 37 %): the full train set for 6 epochs (one-cycle compressed) is the smallest
        # budget we found where the rows learn
        "subset": 0, "epochs": 6, "paper_dataset": "RAF-DB",
        "rows": {
            "heads4_affinity_partition": ([], 0.8970),
            "heads1": (["model.kwargs.num_heads=1"], None),
            "heads2": (["model.kwargs.num_heads=2"], None),
            "heads8": (["model.kwargs.num_heads=8"], None),
            "no_feature_loss": (["loss.feature_loss=none"], 0.8817),
            "center_loss": (["loss.feature_loss=center"], 0.8891),
            "no_partition": (["loss.partition=false"], 0.8820),
        },
        "tables": {
            "Fig. 5 (number of heads; the paper gives a plot only)": [
                ("1", "heads1"), ("2", "heads2"), ("4", "heads4_affinity_partition"), ("8", "heads8")],
            "1 (FCN loss)": [("-", "no_feature_loss"), ("center loss", "center_loss"),
                             ("affinity loss", "heads4_affinity_partition")],
            "2 (AFN loss)": [("-", "no_partition"), ("partition loss", "heads4_affinity_partition")],
        },
    },
    "swin_se": {
        # from scratch the 6000-image subset leaves every row at the neutral-only plateau, as for DAN;
        # the recipe's own budget (the full train set, 7 epochs): the Swin-T + SE + SAM row is the main run
        "subset": 0, "epochs": 7, "paper_dataset": "AffectNet",
        "rows": {
            "swin_t": (["model.name=swin_t", "optim.sam=null"], 0.4921),
            "swin_se": (["optim.sam=null"], 0.5104),
            "swin_se_sam": ([], 0.5310),
            # the CNN baseline at the same epochs (its own recipe otherwise)
            "baseline_resnet18": ([], None, "resnet18_ferplus_cpu"),
            # SAM's two passes make an epoch cost two: without SAM, twice the epochs at the same compute
            "swin_se_14ep": (["optim.sam=null", "schedule.epochs=14"], None),
        },
        "tables": {"2 (SE and SAM)": [("Swin-T", "swin_t"), ("Swin-T + SE", "swin_se"),
                                      ("Swin-T + SE + SAM", "swin_se_sam")],
                   "(not in the paper) the CNN baseline, same epochs": [
                       ("Swin-T + SE + SAM", "swin_se_sam"), ("ResNet-18 baseline (its recipe, 7 epochs)", "baseline_resnet18")],
                   "(not in the paper) SAM against more epochs at the same compute": [
                       ("Swin-T + SE + SAM, 7 epochs", "swin_se_sam"), ("Swin-T + SE, 14 epochs", "swin_se_14ep")]},
        # the paper's Table 2 also gives weighted precision / recall / F1 (AffectNet, 7 classes)
        "weighted": [("Swin-T", "swin_t", (0.5090, 0.5000, 0.4943)), ("Swin-T + SE", "swin_se", (0.5470, 0.5225, 0.5169)),
                     ("Swin-T + SE + SAM", "swin_se_sam", (0.5485, 0.5410, 0.5420))],
    },
    "pcda": {
        # every row changes only the attention module or the loss: the backbones are fixed at the main
        # FER+ run's (its IR-50, the frozen landmark net), their features cached once (face + mirror
        # image), and each row trains its attention module and classifier from scratch on them
        "subset": 0, "epochs": 3, "paper_dataset": "RAF-DB",
        "head_training": "runs/pcda_ferplus_cpu/best.safetensors",
        "rows": {
            "none": (["model.kwargs.dot_attention=false", "model.kwargs.cross_attention=false", "loss.weight=0"], 0.9130),
            "dot": (["model.kwargs.cross_attention=false", "loss.weight=0"], 0.9142),
            "cross": (["model.kwargs.dot_attention=false", "loss.weight=0"], 0.9149),
            "neaa": (["model.kwargs.dot_attention=false", "model.kwargs.cross_attention=false"], 0.9165),
            "dot_cross": (["loss.weight=0"], 0.9179),
            "cross_neaa": (["model.kwargs.dot_attention=false"], 0.9167),
            "dot_neaa": (["model.kwargs.cross_attention=false"], 0.9195),
            "full_max": ([], 0.9231),
            "heatmap_conv": (["model.kwargs.heatmap=conv"], 0.9146),
            "heatmap_sum": (["model.kwargs.heatmap=sum"], 0.9172),
            "heatmap_abs_sum": (["model.kwargs.heatmap=abs_sum"], 0.9159),
        },
        "tables": {
            "1 (dot-product attention, cross attention, NeAA)": [
                ("- / - / -", "none"), ("dot / - / -", "dot"), ("- / cross / -", "cross"), ("- / - / NeAA", "neaa"),
                ("dot / cross / -", "dot_cross"), ("- / cross / NeAA", "cross_neaa"), ("dot / - / NeAA", "dot_neaa"),
                ("dot / cross / NeAA", "full_max")],
            "4 (heatmap from the landmark features)": [
                ("Conv", "heatmap_conv"), ("Sum+Repeat", "heatmap_sum"), ("Abs+Sum+Repeat", "heatmap_abs_sum"),
                ("Max+Repeat", "full_max")],
        },
        # paper Table 3: neutral recall / F1 without and with NeAA (its rows 5 and 8)
        "neutral": [("without NeAA", "dot_cross", (0.8971, 0.9050)), ("with NeAA", "full_max", (0.9397, 0.9116))],
    },
    "convcut": {
        # 2 epochs of the full train set for every row (the recipe itself has 20): 4-6 min an epoch on a
        # 2-core Intel Xeon for the default cut, 9.4 and 14.8 min for the two deeper cuts (2.4x, 5.2x its FLOPs)
        "subset": 0, "epochs": 2, "paper_dataset": "FERPlus",
        "rows": {
            "de_sa": ([], 0.9569),
            "no_de_no_sa": (["model.kwargs.detail_extraction=false", "model.kwargs.self_attention=false"], 0.7571),
            "sa_only": (["model.kwargs.detail_extraction=false"], 0.7831),
            "de_only": (["model.kwargs.self_attention=false"], 0.8246),
            "de_1_layer": (["model.kwargs.de_layers=1"], 0.9286),
            "de_3_layers": (["model.kwargs.de_layers=3"], 0.9524),
            "baseline_resnet18": ([], None, "resnet18_ferplus_cpu"),
            "cut_stage1": (["model.kwargs.stages=1"], None),
            "cut_stage2_plus9": (["model.kwargs.stages=2", "model.kwargs.blocks=9"], None),
            "cut_stage3": (["model.kwargs.stages=3"], None),
        },
        "tables": {
            "2 (self-attention, Detail Extraction; paper rows on FERPlus)": [
                ("- / -", "no_de_no_sa"), ("SA / -", "sa_only"), ("- / DE", "de_only"), ("SA / DE", "de_sa")],
            # a table may quote another dataset's paper numbers than the study's: {paper_dataset, rows}
            "3 (separable conv layers in Detail Extraction; paper on RAF-DB)": {"paper_dataset": "RAF-DB", "rows": [
                ("one", "de_1_layer"), ("two", "de_sa"), ("three", "de_3_layers")]},
            "(where to cut ConvNeXt-Base; not in the paper)": [
                ("after stage 1", "cut_stage1"), ("after stage 2 (default)", "de_sa"),
                ("stage 2 + 9 blocks of stage 3", "cut_stage2_plus9"), ("after stage 3", "cut_stage3")],
            "(the baseline at the same budget; not in the paper)": [
                ("Conv-cut (after stage 2, DE + SA)", "de_sa"), ("ResNet-18, its own recipe", "baseline_resnet18")],
        },
    },
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=sorted(STUDIES))
    ap.add_argument("--subset", type=int, default=None, help="fixed training subset size; 0 = the full train set")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--from-log", default=None, metavar="LOG",
                    help="train nothing: rebuild the results file from the rows this script printed to LOG "
                         "(a run on a lent GPU machine whose results file did not come back)")
    a = ap.parse_args()
    study = STUDIES[a.model]
    subset = study["subset"] if a.subset is None else a.subset
    epochs = a.epochs or study["epochs"]
    out_root = Path(a.out or f"runs/{a.model}_ablations/{'subset' + str(subset) if subset else 'full'}_{epochs}ep")
    res_path = ROOT / "benchmarks" / "results" / f"{a.model}_ablations.json"
    head = study.get("head_training")
    unknown = sorted(set(a.only or []) - set(study["rows"]))
    if unknown:  # a typo would train nothing and still rewrite the record's date and commit
        raise SystemExit(f"--only: {', '.join(unknown)}: no such row of the {a.model} study "
                         f"(rows: {', '.join(study['rows'])})")
    if a.from_log:
        return write_results(a, study, subset, epochs, rows_from_log(Path(a.from_log), study), res_path, head)
    if head and not (ROOT / head).is_file():
        raise SystemExit(f"{head}: the {a.model} ablation trains on this run's frozen backbones; train it first "
                         f"(configs/{a.model}_ferplus_cpu.yaml)")
    rows = {}
    for name, (ovr, paper, *base) in study["rows"].items():
        if a.only and name not in a.only:
            continue
        recipe = ROOT / "configs" / f"{base[0] if base else a.model + '_ferplus_cpu'}.yaml"
        # the unchanged row at the recipe's own budget is the main run: trained once, not twice
        own = load_config(recipe)
        main_run = own["train"]["out_dir"] if (
            not ovr and not base and not subset and not head and epochs == int(own["schedule"]["epochs"])) else None
        # the row's own overrides come last: a row may change the budget (a same-compute row), said in its label
        cfg = load_config(recipe,
                          ([f"data.train_subset={subset}"] if subset else []) + [f"schedule.epochs={epochs}",
                                 f"train.out_dir={main_run or out_root / name}", "train.progress=false"] + ovr +
                          ([f"head_training.backbone_file={ROOT / head}",
                            f"head_training.cache_file={out_root / 'backbone_features.pt'}"] if head else []))
        t0 = time.time()
        r = train_head(cfg, resume=True) if head else train(cfg, resume=True)
        hist, test = r["history"], r["test"]
        rows[name] = {"config": cfg["model"]["name"], "overrides": ovr, "run": str(cfg["train"]["out_dir"]), "best_epoch": r["best_epoch"] + 1, "valid_accuracy": r["best_valid_accuracy"],
                      "test_accuracy": test["accuracy"], "test_mean_class_accuracy": test["mean_class_accuracy"],
                      "test_macro_f1": test["macro_f1"], "test_weighted_f1": test["weighted_f1"],
                      "test_weighted_precision": test["weighted_precision"], "test_weighted_recall": test["weighted_recall"],
                      "test_accuracy_without_duplicates": test["without_duplicate"]["accuracy"],
                      **model_cost(cfg),
                      "test_per_class": {k: {m: v[m] for m in ("recall", "f1")} for k, v in test.get("per_class", {}).items()},
                      "seconds_per_epoch": sum(h["seconds"] for h in hist) / max(len(hist), 1),
                      "wall_seconds_this_call": time.time() - t0, "paper_accuracy": paper,
                      # per row: a study may be run in parts (--only), at different commits
                      "git_commit": git_commit(), "date": now_utc()}
        print(name, json.dumps(rows[name]), flush=True)
        write_results(a, study, subset, epochs, rows, res_path, head, tables=False)  # an interrupted study keeps its rows
    write_results(a, study, subset, epochs, rows, res_path, head)


def rows_from_log(log: Path, study: dict) -> dict:
    """The rows printed as `NAME {json}` lines (the last print of each row wins)."""
    if not log.is_file():
        raise SystemExit(f"{log}: no such file")
    rows = {}
    for n, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
        name, _, rest = line.partition(" ")
        if name in study["rows"] and rest.startswith("{"):
            try:
                rows[name] = json.loads(rest)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{log}:{n}: row {name} is not complete JSON ({e.msg}); a cut-off log?")
    if not rows:
        raise SystemExit(f"{log}: no rows of this study printed there")
    return rows


def write_results(a, study: dict, subset: int, epochs: int, rows: dict, res_path: Path, head, tables=True) -> None:
    budget = ((f"FER+ train subset of {subset} images (seed 0)" if subset else "the full FER+ train set") +
              f", {epochs} epochs, the same for every row; best epoch on FER2013Valid, FER2013Test evaluated once per row")
    if head:
        budget += f"; backbones frozen at {head}, only the attention module and classifier trained, on cached features"
    prev = json.loads(res_path.read_text()) if res_path.is_file() else {}
    old = prev.get("rows", {}) if prev.get("budget") == budget else {}  # never mix rows of two budgets
    old.update(rows)
    result = {"model": a.model, "budget": budget,
              "base_config": f"configs/{a.model}_ferplus_cpu.yaml", "paper_dataset": study["paper_dataset"],
              "command": f"python benchmarks/ablations.py {a.model} --subset {subset} --epochs {epochs}",
              # date and commit of this write; each row names the commit it ran at
              "date": now_utc(), "git_commit": git_commit(), "machine": machine_info(), "rows": old}
    if a.from_log:  # trained elsewhere: say where the rows come from, not this machine
        result.update(machine={"note": f"the machine that wrote {a.from_log} (see its first lines)"},
                      recovered_from_log=a.from_log,
                      command=result["command"] + "  (rows as printed by that run; rebuilt with --from-log)")
    # atomic: the file is rewritten after every row and holds the rows of earlier calls too
    atomic_write_bytes(res_path, (json.dumps(result, indent=2) + "\n").encode())
    if tables:
        print(markdown_tables(study, old))


def model_cost(cfg: dict) -> dict:
    """Parameters and FLOPs (one face) of a row's model, from its config."""
    from ferlab.engine.profiling import count_flops, count_params
    from ferlab.models import create_model
    from ferlab.models.weights import WEIGHT_FILE_KWARGS
    d = cfg["data"]
    kw = {k: v for k, v in cfg["model"].get("kwargs", {}).items() if k not in WEIGHT_FILE_KWARGS}
    m = create_model(cfg["model"]["name"], num_classes=8, in_chans=d["channels"], **kw)
    return {"params": count_params(m), "flops": count_flops(m, (1, d["channels"], d["img_size"], d["img_size"]))}


def markdown_tables(study: dict, rows: dict) -> str:
    lines = []
    for title, table in study["tables"].items():
        table = table if isinstance(table, dict) else {"rows": table}
        items, dataset = table["rows"], table.get("paper_dataset", study["paper_dataset"])
        lines += [f"\nTable {title}", f"| variant | params | GFLOPs | valid acc | test acc | test acc (dedup) | "
                                         f"paper ({dataset}) |", "|---|---|---|---|---|---|---|"]
        for label, key in items:
            if key in rows:
                r, paper = rows[key], rows[key]["paper_accuracy"]
                cost = (f"{r['params'] / 1e6:.2f} M | {r['flops'] / 1e9:.2f} | " if "params" in r else "- | - | ")
                lines.append(f"| {label} | {cost}{r['valid_accuracy']:.2%} | {r['test_accuracy']:.2%} | "
                             f"{r['test_accuracy_without_duplicates']:.2%} | {'-' if paper is None else f'{paper:.1%}'} |")
    if study.get("weighted"):
        lines += ["\nTable 2 (weighted averages over the classes, test)",
                  "| variant | precision | recall | F1 | paper P / R / F1 |", "|---|---|---|---|---|"]
        for label, key, paper in study["weighted"]:
            if key in rows and "test_weighted_precision" in rows[key]:
                r = rows[key]
                lines.append(f"| {label} | {r['test_weighted_precision']:.4f} | {r['test_weighted_recall']:.4f} | "
                             f"{r['test_weighted_f1']:.4f} | {' / '.join(f'{v:.4f}' for v in paper)} |")
    if study.get("neutral"):
        lines += ["\nTable 3 (neutral class, test)", "| variant | neutral recall | neutral F1 | paper recall / F1 |",
                  "|---|---|---|---|"]
        for label, key, (p_rec, p_f1) in study["neutral"]:
            if key in rows and "neutral" in rows[key].get("test_per_class", {}):
                n = rows[key]["test_per_class"]["neutral"]
                lines.append(f"| {label} | {n['recall']:.4f} | {n['f1']:.4f} | {p_rec:.4f} / {p_f1:.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
