"""The eval command line and prediction-file reading: exact keys, clear errors, no paddle."""

import json
import os
import subprocess
import sys

import pytest

from paddlemix.bird.metrics.evaluate import PredictionFileError, read_predictions
from paddlemix.bird.metrics.keys import vg_metric_names
from paddlemix.cli import run
from paddlemix.tools.eval import main

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EVAL_PY = os.path.join(REPO, "tests", "models", "BiRD", "eval.py")

A = "<box>(0,0),(100,100)</box>"


def write_jsonl(path, records, raw_lines=()):
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
        for line in raw_lines:
            handle.write(line + "\n")
    return str(path)


def vg(i, modality, response, **extra):
    record = dict(id=i, image=f"{modality}_00--ds--c{i}--z_0001.png", question="Where is the liver?", annotation="<ref>liver</ref>" + A, response=response, task="VG", modality=modality)
    record.update(extra)
    return record


@pytest.mark.parametrize(
    "task, records, keys",
    [
        ("VG", [vg(0, "ct", A), vg(1, "mr", "")], ["n"] + list(vg_metric_names())),
        ("RO", [dict(image="ct_1.png", annotation="liver", response="liver", task="RO")], ["n", "accuracy", "exact_match"]),
    ],
)
def test_cli_writes_the_exact_keys(tmp_path, capsys, task, records, keys):
    pred = write_jsonl(tmp_path / f"pred_{task}.jsonl", records)
    out_json = tmp_path / "sub" / f"metrics_{task}.json"
    assert run(main, ["--task", task.lower(), "--pred_file", pred, "--out_json", str(out_json)]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["task"] == task and metrics["n"] == len(records)
    assert {"task", "n", "per_modality", "macro", "micro", "definitions", "clean"} <= set(metrics)
    counts = ["n_predicted_boxes", "n_reference_boxes"] if task == "VG" else []  # beside the scores
    for scores in metrics["per_modality"].values():
        assert list(scores) == keys + counts
    assert list(metrics["macro"]) == keys[1:] == list(metrics["micro"])
    table = capsys.readouterr().out.splitlines()
    modalities = list(metrics["per_modality"])
    assert table[1].split() == ["modality", "n"] + keys[1:]
    assert [line.split()[0] for line in table[2 : 2 + len(modalities)]] == modalities
    assert [line.split()[0] for line in table[3 + len(modalities) : 5 + len(modalities)]] == ["macro", "micro"]


def test_cli_vg_values_and_options(tmp_path):
    pred = write_jsonl(tmp_path / "p.jsonl", [vg(0, "ct", "<box>(0,0),(100,50)</box><|endoftext|>"), vg(1, "ct", A)])
    out_json = tmp_path / "m.json"
    assert run(main, ["--task", "VG", "--pred_file", pred, "--out_json", str(out_json), "--iou", "0.4", "--clean", "upstream", "--bootstrap", "20"]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["per_modality"]["ct"] == {
        "n": 2, "Recall@0.4": 1.0, "match_precision@0.4": 1.0, "match_recall@0.4": 1.0, "match_F1@0.4": 1.0,
        "Acc@0.25": 1.0, "Acc@0.5": 1.0, "Acc@0.75": 0.5, "mIoU": 0.75, "parse_failure_rate": 0.0,
        "n_predicted_boxes": 2, "n_reference_boxes": 2,
    }
    assert metrics["clean"] == "upstream" and metrics["iou_threshold"] == 0.4
    assert set(metrics["ci95"]["micro"]) == set(vg_metric_names(0.4))


def test_cli_pixel_box_format_reads_the_image_size(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (200, 400)).save(tmp_path / "ct_1.png")
    # (20, 40)-(100, 200) pixels of a 200 x 400 image is (100,100),(500,500) on the grid.
    record = dict(id=0, image="ct_1.png", annotation="<ref>liver</ref><box>(100,100),(500,500)</box>",
                  response="<ref>liver</ref><box>(20,40),(100,200)</box>", task="VG")
    pred = write_jsonl(tmp_path / "p.jsonl", [record])
    out_json = tmp_path / "m.json"
    assert run(main, ["--pred_file", pred, "--out_json", str(out_json), "--box_format", "pixels"]) == 2
    assert "record 0 (id 0)" in capsys.readouterr().err  # no size: a clear error, not a guess
    assert run(main, ["--pred_file", pred, "--out_json", str(out_json), "--box_format", "pixels",
                 "--image_root", str(tmp_path)]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["micro"]["mIoU"] == 1.0 and metrics["box_format"] == "pixels"


@pytest.mark.parametrize(
    "lines, task, message",
    [
        ([json.dumps(vg(0, "ct", A)), "", '{"id": 1, "annotation": '], "VG", r"bad\.jsonl:3: not valid JSON"),
        ([json.dumps(vg(0, "ct", A)), json.dumps({"image": "ct_1.png", "response": "x", "task": "VG"})], "VG", r"bad\.jsonl:2: record has no 'annotation'"),
        ([json.dumps(vg(0, "ct", A, task="VQA"))], None, r"bad\.jsonl:1: unknown task 'VQA'"),
        ([json.dumps({"image": "ct_1.png", "annotation": "a"})], "RO", r"bad\.jsonl:1: record has no 'response'"),
        ([json.dumps({"annotation": "a", "response": "a"})], "RO", r"bad\.jsonl:1: record needs 'modality' or 'image'"),
        ([json.dumps({"image": "ct_1.png", "annotation": ["a"], "response": "a"})], "RO", r"bad\.jsonl:1: 'annotation' must be a string"),
        ([json.dumps({"image": "ct_1.png", "annotation": "a", "response": 3})], "RO", r"bad\.jsonl:1: 'response' must be a string or null"),
        (["[1, 2]"], "RO", r"bad\.jsonl:1: expected a JSON object"),
        ([json.dumps(vg(0, "ct", A)), json.dumps(dict(vg(1, "ct", A), task="RO"))], None, r"bad\.jsonl: records of several tasks \(VG, RO\); pass --task"),
        ([json.dumps({"image": "ct_1.png", "annotation": "a", "response": "a"})], None, r"no record has a 'task' field; pass --task"),
        ([json.dumps(vg(0, "ct", A))], "GC", r"bad\.jsonl: no GC records \(tasks found: VG\)"),
        ([], None, r"bad\.jsonl: empty, no predictions to score"),
        (["", "  "], "VG", r"bad\.jsonl: empty, no predictions to score"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, capsys, lines, task, message):
    pred = write_jsonl(tmp_path / "bad.jsonl", [], lines)
    with pytest.raises(PredictionFileError, match=message):
        read_predictions(pred, task)
    argv = ["--pred_file", pred, "--out_json", str(tmp_path / "m.json")] + (["--task", task] if task else [])
    assert run(main, argv) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "m.json").exists()


def test_reading_selects_a_task_and_keeps_untagged_records(tmp_path):
    records = [vg(0, "ct", A), dict(vg(1, "ct", A), task="MII"), {k: v for k, v in vg(2, "mr", "").items() if k != "task"}]
    pred = write_jsonl(tmp_path / "mixed.jsonl", records, ["", "   "])
    task, selected = read_predictions(pred, "vg")
    assert task == "VG" and [r["id"] for r in selected] == [0, 2]
    task, selected = read_predictions(pred, "MII")
    assert task == "MII" and [r["id"] for r in selected] == [1, 2]


def test_empty_and_null_responses_are_scored_misses(tmp_path):
    pred = write_jsonl(tmp_path / "p.jsonl", [vg(0, "ct", ""), vg(1, "ct", None), vg(2, "ct", "no idea")])
    out_json = tmp_path / "m.json"
    assert run(main, ["--pred_file", pred, "--out_json", str(out_json)]) == 0  # task from the records
    metrics = json.loads(out_json.read_text())
    assert metrics["micro"] == dict({k: 0.0 for k in vg_metric_names()}, parse_failure_rate=1.0)


def test_evaluation_never_imports_paddle(tmp_path):
    """Scoring runs where paddle / paddlenlp are absent: checked in a fresh interpreter."""
    pred = write_jsonl(tmp_path / "p.jsonl", [vg(0, "ct", A)])
    code = f"""
import runpy, sys
sys.argv = ["eval.py", "--task", "VG", "--pred_file", {pred!r}, "--out_json", {str(tmp_path / "m.json")!r}]
try:
    runpy.run_path({EVAL_PY!r}, run_name="__main__")
except SystemExit as exc:
    assert exc.code == 0, exc.code
import paddlemix.bird.metrics.score, paddlemix.bird.metrics.report, paddlemix.tools.report, paddlemix.tools.draw_boxes
import pycocoevalcap.bleu.bleu_scorer, pycocoevalcap.cider.cider_scorer, pycocoevalcap.rouge.rouge
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("paddle", "paddlenlp"))
print("LOADED", loaded)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout
    assert json.loads((tmp_path / "m.json").read_text())["micro"]["Recall@0.5"] == 1.0
