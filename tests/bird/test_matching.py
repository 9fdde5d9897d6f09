"""One-to-one box matching, and what it shows that BiRD's Recall@0.5 and RO accuracy hide."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from paddlemix.bird.metrics.matching import match_boxes, max_weight_assignment
from paddlemix.bird.metrics.score import score_task

A = (0, 0, 100, 100)


def grid(box):
    return "<box>({},{}),({},{})</box>".format(*box)


def rec(modality, annotation, response, **extra):
    return dict(image=f"{modality}_00--ds--case--z_0001.png", annotation=annotation, response=response, **extra)


def test_assignment_equals_scipy_on_random_matrices():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = rng.integers(1, 7, size=2)
        weights = rng.random((n, m)) * (rng.random((n, m)) < 0.6)
        rows, cols = linear_sum_assignment(weights, maximize=True)
        pairs = max_weight_assignment(weights)
        assert sum(weights[p] for p in pairs) == pytest.approx(weights[rows, cols].sum(), abs=1e-12)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        assert all(weights[p] > 0 for p in pairs)


def test_matching_prefers_more_pairs_over_a_larger_total_iou():
    # p0 overlaps r0 perfectly and r1 at 0.5; p1 overlaps only r0 at 0.5. Greedy best-IoU matching
    # pairs p0-r0 and leaves one pair; the one-to-one maximum pairs p0-r1 and p1-r0.
    r0, r1 = (0, 0, 100, 100), (0, 0, 100, 50)
    p0, p1 = (0, 0, 100, 100), (0, 50, 100, 100)
    pairs, counts = match_boxes([p0, p1], [r0, r1])
    assert pairs == [(0, 1), (1, 0)]
    assert (counts.true_positives, counts.false_positives, counts.misses) == (2, 0, 0)


def test_one_box_cannot_match_two_references():
    pairs, counts = match_boxes([(0, 0, 100, 100)], [(0, 0, 100, 100), (0, 0, 100, 90)])
    assert len(pairs) == 1 and (counts.false_positives, counts.misses) == (0, 1)
    _, none = match_boxes([], [(0, 0, 10, 10)])
    assert (none.true_positives, none.n_predicted, none.misses) == (0, 0, 1)


def test_box_spraying_drives_recall_to_one_while_precision_drops():
    # Reference: one box per record. The sprayer writes 100 boxes on a 10x10 lattice of 100-wide
    # cells, so one of them always equals the reference cell.
    lattice = [(x, y, x + 100, y + 100) for x in range(0, 1000, 100) for y in range(0, 1000, 100)]
    lattice = [tuple(min(v, 999) for v in box) for box in lattice]
    spray = "<ref>lesion</ref>" + "".join(grid(b) for b in lattice)
    references = [(200, 300, 300, 400), (0, 0, 100, 100), (500, 800, 600, 900)]
    records = [rec("ct", "<ref>lesion</ref>" + grid(r), spray) for r in references]
    out = score_task(records, "VG")["micro"]
    assert out["Recall@0.5"] == 1.0
    assert out["match_recall@0.5"] == 1.0
    assert out["match_precision@0.5"] == pytest.approx(3 / 300)  # 3 matched of 300 predicted boxes
    assert out["match_F1@0.5"] == pytest.approx(2 * 3 / (300 + 3))
    assert out["Acc@0.5"] == pytest.approx(1 / 3)  # the first sprayed box hits only the (0,0) record
    honest = score_task([rec("ct", r["annotation"], r["annotation"]) for r in records], "VG")["micro"]
    assert honest["match_precision@0.5"] == 1.0 == honest["Recall@0.5"]


def test_listing_every_class_name_drives_ro_accuracy_up_but_not_exact_match():
    classes = ["liver", "left kidney", "right kidney", "spleen", "pancreas"]
    listing = ", ".join(classes)
    records = [rec("ct", name, listing) for name in classes]
    out = score_task(records, "RO")["micro"]
    assert out["accuracy"] == 1.0  # every reference word occurs in the list
    assert out["exact_match"] == 0.0
    naming = score_task([rec("ct", name, name) for name in classes], "RO")["micro"]
    assert naming == {"accuracy": 1.0, "exact_match": 1.0}


def test_multi_turn_predictions_are_scored_per_turn():
    B = (200, 200, 300, 300)
    records = [
        rec("ct", grid(A), grid(A), turn=0, id="1"),
        rec("ct", grid(B), grid(A), turn=1, id="1"),
        rec("mr", grid(A), grid(A), turn=0, id="2"),
        rec("mr", grid(B), grid(B), turn=1, id="2"),
        rec("mr", grid(B), grid(B), turn=2, id="2"),
    ]
    out = score_task(records, "VG")
    assert sorted(out["per_turn"]) == ["0", "1", "2"]
    assert out["per_turn"]["0"]["micro"]["Recall@0.5"] == 1.0 and out["per_turn"]["0"]["n"] == 2
    assert out["per_turn"]["1"]["per_modality"]["ct"]["Recall@0.5"] == 0.0
    assert out["per_turn"]["1"]["per_modality"]["mr"]["Recall@0.5"] == 1.0
    assert out["per_turn"]["1"]["macro"]["Recall@0.5"] == 0.5
    assert out["per_turn"]["2"]["n"] == 1 and list(out["per_turn"]["2"]["per_modality"]) == ["mr"]
    assert out["micro"]["Recall@0.5"] == pytest.approx(4 / 5)  # all turns pooled
    assert "per_turn" not in score_task(records[:1], "VG")


def test_the_summary_flags_sprayed_boxes_and_listed_names(tmp_path):
    import json

    from paddlemix.bird.metrics.evaluate import format_table, score_warnings
    from paddlemix.bird.metrics.report import write_summary

    spray = "".join(grid((x, 0, x + 100, 100)) for x in range(0, 900, 100))
    vg = score_task([rec("ct", grid(A), spray)], "VG")
    ro = score_task([rec("ct", "liver", "liver, spleen, left kidney"), rec("ct", "spleen", "liver, spleen")], "RO")
    (vg_warning,) = score_warnings(vg)
    assert "Recall@0.5 1.0000 but match_precision@0.5 0.1111 (9 predicted boxes for 1 reference boxes)" in vg_warning
    (ro_warning,) = score_warnings(ro)
    assert ro_warning.startswith("RO: accuracy 1.0000 but exact_match 0.0000")
    assert "warning: VG: Recall@0.5" in format_table(vg)
    assert score_warnings(score_task([rec("ct", grid(A), grid(A))], "VG")) == []
    paths = []
    for metrics in (vg, ro):
        paths.append(str(tmp_path / f"metrics_{metrics['task']}.json"))
        with open(paths[-1], "w") as handle:
            json.dump(metrics, handle)
    md_path, _ = write_summary(paths, str(tmp_path / "out"))
    md = open(md_path).read()
    assert f"**Check:** {vg_warning}" in md and f"**Check:** {ro_warning}" in md
