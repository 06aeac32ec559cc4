"""Every accuracy the README publishes comes from a committed record in benchmarks/results/."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = (ROOT / "README.md").read_text()


def results_table_rows() -> dict[str, list[str]]:
    """The README's FER+ results table: record name -> the row's cells."""
    start = README.index("| model | test acc |")
    rows = {}
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        label = cells[0]
        name = "resnet18_8ep" if label.startswith("resnet18 with its recipe for 8 epochs") else label.split()[0]
        rows[name] = cells
    return rows


def test_results_table_matches_records():
    rows = results_table_rows()
    records = {p.name[: -len("_ferplus.json")] for p in RESULTS.glob("*_ferplus.json")} - {"landmarks"}
    assert set(rows) == records, "every recorded model has one README row and every row a record"
    for name, cells in rows.items():
        rec = json.loads((RESULTS / f"{name}_ferplus.json").read_text())
        want = [f"{rec['test']['accuracy']:.2%}", f"{rec['test_without_duplicates']['accuracy']:.2%}",
                f"{rec['test']['mean_class_accuracy']:.2%}", f"{rec['test']['macro_f1']:.3f}"]
        assert cells[1:5] == want, f"README row {name!r} does not match benchmarks/results/{name}_ferplus.json"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*_ablations.json")), ids=lambda p: p.stem)
def test_every_ablation_row_is_published_as_recorded(path):
    rows = json.loads(path.read_text())["rows"]
    assert rows
    for name, r in rows.items():
        cells = (f"{r['valid_accuracy']:.2%} | {r['test_accuracy']:.2%} | "
                 f"{r['test_accuracy_without_duplicates']:.2%}")
        assert cells in README, f"{path.name} row {name!r}: valid / test / dedup {cells} not in the README"


def test_convcut_default_cut_is_the_recorded_best():
    """The model's docstring justifies its default cut by the cut-point rows: keep that true."""
    from ferlab.models.convcut import __doc__ as doc
    rows = json.loads((RESULTS / "convcut_ablations.json").read_text())["rows"]
    cuts = {"cut_stage1": (1, 0), "de_sa": (2, 0), "cut_stage2_plus9": (2, 9), "cut_stage3": (3, 0)}
    assert set(cuts) <= set(rows), "all four cut-point rows are recorded"
    best = max(cuts, key=lambda k: rows[k]["valid_accuracy"])
    cfg = (ROOT / "configs" / "convcut_ferplus_cpu.yaml").read_text()
    stages, blocks = (int(x) for x in re.search(r"stages: (\d+), blocks: (\d+)", cfg).groups())
    assert cuts[best] == (stages, blocks)
    for k in cuts:  # the docstring's table row: valid and test accuracy as recorded
        r = rows[k]
        cells = f"{r['valid_accuracy']:.1%}  {r['test_accuracy']:.1%}".replace("%", " %")
        assert cells in doc, f"convcut docstring: row {k} should read {cells}"


def test_printed_ablation_tables_name_each_tables_paper_dataset():
    """Conv-cut's Table 3 quotes the paper's RAF-DB numbers, its Table 2 FERPlus: the header says which."""
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("ablations", ROOT / "benchmarks" / "ablations.py")
    ablations = importlib.util.module_from_spec(spec)
    sys.modules["ablations"] = ablations
    spec.loader.exec_module(ablations)
    study = ablations.STUDIES["convcut"]
    rows = json.loads((RESULTS / "convcut_ablations.json").read_text())["rows"]
    text = ablations.markdown_tables(study, rows)
    t2, t3 = text.split("\nTable 3")[0].split("\nTable 2")[1], text.split("\nTable 3")[1].split("\nTable (")[0]
    assert "paper (FERPlus)" in t2 and "paper (RAF-DB)" in t3 and "FERPlus" not in t3.split("\n", 2)[1]
