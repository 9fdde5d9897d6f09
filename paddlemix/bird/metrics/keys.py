"""The metric keys of each task, in report order (docs/ARCHITECTURE.md, "Metrics files": the names they carry)."""

from typing import Sequence, Tuple

from ..tasks import RO, VG, check_task
from .params import ACC_THRESHOLDS

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
# The paper's "mBMR" is not spelled out; ClinKD (arXiv 2502.05928), the follow-up that scores
# Med-GRIT-270k with a copy of BiRD's scripts, computes it in its test_metric/eval_MII.py as the
# mean of these six, each first averaged over modalities.
MBMR = "mBMR"
MBMR_PARTS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L")
RO_METRICS = ("accuracy", "exact_match")


def vg_metric_names(iou_threshold: float = 0.5, acc_thresholds: Sequence[float] = ACC_THRESHOLDS) -> Tuple[str, ...]:
    """VG keys in report order; ``Recall`` and the one-to-one ``match_*`` scores carry the
    threshold in their name (``Recall@0.5`` at the default), the precision beside the recall."""
    t = f"{iou_threshold:g}"
    return (
        (f"Recall@{t}", f"match_precision@{t}", f"match_recall@{t}", f"match_F1@{t}")
        + tuple(f"Acc@{a:g}" for a in acc_thresholds)
        + ("mIoU", "parse_failure_rate")
    )


def metric_names(task: str, iou_threshold: float = 0.5, acc_thresholds: Sequence[float] = ACC_THRESHOLDS) -> Tuple[str, ...]:
    """The metric keys of one task, in the order reports show them."""
    task = check_task(task)
    if task == VG:
        return vg_metric_names(iou_threshold, acc_thresholds)
    if task == RO:
        return RO_METRICS
    return CAPTION_METRICS + (MBMR,)
