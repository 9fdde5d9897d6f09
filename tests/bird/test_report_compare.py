"""Several runs side by side: report.write_comparison / --compare and the best-run column."""

import csv
import json
import os

import pytest

from paddlemix.bird.metrics.keys import vg_metric_names
from paddlemix.bird.metrics.report import (
    best_runs,
    comparison_table,
    load_run,
    per_modality_comparison,
    write_comparison,
)
from paddlemix.cli import run
from paddlemix.tools.report import main

VG_KEYS = vg_metric_names()  # Recall@0.5 first, parse_failure_rate last


def metrics(task, macro, micro=None, n=4):
    micro = micro if micro is not None else macro
    return {"task": task, "n": n, "per_modality": {"ct": {"n": n, **macro}}, "macro": macro, "micro": micro}


def write_run(run_dir, *all_metrics):
    os.makedirs(run_dir, exist_ok=True)
    for m in all_metrics:
        with open(os.path.join(run_dir, f"metrics_{m['task']}.json"), "w") as handle:
            json.dump(m, handle)
    return str(run_dir)


def vg(recall, failures):
    return metrics("VG", dict({k: recall / 2 for k in VG_KEYS}, **{"Recall@0.5": recall, "parse_failure_rate": failures}))


def ro(accuracy, micro=None):
    return metrics("RO", {"accuracy": accuracy, "exact_match": accuracy},
                   None if micro is None else {"accuracy": micro, "exact_match": micro})


@pytest.fixture
def runs(tmp_path):
    return [
        ("trained", write_run(tmp_path / "t", vg(0.5, 0.0), ro(0.75, micro=0.6))),
        ("untrained", write_run(tmp_path / "u", vg(0.0, 1.0), ro(0.0))),
        ("baseline", write_run(tmp_path / "b", vg(0.25, 0.0))),
    ]


def test_best_runs_direction_ties_and_missing():
    assert best_runs("Recall@0.5", {"a": 0.2, "b": 0.5, "c": None}) == ["b"]
    assert best_runs("parse_failure_rate", {"a": 0.0, "b": 1.0, "c": 0.0}) == ["a", "c"]
    assert best_runs("accuracy", {"a": 0.3, "b": None}) == []  # one value is no comparison


def test_comparison_table_columns_rows_and_gaps(runs):
    loaded = [(name, load_run(d)) for name, d in runs]
    header, rows = comparison_table(loaded, "macro")
    assert header == ["task", "metric", "trained", "untrained", "baseline", "best"]
    assert [r[:2] for r in rows] == [["VG", k] for k in VG_KEYS] + [["RO", "accuracy"], ["RO", "exact_match"]]
    assert rows[0] == ["VG", "Recall@0.5", 0.5, 0.0, 0.25, "trained"]
    last = len(VG_KEYS) - 1
    assert rows[last] == ["VG", "parse_failure_rate", 0.0, 1.0, 0.0, "trained, baseline"]
    assert rows[last + 1] == ["RO", "accuracy", 0.75, 0.0, None, "trained"]  # the baseline has no RO here
    _, micro_rows = comparison_table(loaded, "micro")
    assert micro_rows[last + 1][2] == 0.6


def test_write_comparison_markdown_and_csv(runs, tmp_path):
    md_path, csv_path = write_comparison(runs, str(tmp_path / "report"), notes=["loss curve: `loss.png`"])
    md = open(md_path).read()
    assert "| task | metric | trained | untrained | baseline | best |" in md
    assert "| VG | Recall@0.5 | 0.5000 | 0.0000 | 0.2500 | trained |" in md
    assert "| RO | accuracy | 0.7500 | 0.0000 |  | trained |" in md
    assert "## macro" in md and "## micro" in md and md.rstrip().endswith("loss curve: `loss.png`")
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["average", "task", "metric", "trained", "untrained", "baseline", "best"]
    assert rows[1] == ["macro", "VG", "Recall@0.5", "0.5", "0.0", "0.25", "trained"]
    assert ["micro", "RO", "accuracy", "0.6", "0.0", "", "trained"] in rows


def test_cli_compare_and_errors(runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert run(main, ["--out_dir", str(out), "--compare"] + [f"{n}={d}" for n, d in runs] + ["--note", "hello"]) == 0
    assert (out / "summary.md").read_text().rstrip().endswith("hello")
    assert run(main, ["--out_dir", str(out), "--compare", f"a={tmp_path / 'nothing'}"]) == 2
    assert "no metrics_<TASK>.json files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(main, ["--out_dir", str(out)])  # neither metrics files nor --compare
    with pytest.raises(SystemExit):
        run(main, ["--out_dir", str(out), "--compare", "no-equals-sign"])


def test_duplicate_run_names_are_refused(runs, tmp_path):
    with pytest.raises(ValueError, match="run names must differ"):
        write_comparison([runs[0], ("trained", runs[1][1])], str(tmp_path / "dup"))


def test_per_modality_comparison_of_the_headline_scores(tmp_path):
    two = {"task": "VG", "n": 6, "macro": {}, "micro": {},
           "per_modality": {"mr": {"n": 4, "Recall@0.5": 0.5}, "ct": {"n": 2, "Recall@0.5": 1.0}}}
    shuffled = {"task": "VG", "n": 6, "macro": {}, "micro": {},
                "per_modality": {"mr": {"n": 4, "Recall@0.5": 0.25}, "ct": {"n": 2, "Recall@0.5": 1.0}}}
    runs = [("trained", write_run(tmp_path / "t", two, ro(0.75))), ("shuffled", write_run(tmp_path / "s", shuffled))]
    header, rows = per_modality_comparison([(name, load_run(d)) for name, d in runs])
    assert header == ["task metric", "modality", "trained", "shuffled", "best"]
    assert rows == [
        ["VG Recall@0.5", "ct", 1.0, 1.0, "trained, shuffled"],
        ["VG Recall@0.5", "mr", 0.5, 0.25, "trained"],
        ["RO accuracy", "ct", 0.75, None, ""],
    ]
    md = open(write_comparison(runs, str(tmp_path / "report"))[0]).read()
    assert "## per modality" in md and "| VG Recall@0.5 | mr | 0.5000 | 0.2500 | trained |" in md


def test_per_modality_comparison_follows_the_files_iou_threshold(tmp_path):
    scored_at_03 = {"task": "VG", "n": 2, "macro": {}, "micro": {}, "iou_threshold": 0.3,
                    "per_modality": {"ct": {"n": 2, "Recall@0.3": 0.5}}}
    blind = dict(scored_at_03, per_modality={"ct": {"n": 2, "Recall@0.3": 0.0}})
    runs = [("trained", write_run(tmp_path / "t", scored_at_03)), ("baseline", write_run(tmp_path / "b", blind))]
    header, rows = per_modality_comparison([(name, load_run(d)) for name, d in runs])
    assert rows == [["VG Recall@0.3", "ct", 0.5, 0.0, "trained"]]
