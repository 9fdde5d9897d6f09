"""The paired real-vs-shuffled VG comparison: counts per modality by hand, the sign test against its
binomial sums written out, refusals when the two files do not answer the same questions."""

import json

import pytest

from paddlemix.bird.metrics.image_use import paired_vg, paired_vg_files, sign_test_p
from paddlemix.bird.metrics.report import write_comparison
from paddlemix.tools.report import main

A = "<box>(100,100),(300,300)</box>"  # reference box A
B = "<box>(600,600),(900,900)</box>"  # reference box B, far from A
NEAR_A = "<box>(110,110),(300,300)</box>"  # IoU 0.9 with A
MISS = "<box>(400,400),(500,500)</box>"  # overlaps neither


def rec(id_, modality, annotation, response, turn=0):
    return {"id": id_, "turn": turn, "modality": modality, "task": "VG", "annotation": annotation, "response": response}


def test_sign_test_matches_the_binomial_sums():
    # 15 better, 3 worse of 18: 2 * (C(18,0)+C(18,1)+C(18,2)+C(18,3)) / 2^18 = 2 * 988 / 262144
    assert sign_test_p(15, 3) == pytest.approx(2 * (1 + 18 + 153 + 816) / 2**18)
    assert sign_test_p(3, 15) == sign_test_p(15, 3)
    assert sign_test_p(2, 2) == 1.0 and sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)


def test_paired_counts_per_modality():
    real = [
        rec("m1", "mr", A + B, NEAR_A + B),  # 2 found
        rec("m2", "mr", A, NEAR_A),  # 1
        rec("m3", "mr", A, MISS),  # 0
        rec("c1", "ct", A, NEAR_A),  # 1
        rec("c1", "ct", B, MISS, turn=1),  # 0 (same id, another turn)
        rec("x1", "mr", "no box here", "anything"),  # no reference box: not paired
    ]
    shuffled = [
        rec("m1", "mr", A + B, MISS),  # 0 -> real better
        rec("m2", "mr", A, NEAR_A),  # 1 -> tie
        rec("m3", "mr", A, NEAR_A),  # 1 -> real worse
        rec("c1", "ct", A, MISS),  # 0 -> real better
        rec("c1", "ct", B, MISS, turn=1),  # tie
        rec("x1", "mr", "no box here", "other"),
    ]
    paired = paired_vg(real, shuffled)
    assert list(paired) == ["ct", "mr"]  # SA-Med2D order
    mr, ct = paired["mr"], paired["ct"]
    assert (mr.records, mr.reference_boxes, mr.found_real, mr.found_shuffled, mr.better, mr.worse) == (3, 4, 3, 2, 1, 1)
    assert mr.p_value == 1.0
    assert (ct.records, ct.reference_boxes, ct.found_real, ct.found_shuffled, ct.better, ct.worse) == (2, 2, 1, 0, 1, 0)
    assert ct.p_value == 1.0  # one record: 2 * 1/2


def test_files_that_answer_other_questions_are_refused(tmp_path):
    real = [rec("m1", "mr", A, NEAR_A), rec("m2", "mr", A, NEAR_A)]
    with pytest.raises(ValueError, match=r"answer different questions \(1 not in both, e\.g\. id m2 turn 0\)"):
        paired_vg(real, real[:1])
    with pytest.raises(ValueError, match="another reference answer"):
        paired_vg(real, [rec("m1", "mr", B, NEAR_A), rec("m2", "mr", A, NEAR_A)])
    with pytest.raises(ValueError, match="m1 \\(turn 0\\) appears twice"):
        paired_vg(real + real[:1], real)


def test_report_writes_the_paired_table(tmp_path):
    real = [rec(f"m{i}", "mr", A, NEAR_A) for i in range(6)]
    shuffled = [rec(f"m{i}", "mr", A, MISS if i < 5 else NEAR_A) for i in range(6)]
    paths = []
    for name, rows in (("real", real), ("shuffled", shuffled)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    paired = paired_vg_files(*paths)["mr"]
    assert (paired.found_real, paired.found_shuffled, paired.better, paired.worse) == (6, 1, 5, 0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics_VG.json").write_text(json.dumps(
        {"task": "VG", "n": 6, "per_modality": {"mr": {"n": 6, "Recall@0.5": 1.0}}, "macro": {"Recall@0.5": 1.0},
         "micro": {"Recall@0.5": 1.0}}))
    md, _ = write_comparison([("trained", str(run_dir))], str(tmp_path / "out"), image_use=tuple(paths))
    text = open(md).read()
    assert "## VG image use, paired per question" in text
    assert "| mr | 6 | 6 | 6 | 1 | 5 / 0 | 0.0625 |" in text  # p = 2 / 2^5
    with pytest.raises(SystemExit) as exc:  # a usage error: --image_use needs --compare
        main(["--out_dir", str(tmp_path / "o2"), "--image_use", *paths])
    assert exc.value.code == 2
