"""Med-GRIT loading: release JSON, JSONL and explicit-image records; every documented problem."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from paddlemix.bird.boxes import parse_boxes
from paddlemix.cli import run
from paddlemix.datasets.medgrit import (
    MedGritError,
    box_problems,
    load_medgrit,
    task_from_filename,
    validate_medgrit,
)
from paddlemix.tools import validate_medgrit as validate_cli

CT = "ct_00--AbdCT--case_01--z_0010"
MR = "mr_t1--BraTS--case_02--z_0050"
XRAY = "x_ray--ChestX--case_03--2d_none"


@pytest.fixture
def root(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, stem in enumerate((CT, MR, XRAY)):
        Image.fromarray(np.full((8, 12), 40 * i, np.uint8)).save(images / f"{stem}.png")
    return tmp_path


def write_json(path, records):
    path.write_text(json.dumps(records))
    return str(path)


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def vg(stem, question="Where is the liver?", answer="<ref>liver</ref><box>(10,20),(300,400)</box>", **extra):
    return {"id": stem, "conversations": [[question, answer]], **extra}


def test_release_json_tags_the_first_question_and_infers_the_task(root):
    path = write_json(root / "test_VG.json", [
        vg(CT, "Picture 1: <img>/authors/machine/x.png</img>\nWhere is the liver?"),
        {"id": MR, "conversations": [["Where is the edema?", "<ref>edema</ref><box>(0,0),(999,999)</box>"],
                                     ["And the tumor?", "<ref>tumor</ref><box>(1,2),(3,4)</box>"]]},
    ])
    records, report = load_medgrit(path, str(root / "images"))
    assert report.ok and report.read == report.kept == 2
    ct, mr = records
    assert ct == {
        "id": CT,
        "image": f"{CT}.png",
        "image_path": str(root / "images" / f"{CT}.png"),
        "task": "VG",
        "modality": "ct",
        "conversations": [[f"Picture 1: <img>{CT}.png</img>\nWhere is the liver?",
                           "<ref>liver</ref><box>(10,20),(300,400)</box>"]],
    }
    assert mr["conversations"][0][0] == f"Picture 1: <img>{MR}.png</img>\nWhere is the edema?"
    assert mr["conversations"][1][0] == "And the tumor?"
    assert mr["modality"] == "mr"


def test_jsonl_with_explicit_images_and_tasks(root, tmp_path):
    absolute = str(root / "images" / f"{XRAY}.png")
    path = write_jsonl(tmp_path / "mixed.jsonl", [
        {"id": "a", "image": f"images/{CT}.png", "task": "ro",
         "conversations": [["What is in <box>(1,2),(30,40)</box>?", "liver"]]},
        "",
        {"image": absolute, "task": "MII", "conversations": [["Describe the image.", "A chest X-ray."]]},
        vg(MR, image=f"images/{MR}.png"),
    ])
    records, report = load_medgrit(path, str(root))
    assert report.ok and report.read == 3
    a, b, c = records
    assert (a["id"], a["image"], a["task"], a["modality"]) == ("a", f"images/{CT}.png", "RO", "ct")
    assert a["image_path"] == absolute.replace(XRAY, CT)
    assert a["conversations"][0][0].startswith(f"Picture 1: <img>images/{CT}.png</img>\n")
    assert (b["id"], b["image"], b["image_path"], b["modality"]) == (XRAY, absolute, absolute, "x")
    assert c["task"] is None and c["image"] == f"images/{MR}.png"
    assert c["image_path"] == str(root / "images" / f"{MR}.png")
    assert report.per_task == {"RO": 1, "MII": 1, "unknown": 1}


def test_task_argument_and_file_names():
    assert task_from_filename("data/test_VG.json") == "VG"
    assert task_from_filename("mii-test.jsonl") == "MII"
    assert task_from_filename("test_RO_pred.jsonl") == "RO"
    assert task_from_filename("train.json") is None
    assert task_from_filename("groundtruth.json") is None
    assert task_from_filename("VG_and_RO.json") is None


def test_task_argument_fills_records_without_one(root):
    path = write_json(root / "train.json", [vg(CT), vg(MR, task="GC")])
    records, _ = load_medgrit(path, str(root / "images"), task="vg")
    assert [r["task"] for r in records] == ["VG", "GC"]
    with pytest.raises(ValueError, match="unknown task"):
        load_medgrit(path, str(root / "images"), task="XX")


def test_broken_json_file_is_reported_with_its_line(root):
    path = root / "test_VG.json"
    path.write_text('[\n {"id": "a",\n  "conversations": [[1, 2]\n]')
    with pytest.raises(MedGritError) as err:
        load_medgrit(str(path), str(root / "images"))
    assert err.value.issue.reason == "broken_json" and err.value.issue.line is not None
    assert "test_VG.json:" in str(err.value)
    records, report = load_medgrit(str(path), str(root / "images"), strict=False)
    assert records == [] and report.skipped == {"broken_json": 1} and report.read == 1


def test_broken_jsonl_line_is_skipped_with_its_line_number(root):
    path = write_jsonl(root / "test_VG.jsonl", [vg(CT), '{"id": "oops", "conversations": [', vg(MR)])
    records, report = load_medgrit(path, str(root / "images"), strict=False)
    assert [r["id"] for r in records] == [CT, MR]
    (issue,) = report.issues
    assert (issue.reason, issue.line, issue.index) == ("broken_json", 2, 1)
    assert "test_VG.jsonl:2 record 1" in issue.message
    with pytest.raises(MedGritError, match=r"test_VG\.jsonl:2 record 1: broken_json"):
        load_medgrit(path, str(root / "images"))


BAD_RECORDS = {
    "bad_shape": [
        ["not", "an", "object"],
        {"id": CT},
        {"id": CT, "conversations": []},
        {"id": CT, "conversations": [["only a question"]]},
        {"id": CT, "conversations": [["q", 3]]},
        {"id": 17, "conversations": [["q", "a"]]},
        {"conversations": [["q", "a"]]},
        {"id": CT, "image": "", "conversations": [["q", "a"]]},
    ],
    "unknown_task": [vg(CT, task="VQA"), vg(CT, task=3)],
    "empty_turn": [vg(CT, question="  "), vg(CT, answer=""), vg(CT, question=f"Picture 1: <img>{CT}.png</img>\n")],
    "bad_box": [
        vg(CT, answer="<ref>liver</ref><box>(10,20),(1000,400)</box>"),
        vg(CT, answer="<ref>liver</ref><box>(300,20),(10,400)</box>"),
        vg(CT, answer="<ref>liver</ref><box>(10,400),(300,400)</box>"),
        vg(CT, answer="<ref>liver</ref><box>(-1,20),(300,400)</box>"),
        vg(CT, answer="<ref>liver</ref><box>(10.5,20),(300,400)</box>"),
        vg(CT, answer="<ref>liver</ref><box>(10,20)</box>"),
        vg(CT, answer="<ref>liver</ref><box>(10,20),(300,400)"),
        vg(CT, question="What is in <box>(5,5),(5,9)</box>?", answer="liver"),
        vg(CT, answer="liver at (10,20),(1200,400)"),
    ],
    "missing_image": [vg("ct_00--AbdCT--case_09--z_0001")],
}


@pytest.mark.parametrize("reason,raw", [(r, x) for r, xs in BAD_RECORDS.items() for x in xs])
def test_each_bad_record_raises_in_strict_mode_and_is_counted_in_lenient_mode(root, reason, raw):
    path = write_json(root / "test_VG.json", [vg(MR), raw, vg(XRAY)])
    with pytest.raises(MedGritError) as err:
        load_medgrit(path, str(root / "images"))
    issue = err.value.issue
    assert (issue.reason, issue.index, issue.file) == (reason, 1, path)
    assert "test_VG.json record 1" in str(err.value)
    records, report = load_medgrit(path, str(root / "images"), strict=False)
    assert [r["id"] for r in records] == [MR, XRAY]
    assert report.skipped == {reason: 1}
    assert report.read == report.kept + sum(report.skipped.values()) == 3


def test_messages_name_the_record_id(root):
    path = write_json(root / "test_VG.json", [vg(CT, answer="<ref>x</ref><box>(300,20),(10,400)</box>")])
    with pytest.raises(MedGritError) as err:
        load_medgrit(path, str(root / "images"))
    assert f"(id '{CT}')" in str(err.value) and "turn 0 answer" in str(err.value)


def test_corrupt_png_is_unreadable(root):
    good = (root / "images" / f"{CT}.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "images" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    path = write_json(root / "test_RO.json", [vg("truncated"), vg("garbage"), vg(CT)])
    records, report = load_medgrit(path, str(root / "images"), strict=False)
    assert [r["id"] for r in records] == [CT]
    assert report.skipped == {"unreadable_image": 2}
    records, report = load_medgrit(path, str(root / "images"), strict=False, check_images=False)
    assert len(records) == 3 and report.ok


def test_duplicates_are_per_id_and_task(root):
    path = write_json(root / "data.json", [vg(CT, task="VG"), vg(CT, task="RO"), vg(CT, task="VG"), vg(MR), vg(MR)])
    records, report = load_medgrit(path, str(root / "images"), strict=False)
    assert [(r["id"], r["task"]) for r in records] == [(CT, "VG"), (CT, "RO"), (MR, None)]
    assert report.skipped == {"duplicate_id": 2}
    assert "already seen at" in report.issues[0].message and "record 0" in report.issues[0].message
    # Across files in one load too (an image may appear once per task).
    again = write_json(root / "again_VG.json", [vg(CT)])
    with pytest.raises(MedGritError, match="duplicate_id"):
        load_medgrit([path, again], str(root / "images"))


def test_top_level_must_be_a_list(root):
    path = root / "test_VG.json"
    path.write_text(json.dumps({"data": []}))
    with pytest.raises(MedGritError, match="bad_shape: expected a JSON list"):
        load_medgrit(str(path), str(root / "images"))


def test_json_lines_in_a_json_file_are_read_as_lines(root):
    path = write_jsonl(root / "test_GC.json", [vg(CT), vg(MR)])
    records, report = load_medgrit(path, str(root / "images"))
    assert [r["id"] for r in records] == [CT, MR] and all(r["task"] == "GC" for r in records)


def test_box_problems_accepts_valid_markup():
    assert box_problems("<ref>a</ref><box>(0,0),(999,999)</box><box>( 1 , 2 ),( 3 , 4 )</box>") == []
    assert box_problems("no boxes at all") == []
    assert box_problems("<box>(3,4),(1,2)</box>") == ["needs x1 < x2 and y1 < y2 in '<box>(3,4),(1,2)</box>'"]


# One box grammar: what the strict validator cannot read is exactly what the lenient parser cannot
# read ("1." is not a number in either), and a decimal both read is refused only for not being an integer.
@pytest.mark.parametrize(
    "box, readable",
    [("(1.,2),(30,40)", False), ("(1,2),(30.,40)", False), ("(1,2),(30,40", False),
     ("(1.5,2),(30,40)", True), (" ( 1 , 2 ) (30,40) ", True)],
)
def test_validator_and_parser_read_the_same_boxes(box, readable):
    text = f"<ref>a</ref><box>{box}</box>"
    problems = box_problems(text)
    assert (parse_boxes(text).boxes != []) == readable
    assert (f"unreadable box '<box>{box}</box>'" in problems) == (not readable)


def test_a_trailing_dot_is_unreadable_not_a_decimal():
    text = "<box>(1.,2),(30,40)</box>"
    assert box_problems(text) == [f"unreadable box {text!r}", f"unparseable box {text!r}"]
    assert parse_boxes(text).unparsed == [text]


def test_validate_cli_lenient_and_strict(root, capsys):
    path = write_json(root / "test_VG.json", [vg(CT), vg(CT), vg(MR, answer="")])
    args = ["--json_path", path, "--image_root", str(root / "images")]
    report_json = root / "report.json"
    assert validate_cli.main(args + ["--report_json", str(report_json)]) == 0
    out = capsys.readouterr().out
    assert "read 3, kept 1, skipped 2" in out and "duplicate_id: 1" in out and "empty_turn: 1" in out
    saved = json.loads(report_json.read_text())
    assert saved["skipped"] == {"empty_turn": 1, "duplicate_id": 1} and len(saved["issues"]) == 2
    assert run(validate_cli.main, args + ["--strict"]) == 2
    assert "record 1" in capsys.readouterr().err
    clean = write_json(root / "test_RO.json", [vg(CT)])
    assert validate_cli.main(["--json_path", clean, "--image_root", str(root / "images"), "--strict"]) == 0


def test_validate_medgrit_is_lenient_by_default(root):
    path = write_json(root / "test_VG.json", [vg("nope"), vg(CT)])
    report = validate_medgrit(path, str(root / "images"))
    assert report.kept == 1 and report.skipped == {"missing_image": 1}
    assert os.path.basename(path) in report.format()


@pytest.mark.parametrize("name", ["test_VG.json", "test_VG.jsonl"])
def test_byte_order_mark_keeps_the_first_record(root, name):
    path = root / name
    body = json.dumps([vg(CT), vg(MR)]) if name.endswith(".json") else json.dumps(vg(CT)) + "\n" + json.dumps(vg(MR)) + "\n"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    records, report = load_medgrit(str(path), str(root / "images"))
    assert report.ok and [r["id"] for r in records] == [CT, MR]


@pytest.mark.parametrize("name, content", [("test_VG.jsonl", ""), ("test_VG.jsonl", "\n\n"), ("test_VG.json", "[]")])
def test_empty_file_is_reported_not_silent(root, capsys, name, content):
    path = root / name
    path.write_text(content)
    records, report = load_medgrit(str(path), str(root / "images"))
    assert records == [] and report.empty_files == [str(path)] and not report.ok
    assert validate_cli.main(["--json_path", str(path), "--image_root", str(root / "images")]) == 0
    assert f"{path}: empty (no records)" in capsys.readouterr().out


def test_broken_json_message_reads_once(root):
    path = root / "test_VG.json"
    path.write_text('[{"id": "a", "conversations": [["Where?", "unterminated]]}')
    with pytest.raises(MedGritError) as exc:
        load_medgrit(str(path), str(root / "images"))
    assert "Unterminated string starting at (line 1, column 43)" in str(exc.value) and "at at" not in str(exc.value)
