"""The scoring Params object: each field reaches the scores it names, bad values fail at construction."""

import re

import pytest

from paddlemix.bird.metrics.evaluate import metric_columns
from paddlemix.bird.metrics.params import Params
from paddlemix.bird.metrics.score import score_task

REFERENCE = "<ref>liver</ref><box>(0,0),(100,100)</box>"  # area 10000


def vg(response, turn=0):
    return dict(image="ct_00--ds--case--z_0001.png", annotation=REFERENCE, response=response, turn=turn)


def test_acc_thresholds_name_and_decide_the_acc_scores():
    # (0,0),(60,100) covers 6000 of the reference's 10000 and nothing outside it: IoU 0.6.
    out = score_task([vg("<box>(0,0),(60,100)</box>")], "VG", Params(acc_thresholds=(0.5, 0.7)))
    assert out["micro"]["Acc@0.5"] == 1.0 and out["micro"]["Acc@0.7"] == 0.0
    assert "Acc@0.25" not in out["micro"] and out["micro"]["mIoU"] == pytest.approx(0.6)
    # Reports read the thresholds back from the file's own keys.
    assert [c for c in metric_columns(out) if c.startswith("Acc@")] == ["Acc@0.5", "Acc@0.7"]


def test_per_turn_can_be_switched_off():
    records = [vg("<box>(0,0),(100,100)</box>", turn=0), vg("no box", turn=1)]
    split = score_task(records, "VG")
    assert split["per_turn"]["0"]["micro"]["Recall@0.5"] == 1.0
    assert split["per_turn"]["1"]["micro"]["Recall@0.5"] == 0.0
    assert "per_turn" not in score_task(records, "VG", Params(per_turn=False))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(iou_threshold=1.5), "iou_threshold must be in [0, 1]"),
        (dict(acc_thresholds=(0.5, -0.1)), "acc_thresholds must lie in [0, 1]"),
        (dict(bootstrap=-1), "bootstrap must be >= 0"),
        (dict(clean="strip"), "unknown clean mode 'strip'"),
        (dict(box_format="yolo"), "unknown box format 'yolo'"),
    ],
)
def test_bad_values_fail_when_the_params_are_made(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Params(**fields)
