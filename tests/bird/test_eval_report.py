"""eval_all.sh and the summary tables: which files are scored, and the shape of summary.csv."""

import csv
import json
import os
import subprocess
import sys

from paddlemix.bird.metrics.keys import vg_metric_names
from paddlemix.bird.metrics.report import summary_table, write_summary
from paddlemix.cli import run
from paddlemix.tools.report import main as report_main

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EVAL_ALL = os.path.join(REPO, "tests", "models", "BiRD", "eval_all.sh")
A = "<box>(0,0),(100,100)</box>"


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def make_predictions(pred_dir):
    os.makedirs(pred_dir, exist_ok=True)
    write_jsonl(
        os.path.join(pred_dir, "pred_VG.jsonl"),
        [
            dict(id=0, image="ct_0.png", question="q", annotation=A, response=A, task="VG"),
            dict(id=1, image="mr_1.png", question="q", annotation=A, response="", task="VG"),
        ],
    )
    write_jsonl(
        os.path.join(pred_dir, "pred_RO.jsonl"),
        [
            dict(id=0, image="ct_0.png", question="q", annotation="liver", response="Liver.", task="RO"),
            dict(id=1, image="x_1.png", question="q", annotation="lung", response="heart", task="RO"),
        ],
    )


def run_eval_all(args, env_extra, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PRED_DIR", "OUT_DIR")}
    env.update({"PYTHON": sys.executable, **env_extra})
    return subprocess.run(["sh", EVAL_ALL] + args, cwd=cwd, env=env, capture_output=True, text=True)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_eval_all_scores_present_files_and_summarises(tmp_path):
    pred_dir, out_dir = tmp_path / "preds", tmp_path / "out"
    make_predictions(str(pred_dir))
    proc = run_eval_all([str(pred_dir), str(out_dir)], {}, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "missing (not scored): pred_GC.jsonl pred_MII.jsonl" in proc.stdout
    assert sorted(os.listdir(out_dir)) == [
        "metrics_RO.json", "metrics_VG.json", "paper_table.json", "paper_table.md", "summary.csv", "summary.md"
    ]
    rows = read_csv(out_dir / "summary.csv")
    assert rows[0] == ["task", "metric", "ct", "mr", "x", "macro"]
    assert [r[:2] for r in rows[1:]] == [["VG", k] for k in vg_metric_names()] + [["RO", "accuracy"], ["RO", "exact_match"]]
    assert rows[1] == ["VG", "Recall@0.5", "1.0", "0.0", "", "0.5"]
    assert rows[2] == ["VG", "match_precision@0.5", "1.0", "0.0", "", "0.5"]  # the precision beside the recall
    assert rows[1 + len(vg_metric_names())] == ["RO", "accuracy", "1.0", "", "0.0", "0.5"]
    md = (out_dir / "summary.md").read_text()
    assert "| task | metric | ct | mr | x | macro |" in md and "| VG | Recall@0.5 | 1.0000 | 0.0000 |  | 0.5000 |" in md


def test_eval_all_reads_directories_from_the_environment(tmp_path):
    pred_dir = tmp_path / "preds"
    make_predictions(str(pred_dir))
    proc = run_eval_all([], {"PRED_DIR": str(pred_dir), "OUT_DIR": str(tmp_path / "o")}, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "summary.csv").exists()
    # OUT_DIR defaults to PRED_DIR.
    proc = run_eval_all([str(pred_dir)], {}, cwd=str(tmp_path))
    assert proc.returncode == 0 and (pred_dir / "metrics_VG.json").exists()


def test_eval_all_reports_usage_and_failures(tmp_path):
    proc = run_eval_all([], {}, cwd=str(tmp_path))
    assert proc.returncode == 2 and "usage" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_eval_all([str(empty)], {}, cwd=str(tmp_path))
    assert proc.returncode == 2 and "nothing scored" in proc.stderr
    pred_dir = tmp_path / "preds"
    make_predictions(str(pred_dir))
    with open(pred_dir / "pred_RO.jsonl", "a") as handle:
        handle.write("{broken\n")
    proc = run_eval_all([str(pred_dir), str(tmp_path / "o")], {}, cwd=str(tmp_path))
    assert proc.returncode == 2
    assert "pred_RO.jsonl:3: not valid JSON" in proc.stderr and "scoring failed for: RO" in proc.stderr
    assert [r[0] for r in read_csv(tmp_path / "o" / "summary.csv")[1:]] == ["VG"] * len(vg_metric_names())  # the rest is still summarised


def test_summary_of_caption_metrics_leaves_null_cells_empty(tmp_path):
    names = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"]
    per = {m: dict({"n": 2}, **{k: (None if k == "SPICE" else 0.25) for k in names}) for m in ("pet", "fundus")}
    gc = {"task": "GC", "n": 4, "per_modality": per, "macro": {k: (None if k == "SPICE" else 0.25) for k in names}, "micro": {}, "spice_unavailable_reason": "no CoreNLP"}
    mii = dict(gc, task="MII", per_modality={"ct": per["pet"]})
    paths = []
    for metrics in (mii, gc):  # given out of order: rows still come VG, RO, GC, MII
        path = tmp_path / f"metrics_{metrics['task']}.json"
        path.write_text(json.dumps(metrics))
        paths.append(str(path))
    header, rows = summary_table([gc, mii])
    assert header == ["task", "metric", "ct", "pet", "fundus", "macro"]
    assert run(report_main, ["--out_dir", str(tmp_path / "s")] + paths) == 0
    table = read_csv(tmp_path / "s" / "summary.csv")
    assert len(table) == 1 + 18 and all(len(r) == 6 for r in table)  # 8 caption metrics + mBMR per task
    assert table[1] == ["GC", "BLEU-1", "", "0.25", "0.25", "0.25"]
    assert table[8] == ["GC", "SPICE", "", "", "", ""]
    assert table[9] == ["GC", "mBMR", "", "", "", ""]  # the fixture has no mBMR values
    assert table[10] == ["MII", "BLEU-1", "0.25", "", "", "0.25"]
    assert "GC SPICE is empty: no CoreNLP" in (tmp_path / "s" / "summary.md").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": "XX"}')
    assert run(report_main, ["--out_dir", str(tmp_path / "s"), str(bad)]) == 2
    md_path, csv_path = write_summary(paths[:1], str(tmp_path / "t"))
    assert os.path.basename(md_path) == "summary.md" and os.path.basename(csv_path) == "summary.csv"


def test_eval_all_exits_1_when_a_scorer_crashes(tmp_path):
    """Exit 1 is a crash, 2 bad input: a scorer that fails without an input error (here an
    interpreter that only exits 1) is not reported as bad input."""
    pred_dir = tmp_path / "preds"
    make_predictions(str(pred_dir))
    crashing = tmp_path / "crashing_python"
    crashing.write_text("#!/bin/sh\nexit 1\n")
    crashing.chmod(0o755)
    proc = run_eval_all([str(pred_dir), str(tmp_path / "o")], {"PYTHON": str(crashing)}, cwd=str(tmp_path))
    assert proc.returncode == 1 and "nothing scored" in proc.stderr
