"""VG and RO metrics, response cleaning and bootstrap intervals, against numbers worked out by hand."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paddlemix.bird.metrics.grounding import score_vg, vg_record_score
from paddlemix.bird.metrics.naming import normalize_answer, ro_accuracy, ro_exact_match, score_ro
from paddlemix.bird.metrics.params import Params
from paddlemix.bird.metrics.records import clean_response, clean_upstream
from paddlemix.bird.metrics.score import score_task

A = "<box>(0,0),(100,100)</box>"  # area 10000
B = "<box>(200,200),(300,300)</box>"


def rec(modality, annotation, response, **extra):
    return dict(image=f"{modality}_00--ds--case--z_0001.png", annotation=annotation, response=response, **extra)


# Each VG record with what it should score: (found, reference boxes, first-box IoU, parse failure).
VG_RECORDS = [
    # IoU exactly 0.5 (5000 / 10000): not found for Recall (strict >), a hit for Acc (>=).
    (rec("ct", "<ref>liver</ref>" + A, "<ref>liver</ref><box>(0,0),(100,50)</box>"), (0, 1, 0.5, 0)),
    (rec("ct", "<ref>liver</ref>" + A, "<ref>liver</ref>" + A), (1, 1, 1.0, 0)),
    # Two reference boxes, the prediction finds the second: recall 1/2; first-vs-first IoU 0.
    (rec("mr", "<ref>kidneys</ref>" + A + B, "<ref>kidneys</ref>" + B), (1, 2, 0.0, 0)),
    # Malformed box: nothing read, one unparsed fragment.
    (rec("mr", A, "<box>(10,10),(20</box>"), (0, 1, 0.0, 1)),
    (rec("mr", A, ""), (0, 1, 0.0, 1)),
    # A good box next to an unreadable one: scored, but counted as a parse failure.
    (rec("x", A, A + "<box>(oops)</box>"), (1, 1, 1.0, 1)),
    # Bare pair without tags: 9000 / 10000.
    (rec("x", A, "it is at (0,0),(90,100)"), (1, 1, 0.9, 0)),
]
SKIPPED = rec("x", "there is no such structure", A)


def test_vg_record_scores_by_hand():
    for record, (found, n_ref, first, failure) in VG_RECORDS:
        score = vg_record_score(record["annotation"], record["response"])
        assert (score.n_found, score.n_reference_boxes, score.parse_failure) == (found, n_ref, bool(failure))
        assert score.first_iou == pytest.approx(first)
    assert vg_record_score(SKIPPED["annotation"], SKIPPED["response"]) is None


def test_vg_per_modality_macro_micro_by_hand():
    out = score_vg([r for r, _ in VG_RECORDS] + [SKIPPED])
    assert out["n"] == 8 and out["n_skipped_no_reference_box"] == 1
    assert out["n_skipped_no_reference_box_per_modality"] == {"x": 1}
    assert out["n_reference_boxes"] == 8
    assert list(out["per_modality"]) == ["ct", "mr", "x"]
    ct, mr, x = (out["per_modality"][m] for m in ("ct", "mr", "x"))
    # One-to-one matching allows IoU == 0.5 (record 1), Recall@0.5 does not.
    assert ct == pytest.approx({
        "n": 2, "Recall@0.5": 0.5, "match_precision@0.5": 1.0, "match_recall@0.5": 1.0, "match_F1@0.5": 1.0,
        "Acc@0.25": 1.0, "Acc@0.5": 1.0, "Acc@0.75": 0.5, "mIoU": 0.75, "parse_failure_rate": 0.0,
        "n_predicted_boxes": 2, "n_reference_boxes": 2,
    })
    # mr: one box predicted (matched) for four reference boxes: F1 = 2 * 1 / (1 + 4).
    assert mr == pytest.approx({
        "n": 3, "Recall@0.5": 0.25, "match_precision@0.5": 1.0, "match_recall@0.5": 0.25, "match_F1@0.5": 0.4,
        "Acc@0.25": 0.0, "Acc@0.5": 0.0, "Acc@0.75": 0.0, "mIoU": 0.0, "parse_failure_rate": 2 / 3,
        "n_predicted_boxes": 1, "n_reference_boxes": 4,
    })
    assert x == pytest.approx({
        "n": 2, "Recall@0.5": 1.0, "match_precision@0.5": 1.0, "match_recall@0.5": 1.0, "match_F1@0.5": 1.0,
        "Acc@0.25": 1.0, "Acc@0.5": 1.0, "Acc@0.75": 1.0, "mIoU": 0.95, "parse_failure_rate": 0.5,
        "n_predicted_boxes": 2, "n_reference_boxes": 2,
    })
    assert out["macro"] == pytest.approx({
        "Recall@0.5": 1.75 / 3, "match_precision@0.5": 1.0, "match_recall@0.5": 0.75, "match_F1@0.5": 0.8,
        "Acc@0.25": 2 / 3, "Acc@0.5": 2 / 3, "Acc@0.75": 0.5, "mIoU": 1.7 / 3, "parse_failure_rate": (2 / 3 + 0.5) / 3,
    })
    # Micro pools boxes for Recall and matching (5 pairs, 5 predicted, 8 reference) and records for the rest (7).
    assert out["micro"] == pytest.approx({
        "Recall@0.5": 0.5, "match_precision@0.5": 1.0, "match_recall@0.5": 5 / 8, "match_F1@0.5": 10 / 13,
        "Acc@0.25": 4 / 7, "Acc@0.5": 4 / 7, "Acc@0.75": 3 / 7, "mIoU": 3.4 / 7, "parse_failure_rate": 3 / 7,
    })
    assert out["n_predicted_boxes"] == 5 and out["box_format"] == "qwen_vl"


def test_vg_threshold_is_a_parameter_and_names_the_keys():
    out = score_vg([r for r, _ in VG_RECORDS[:2]], Params(iou_threshold=0.4))
    ct = out["per_modality"]["ct"]
    assert (ct["Recall@0.4"], ct["match_recall@0.4"], ct["Acc@0.5"], ct["Acc@0.75"]) == (1.0, 1.0, 1.0, 0.5)
    assert "Recall@0.5" not in ct and "match_precision@0.4" in out["definitions"]
    out = score_vg([r for r, _ in VG_RECORDS[:2]], Params(iou_threshold=0.75))
    assert out["per_modality"]["ct"]["Recall@0.75"] == 0.5
    assert out["per_modality"]["ct"]["match_recall@0.75"] == 0.5


def test_vg_modality_field_wins_over_image_prefix():
    records = [dict(image="scan.png", modality="CT", annotation=A, response=A), dict(image="mystery.png", annotation=A, response="")]
    out = score_vg(records)
    assert list(out["per_modality"]) == ["ct", "mystery"]  # an unknown prefix is kept, not dropped
    assert out["per_modality"]["mystery"]["Recall@0.5"] == 0.0


RO_CASES = [
    # (modality, reference, response, upstream accuracy, exact match)
    ("ct", "left kidney", "The left kidney.", 1, 0),
    ("ct", "liver", "Liver", 1, 1),
    ("ct", "liver", "<ref>liver</ref>", 1, 1),
    ("mr", "kidney", "kidneys", 1, 0),  # substring match, as upstream
    ("mr", "right kidney", "left kidney", 0, 0),
    ("mr", "liver", "", 0, 0),
    ("x", "liver", None, 0, 0),
    ("x", "Liver lesion", "liver, lesion!", 1, 1),
    ("x", "liver", "<ref>liver</ref><box>(1,2),(3,4)</box>", 1, 1),
    ("x", "optic disc", "the disc of the optic nerve", 1, 0),  # word order is not checked
]


def test_ro_record_scores_by_hand():
    for _, reference, response, accuracy, exact in RO_CASES:
        assert ro_accuracy(reference, response) == bool(accuracy), (reference, response)
        assert ro_exact_match(reference, response) == bool(exact), (reference, response)


def test_normalize_answer():
    assert normalize_answer("  <ref>Left-Kidney</ref><box>(1,2),(3,4)</box>. ") == "left kidney"
    assert normalize_answer("<box>(1,2),(3,4)") == ""  # unclosed box markup is removed too
    assert normalize_answer(None) == ""


def test_ro_per_modality_macro_micro_by_hand():
    out = score_ro([rec(m, a, r) for m, a, r, _, _ in RO_CASES])
    assert out["per_modality"] == {
        "ct": {"n": 3, "accuracy": 1.0, "exact_match": 2 / 3},
        "mr": {"n": 3, "accuracy": 1 / 3, "exact_match": 0.0},
        "x": {"n": 4, "accuracy": 0.75, "exact_match": 0.5},
    }
    assert out["macro"] == pytest.approx({"accuracy": (1 + 1 / 3 + 0.75) / 3, "exact_match": (2 / 3 + 0 + 0.5) / 3})
    assert out["micro"] == pytest.approx({"accuracy": 0.7, "exact_match": 0.4})


def test_clean_upstream_reproduces_the_original_scripts():
    assert clean_upstream("Lesion<|endoftext|><|endoftext|>") == "Lesion"
    assert clean_upstream("The liver is enlarged.<|im_end|>\n<|endoftext|>junk") == "The liver is enlarged."
    assert clean_upstream("answer<|im_end|>\n<|endoftext|>") == "answer"
    assert clean_upstream("assistant\nThe kidney\nrest") == "The kidney"  # text between the first two newlines
    assert clean_upstream("one\ntwo") == "one\ntwo"  # a single newline is kept
    assert clean_upstream("  spleen  ") == "spleen"
    assert clean_upstream(None) == ""
    assert clean_response("a<|endoftext|>", "none") == "a<|endoftext|>"
    with pytest.raises(ValueError, match="clean mode"):
        clean_response("a", "strip")


def test_clean_is_applied_before_scoring():
    records = [rec("ct", "liver", "<|im_start|>assistant\nliver\n<|im_end|>")]
    assert score_task(records, "RO")["micro"]["exact_match"] == 0.0
    cleaned = score_task(records, "RO", Params(clean="upstream"))
    assert cleaned["micro"]["exact_match"] == 1.0 and cleaned["clean"] == "upstream"


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    records = [r for r, _ in VG_RECORDS] * 5
    a = score_task(records, "VG", Params(bootstrap=200, seed=1))
    b = score_task(records, "VG", Params(bootstrap=200, seed=1))
    c = score_task(records, "VG", Params(bootstrap=200, seed=2))
    assert a["ci95"] == b["ci95"] and a["ci95"] != c["ci95"]
    assert a["bootstrap"]["n"] == 200 and a["bootstrap"]["seed"] == 1
    for key in ("macro", "micro"):
        assert set(a["ci95"][key]) == {
            "Recall@0.5", "match_precision@0.5", "match_recall@0.5", "match_F1@0.5",
            "Acc@0.25", "Acc@0.5", "Acc@0.75", "mIoU", "parse_failure_rate",
        }
        for name, (lo, hi) in a["ci95"][key].items():
            assert 0.0 <= lo <= a[key][name] <= hi <= 1.0
    # Every record of a modality alike: nothing to resample, the interval is the point.
    same = score_task([rec("ct", "liver", "liver")] * 4 + [rec("mr", "liver", "lung")] * 3, "RO", Params(bootstrap=50))
    assert same["ci95"]["macro"]["accuracy"] == [0.5, 0.5]
    assert "ci95" not in score_task(records, "VG")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown task"):
        score_task([rec("ct", "a", "a")], "VQA")
    with pytest.raises(ValueError, match="no RO records"):
        score_task([], "RO")
    with pytest.raises(ValueError, match="iou_threshold"):
        score_task([rec("ct", A, A)], "VG", Params(iou_threshold=1.5))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=60), st.sampled_from([A, B, "<box>(1,", "(5,5),(5,9)", "<ref>x</ref>"])), min_size=1, max_size=6))
def test_any_response_is_scored_never_crashes(responses):
    records = [rec(["ct", "mr"][i % 2], "<ref>x</ref>" + A, r) for i, r in enumerate(responses)]
    vg = score_task(records, "VG")
    ro = score_task(records, "RO")
    for out in (vg, ro):
        for scores in list(out["per_modality"].values()) + [out["macro"], out["micro"]]:
            assert all(0.0 <= v <= 1.0 for k, v in scores.items() if not k.startswith("n"))


def test_spice_runs_only_with_corenlp_installed(tmp_path, monkeypatch):
    """SPICE is attempted only when its jars are already on disk; nothing is ever downloaded."""
    from paddlemix.bird.metrics import java

    (tmp_path / "spice" / "lib").mkdir(parents=True)
    (tmp_path / "spice" / "spice-1.0.jar").write_bytes(b"")
    monkeypatch.setattr(java, "_pycocoevalcap_dir", lambda *parts: str(tmp_path.joinpath(*parts)))
    reason = java.spice_unavailable_reason()
    assert "stanford-corenlp-3.6.0.jar" in reason and "stanford-corenlp-3.6.0-models.jar" in reason
    assert "never" in reason
    for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (tmp_path / "spice" / "lib" / name).write_bytes(b"")
    monkeypatch.setattr(java.shutil, "which", lambda name: "/usr/bin/java")
    assert java.spice_unavailable_reason() is None


def test_spice_scores_are_read_per_record(monkeypatch):
    import pycocoevalcap.spice.spice as spice_module

    from paddlemix.bird.metrics import java

    class FakeSpice:
        def compute_score(self, gts, res):
            assert sorted(gts) == sorted(res) == [0, 1, 2]
            return 0.5, [{"All": {"f": 0.25}}, {"All": {"f": 0.5}}, {"All": {"f": 0.75}}]

    monkeypatch.setattr(java, "spice_unavailable_reason", lambda: None)
    monkeypatch.setattr(spice_module, "Spice", FakeSpice)
    rows, reason = java.spice_scores({i: ["a"] for i in range(3)}, {i: ["b"] for i in range(3)})
    assert reason is None and rows.tolist() == [0.25, 0.5, 0.75]

    class BrokenSpice:
        def compute_score(self, gts, res):
            raise OSError("java ran out of memory")

    monkeypatch.setattr(spice_module, "Spice", BrokenSpice)
    rows, reason = java.spice_scores({0: ["a"]}, {0: ["b"]})
    assert rows is None and reason == "SPICE failed: OSError: java ran out of memory"


def test_mbmr_is_the_six_metric_mean_worked_by_hand():
    from paddlemix.bird.metrics.aggregate import add_mbmr

    scores = {"BLEU-1": 0.6, "BLEU-2": 0.45, "BLEU-3": 0.3, "BLEU-4": 0.21, "METEOR": 0.24, "ROUGE-L": 0.48, "CIDEr": 2.0}
    # (0.6 + 0.45 + 0.3 + 0.21 + 0.24 + 0.48) / 6 = 2.28 / 6 = 0.38; CIDEr is not part of it.
    assert add_mbmr(dict(scores))["mBMR"] == pytest.approx(0.38, abs=1e-12)
    assert add_mbmr(dict(scores, **{"BLEU-2": None}))["mBMR"] is None
