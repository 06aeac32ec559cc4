"""benchmarks/ablations.py: rows rebuilt from a device run's log, bad arguments refused with a
message, and the printed tables."""
import json
import sys

import pytest
from conftest import ROOT, load_script

ablations = load_script("benchmarks/ablations.py")


def test_ablation_rows_are_rebuilt_from_a_device_runs_log(tmp_path):
    """--from-log: the rows a run printed (`NAME {json}`) are read back, the last print of a row
    wins, other lines are ignored; a log without rows, a cut-off row or no file is refused."""
    study = ablations.STUDIES["pcda"]
    log = tmp_path / "log.txt"
    log.write_text("\n".join([
        "== 18:16:41 ablations: python3 benchmarks/ablations.py pcda",
        "epoch 1/3 loss 0.85 valid_acc 0.79 (4s) *",
        'none {"test_accuracy": 0.5}',
        'notarow {"test_accuracy": 0.1}',
        'none {"test_accuracy": 0.7876}',
        'full_max {"test_accuracy": 0.7908}']) + "\n")
    rows = ablations.rows_from_log(log, study)
    assert rows == {"none": {"test_accuracy": 0.7876}, "full_max": {"test_accuracy": 0.7908}}
    log.write_text("epoch 1/3 loss 0.85\n")
    with pytest.raises(SystemExit, match="no rows"):
        ablations.rows_from_log(log, study)
    log.write_text('none {"test_accuracy": 0.78\n')
    with pytest.raises(SystemExit, match=r"log.txt:1: row none is not complete JSON"):
        ablations.rows_from_log(log, study)
    with pytest.raises(SystemExit, match="no such file"):
        ablations.rows_from_log(tmp_path / "missing.txt", study)


def test_an_unknown_only_row_is_refused_before_anything_is_written(monkeypatch):
    record = ROOT / "benchmarks" / "results" / "convcut_ablations.json"
    before = record.read_bytes()
    monkeypatch.setattr(sys, "argv", ["ablations.py", "convcut", "--only", "cut_stage1", "cut_stage_3"])
    with pytest.raises(SystemExit, match="--only: cut_stage_3: no such row of the convcut study"):
        ablations.main()
    assert record.read_bytes() == before


def test_printed_ablation_tables_name_each_tables_paper_dataset():
    """Conv-cut's Table 3 quotes the paper's RAF-DB numbers, its Table 2 FERPlus: the header says which."""
    rows = json.loads((ROOT / "benchmarks" / "results" / "convcut_ablations.json").read_text())["rows"]
    text = ablations.markdown_tables(ablations.STUDIES["convcut"], rows)
    tables = {t.split("\n", 1)[0]: t for t in text.split("\nTable ")[1:]}
    headers = {title.split(" ", 1)[0]: t.split("\n")[1] for title, t in tables.items()}
    assert "paper (FERPlus)" in headers["2"] and "paper (RAF-DB)" in headers["3"]
    assert "| two | 2.31 M | 0.44 | 52.65% | 51.59% | 51.97% | 95.7% |" in tables[next(t for t in tables if t.startswith("3"))]
