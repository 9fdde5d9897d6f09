"""LLaVA-Med QA JSONL reading: fields, placeholder removal, modality, detection, errors."""

import json

import pytest

from paddlemix.datasets.llava_med import LlavaMedError, is_llava_med_file, load_llava_med_qa

LINES = [
    {"question_id": 7, "image": "a.jpg", "text": "What does the image show?\n<image>", "gpt4_answer": "A chest X-ray.",
     "domain": {"chest_xray": True, "mri": False, "ct_scan": False, "histology": False, "gross": False}},
    {"question_id": 8, "image": "b.jpg", "text": "Is there a lesion? <image>", "gpt4_answer": "Yes, in the liver.",
     "domain": {"chest_xray": False, "mri": False, "ct_scan": True, "histology": False, "gross": False}},
    {"question_id": "9", "image": "c.jpg", "text": "Describe it.", "gpt4_answer": "Tissue."},
]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_records_have_the_normalised_shape(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    path = write(tmp_path / "qa50.jsonl", LINES)
    assert is_llava_med_file(path)
    records = load_llava_med_qa(path, str(tmp_path))
    assert [r["id"] for r in records] == ["7", "8", "9"]
    assert [r["modality"] for r in records] == ["x", "ct", "unknown"]
    assert records[0]["conversations"] == [["Picture 1: <img>a.jpg</img>\nWhat does the image show?", "A chest X-ray."]]
    assert records[1]["conversations"][0][0].endswith("Is there a lesion?")
    assert all(r["task"] == "QA" for r in records)
    assert records[2]["image_path"] == str(tmp_path / "c.jpg")


def test_medgrit_files_are_not_detected(tmp_path):
    path = tmp_path / "test_VG.json"
    path.write_text(json.dumps([{"id": "x", "conversations": [["q", "a"]]}], indent=1))
    assert not is_llava_med_file(str(path))


def test_errors_name_file_and_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    bad = write(tmp_path / "bad.jsonl", [LINES[0], {"question_id": 1, "image": "a.jpg", "text": "q"}])
    with pytest.raises(LlavaMedError, match=r"bad.jsonl:2: missing field\(s\) gpt4_answer"):
        load_llava_med_qa(bad, str(tmp_path))
    dup = write(tmp_path / "dup.jsonl", [LINES[0], LINES[0]])
    with pytest.raises(LlavaMedError, match=r"dup.jsonl:2: question_id 7 already used on line 1"):
        load_llava_med_qa(dup, str(tmp_path))
    missing = write(tmp_path / "missing.jsonl", [LINES[1]])
    with pytest.raises(LlavaMedError, match=r"missing.jsonl:1: image not found"):
        load_llava_med_qa(missing, str(tmp_path))


def test_byte_order_mark_is_not_part_of_the_first_record(tmp_path):
    line = {"question_id": 7, "image": "a.png", "text": "What? <image>", "gpt4_answer": "A scan.", "domain": {"mri": True}}
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(line) + "\n").encode())
    assert is_llava_med_file(str(path))
    records = load_llava_med_qa(str(path), str(tmp_path), check_images=False)
    assert [r["id"] for r in records] == ["7"]
