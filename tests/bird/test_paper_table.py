"""The paper's table: every row, the paper's numbers, differences in %, unavailable metrics explained."""

import json

from paddlemix.tools.paper_table import main


def metrics(task, macro, **extra):
    return dict({"task": task, "n": 10, "per_modality": {"ct": dict(macro, n=10)}, "macro": macro, "micro": macro}, **extra)


def test_fixture_run_prints_every_row_with_the_papers_numbers(tmp_path, capsys):
    files = {
        "VG": metrics("VG", {"Recall@0.5": 0.5, "Acc@0.5": 0.4, "mIoU": 0.3, "parse_failure_rate": 0.0}),
        "RO": metrics("RO", {"accuracy": 0.7, "exact_match": 0.6}),
        "GC": metrics("GC", {"SPICE": None, "mBMR": 0.2}, spice_unavailable_reason="no CoreNLP jars"),
        "MII": metrics("MII", {"SPICE": None, "mBMR": 0.5217}),
    }
    for task, m in files.items():
        (tmp_path / f"metrics_{task}.json").write_text(json.dumps(m))
    assert main(["--pred_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for paper in ("53.92", "65.33", "55.23", "52.17", "10.55"):
        assert paper in out
    rows = {r["task"]: r for r in json.loads((tmp_path / "paper_table.json").read_text())["rows"]}
    assert list(rows) == ["VG", "RO", "GC", "MII", "QA"]
    assert rows["VG"]["this_run"] == 50.0 and rows["VG"]["difference"] == round(50.0 - 53.92, 2)
    assert rows["RO"]["this_run"] == 70.0 and rows["RO"]["difference"] == 4.67
    assert rows["GC"]["this_run"] is None and rows["GC"]["note"] == "no CoreNLP jars"
    assert rows["MII"]["this_run"] == 52.17 and rows["MII"]["difference"] == 0.0
    assert rows["QA"]["this_run"] is None and "no QA predictions" in rows["QA"]["note"]
    assert "| GC | referring captioning, SPICE | unavailable | 55.23 |" in (tmp_path / "paper_table.md").read_text()


def test_predictions_without_metrics_are_scored(tmp_path):
    rows = [
        {"id": "a", "image": "ct_00--d--c--z_0001.png", "question": "q", "annotation": "liver", "response": "the liver", "task": "RO"},
        {"id": "b", "image": "mr_00--d--c--z_0001.png", "question": "q", "annotation": "left kidney", "response": "kidney", "task": "RO"},
    ]
    (tmp_path / "pred_RO.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--pred_dir", str(tmp_path), "--out_dir", str(tmp_path / "out")]) == 0
    table = json.loads((tmp_path / "out" / "paper_table.json").read_text())["rows"]
    ro = next(r for r in table if r["task"] == "RO")
    assert ro["this_run"] == 50.0  # ct right, mr wrong ("left" missing): macro (100 + 0) / 2
    assert (tmp_path / "metrics_RO.json").is_file()
