"""Qwen-VL's grounding protocol: first pair, /999, IoU >= 0.5, micro Precision@1; the RefCOCO reader."""

import json

import pytest

from paddlemix.bird.metrics.evaluate import PredictionFileError, evaluate_file
from paddlemix.bird.metrics.qwen_grounding import first_box, prefill, raw_prompt, record_phrase, score_qwen_grounding
from paddlemix.cli import run
from paddlemix.tools.eval import main
from paddlemix.datasets.refcoco import RefCocoError, is_refcoco_file, load_refcoco


def refcoco(response, bbox=(64, 48, 320, 240), width=640, height=480, image="coco_1.jpg", **extra):
    return dict(image=image, annotation="", response=response, bbox=list(bbox), width=width, height=height, **extra)


def test_prompt_text():
    assert prefill("the man on the left") == "<ref>the man on the left</ref><box>"
    assert raw_prompt("coco/1.jpg", "dog") == "<img>coco/1.jpg</img><ref>dog</ref><box>"
    assert record_phrase({"phrase": " dog ", "annotation": "<ref>cat</ref>"}) == "dog"
    assert record_phrase({"annotation": "<ref>left kidney</ref><box>(1,2),(3,4)</box>"}) == "left kidney"
    assert record_phrase({"annotation": "<box>(1,2),(3,4)</box>"}) is None


def test_first_pair_is_read_as_qwen_vl_reads_it():
    assert first_box("(100,200),(300,400)</box><box>(1,1),(2,2)</box>") == (100, 200, 300, 400)
    assert first_box("( 1, 2),(3 ,4)") == (1, 2, 3, 4)
    assert first_box("(1,2), (3,4)") == (0, 0, 0, 0)  # the pattern allows no space between the pairs
    assert first_box("(1,2,3),(4,5)") == (0, 0, 0, 0)  # not two numbers each
    assert first_box("no box") == (0, 0, 0, 0) and first_box(None) == (0, 0, 0, 0)


def test_precision_at_1_by_hand():
    # bbox (64,48)-(320,240) of 640x480 is (0.1,0.1)-(0.5,0.5) of the image.
    records = [
        refcoco("(100,100),(500,500)</box>"),  # (0.1001..0.5005): IoU 0.1599 / 0.1604 = 0.997, hit
        refcoco("(0,0),(100,100)</box>"),  # overlap 0.0000001 of the image: miss
        # (0,0)-(999,999) is the whole image; the reference is its top half: IoU exactly 0.5, a hit (>=).
        refcoco("(0,0),(999,999)", bbox=(0, 0, 640, 240)),
        refcoco(""),  # nothing written: a miss
    ]
    out = score_qwen_grounding(records)
    assert out["micro"] == {"Precision@1": 0.5} and out["n_hits"] == 2 and out["n"] == 4
    assert out["protocol"] == "qwen_vl_grounding" and "Recall@0.5" not in out["micro"]


def test_medgrit_records_use_the_first_grid_box_and_micro_differs_from_macro():
    ref = "<ref>liver</ref><box>(0,0),(500,999)</box><box>(600,600),(700,700)</box>"
    records = [
        dict(image="ct_1.png", annotation=ref, response="(0,0),(499,998)</box>"),  # IoU 0.998: hit
        dict(image="ct_2.png", annotation=ref, response="(600,600),(700,700)</box>"),  # the second box: miss
        dict(image="mr_1.png", annotation=ref, response="(0,0),(500,999)"),
    ]
    out = score_qwen_grounding(records)
    assert out["per_modality"] == {"ct": {"n": 2, "Precision@1": 0.5}, "mr": {"n": 1, "Precision@1": 1.0}}
    assert out["micro"]["Precision@1"] == pytest.approx(2 / 3)
    assert out["macro"]["Precision@1"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"record 0 \(id 7\): no reference box"):
        score_qwen_grounding([dict(id=7, image="ct_1.png", annotation="liver", response="(1,1),(2,2)")])


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_eval_cli_keeps_the_protocols_apart(tmp_path, capsys):
    rows = [dict(refcoco("(100,100),(500,500)"), id=0, task="VG", protocol="qwen_vl_grounding",
                 prefill="<ref>dog</ref><box>")]
    pred = write(tmp_path / "pred_VG.jsonl", rows)
    out_json = tmp_path / "m.json"
    assert run(main, ["--pred_file", pred, "--out_json", str(out_json), "--protocol", "qwen_vl_grounding"]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["micro"] == {"Precision@1": 1.0} and metrics["protocol"] == "qwen_vl_grounding"
    assert "Precision@1" in capsys.readouterr().out
    with pytest.raises(PredictionFileError, match="score them with --protocol qwen_vl_grounding"):
        evaluate_file(pred)  # BiRD's rules on pre-filled answers would mix the protocols
    ro = write(tmp_path / "ro.jsonl", [dict(image="ct_1.png", annotation="liver", response="liver", task="RO")])
    with pytest.raises(PredictionFileError, match="scores VG records, not RO"):
        evaluate_file(ro, protocol="qwen_vl_grounding")


def test_refcoco_reader(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / "a.jpg").write_bytes(b"")
    line = {"image": "train2014/a.jpg", "sent": "man in red", "bbox": [10, 20, 110, 220], "height": 400, "width": 200}
    path = write(tmp_path / "refcoco_val.jsonl", [line])
    assert is_refcoco_file(path)
    (record,) = load_refcoco(path, str(tmp_path))
    assert record["conversations"] == [["Picture 1: <img>train2014/a.jpg</img>\nman in red",
                                        "<ref>man in red</ref><box>(50,50),(550,550)</box>"]]
    assert (record["phrase"], record["bbox"], record["width"], record["height"]) == ("man in red", [10, 20, 110, 220], 200, 400)
    assert record["task"] == "VG" and record["id"] == "0"
    for bad, message in [
        (dict(line, bbox=[10, 20, 300, 220]), r"refcoco_val\.jsonl:2: bbox .* is not a box inside the 200x400 image"),
        ({k: v for k, v in line.items() if k != "sent"}, r"refcoco_val\.jsonl:2: missing field\(s\) sent"),
        (dict(line, width=0), r"refcoco_val\.jsonl:2: width and height must be positive"),
        (dict(line, image="train2014/missing.jpg"), r"refcoco_val\.jsonl:2: image not found"),
    ]:
        write(tmp_path / "refcoco_val.jsonl", [line, bad])
        with pytest.raises(RefCocoError, match=message):
            load_refcoco(path, str(tmp_path))
