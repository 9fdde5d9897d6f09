"""Prediction files: the record shape; resuming drops a partial last line, keeps complete lines, refuses duplicates."""

import json

import pytest

from paddlemix.bird.predictions import append_records, open_resumable, prediction_record


def rec(i, task="VG"):
    return {"id": f"img{i}", "task": task, "turn": 0, "response": f"r{i}"}


def test_missing_file_is_empty_and_folder_created(tmp_path):
    path = tmp_path / "sub" / "pred.jsonl"
    assert open_resumable(str(path)) == set()
    assert path.parent.is_dir()


def test_partial_last_line_is_cut_off(tmp_path):
    path = tmp_path / "pred.jsonl"
    append_records(str(path), [rec(0), rec(1)])
    with open(path, "a") as f:
        f.write('{"id": "img2", "task": "VG", "tu')  # a run killed mid-write
    done = open_resumable(str(path))
    assert done == {("img0", "VG", 0), ("img1", "VG", 0)}
    lines = path.read_text().splitlines()
    assert [json.loads(l)["id"] for l in lines] == ["img0", "img1"]
    append_records(str(path), [rec(2)])
    assert [json.loads(l)["id"] for l in path.read_text().splitlines()] == ["img0", "img1", "img2"]


def test_same_id_in_two_tasks_is_two_records(tmp_path):
    path = tmp_path / "pred.jsonl"
    append_records(str(path), [rec(0, "VG"), rec(0, "RO")])
    assert len(open_resumable(str(path))) == 2


def test_corrupt_complete_line_and_duplicates_are_errors(tmp_path):
    path = tmp_path / "pred.jsonl"
    path.write_text(json.dumps(rec(0)) + "\nnot json\n")
    with pytest.raises(ValueError, match=r"pred.jsonl:2: not a JSON object"):
        open_resumable(str(path))
    path.write_text(json.dumps(rec(0)) + "\n" + json.dumps(rec(0)) + "\n")
    with pytest.raises(ValueError, match=r"pred.jsonl:2: duplicate prediction"):
        open_resumable(str(path))


def test_start_predictions_resumes_only_the_same_job(tmp_path):
    from paddlemix.bird.predictions import PredictionMismatch, start_predictions

    path = tmp_path / "pred.jsonl"
    job = {"settings": {"max_new_tokens": 8, "prompt_format": "chatml"}}
    assert start_predictions(str(path), job) == set() and path.read_text() == ""
    append_records(str(path), [dict(rec(0), annotation="a"), dict(rec(1), annotation="b")])
    assert start_predictions(str(path), job) == {("img0", "VG", 0), ("img1", "VG", 0)}
    other = {"settings": {"max_new_tokens": 16, "prompt_format": "chatml"}}
    with pytest.raises(PredictionMismatch, match=r"settings\.max_new_tokens: was 8, now 16\. Pass --overwrite"):
        start_predictions(str(path), other)
    assert start_predictions(str(path), other, overwrite=True) == set() and path.read_text() == ""
    assert json.loads((tmp_path / "pred.jsonl.meta.json").read_text())["fingerprint"] == other
    # A prediction file deleted by hand: its old record does not outlive it.
    path.unlink()
    assert start_predictions(str(path), job) == set()
    assert json.loads((tmp_path / "pred.jsonl.meta.json").read_text())["fingerprint"] == job
    (tmp_path / "pred.jsonl.meta.json").write_text("{cut")
    append_records(str(path), [dict(rec(0), annotation="a")])
    with pytest.raises(PredictionMismatch, match=r"pred\.jsonl\.meta\.json: not valid JSON"):
        start_predictions(str(path), job)


def test_prediction_record_drops_the_image_tag_and_keeps_the_field_order():
    row = prediction_record(id="x", image="a.png", question="Picture 1: <img>/data/a.png</img>\nWhere is the liver?",
                            annotation="<ref>liver</ref><box>(1,2),(3,4)</box>", response="(1,2),(3,5)", task="VG",
                            modality="ct", phrase="liver")
    assert list(row.items()) == [
        ("id", "x"), ("image", "a.png"), ("question", "Where is the liver?"),
        ("annotation", "<ref>liver</ref><box>(1,2),(3,4)</box>"), ("response", "(1,2),(3,5)"), ("task", "VG"),
        ("modality", "ct"), ("turn", 0), ("phrase", "liver"),
    ]
    untagged = prediction_record(id="y", image=None, question="Name it.", annotation="a", response="b", task="RO",
                                 modality=None, turn=2)
    assert untagged["question"] == "Name it." and untagged["turn"] == 2
