"""VG (visual grounding) scores: BiRD's Recall@t, one-to-one match precision/recall/F1, Acc@a, mIoU, parse failures."""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from ..box_formats import PIXEL_FORMATS, foreign_formats, read_boxes
from ..boxes import iou, parse_boxes
from ..tasks import VG
from .aggregate import AdditiveMetric, bootstrap_info, ratio, ratio_or_zero, summarise
from .keys import vg_metric_names
from .matching import match_boxes
from .params import Params
from .records import as_text, group_by_modality, modality_order, record_modality


@dataclass
class VGRecordScore:
    n_reference_boxes: int
    n_found: int  # reference boxes matched by some predicted box with IoU > threshold
    first_iou: float  # first predicted box vs first reference box; 0 without a predicted box
    parse_failure: bool  # no box read from the response, or a fragment that could not be read
    n_predicted_boxes: int = 0
    n_matched: int = 0  # one-to-one (Hungarian) pairs with IoU >= threshold
    other_formats: Tuple[str, ...] = ()  # markup of other box formats seen in the response


def vg_record_score(
    annotation,
    response,
    params: Params = Params(),
    width: Optional[float] = None,
    height: Optional[float] = None,
) -> Optional[VGRecordScore]:
    """One VG record's numbers, or None when the reference has no box (the record is skipped).

    The reference is Med-GRIT's grid markup; the response is read in ``params.box_format`` (see
    :mod:`paddlemix.bird.box_formats`; pixel formats need ``width`` and ``height``)."""
    references = parse_boxes(annotation).boxes
    if not references:
        return None
    threshold = params.iou_threshold
    predicted = read_boxes(response, params.box_format, width, height, params.min_pixels, params.max_pixels)
    found = sum(1 for ref in references if any(iou(box, ref) > threshold for box in predicted.boxes))
    first = iou(predicted.boxes[0], references[0]) if predicted.boxes else 0.0
    _, counts = match_boxes(predicted.boxes, references, threshold)
    return VGRecordScore(
        n_reference_boxes=len(references),
        n_found=found,
        first_iou=first,
        parse_failure=not predicted.ok,
        n_predicted_boxes=len(predicted.boxes),
        n_matched=counts.true_positives,
        other_formats=tuple(foreign_formats(response, params.box_format)),
    )


def vg_definitions(params: Params) -> Dict[str, str]:
    """The ``definitions`` entry of a VG metrics file."""
    recall, precision, match_recall, f1 = vg_metric_names(params.iou_threshold)[:4]
    t = f"{params.iou_threshold:g}"
    definitions = {
        recall: (
            f"upstream definition: found reference boxes / all reference boxes, where a reference box "
            f"is found when any box parsed from the response has IoU > {t} with it "
            "(strictly greater); a response without a box finds nothing. Extra predicted boxes cost "
            f"nothing, so read it beside {precision}"
        ),
        precision: (
            f"one-to-one (Hungarian) matching of predicted to reference boxes, a pair allowed at IoU >= {t}, "
            "most pairs first, then the largest total IoU: matched pairs / predicted boxes, both pooled over "
            "the group's records; 0 when the group predicts no box"
        ),
        match_recall: "the same matching: matched pairs / reference boxes, pooled over the group's records",
        f1: "2 * matched / (predicted boxes + reference boxes), pooled over the group's records",
        "mIoU": "mean over records of IoU(first predicted box, first reference box); 0 when no box is parsed",
        "parse_failure_rate": (
            "fraction of records whose response yields no box, or contains a box-like fragment that "
            "could not be read (unclosed pair, non-numeric, degenerate or out-of-range corners)"
        ),
        "n_predicted_boxes / n_reference_boxes": "box counts per modality and in total, beside the scores",
        "box_format": (
            f"responses read as {params.box_format!r} (paddlemix.bird.box_formats) and put on the [0, 1000) grid of "
            "the reference; responses carrying markup of another format are counted per format in "
            "n_records_in_other_box_format and never re-read in it (qwen_vl's lenient bare (x,y),(x,y) pairs "
            "are still read)"
        ),
        "scope": (
            "records whose reference answer has no box are skipped (n_skipped_no_reference_box); "
            "per-modality n counts scored records; boxes are read leniently by paddlemix.bird.boxes "
            "(corners ordered, missing </box> and bare (x,y),(x,y) pairs accepted)"
        ),
    }
    for a in params.acc_thresholds:
        definitions[f"Acc@{a:g}"] = f"per record: IoU(first predicted box, first reference box) >= {a:g} (RefCOCO / MedRegA convention)"
    return definitions


def _image_size(record: dict, where: str) -> Tuple[float, float]:
    width, height = record.get("width"), record.get("height")
    if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
        raise ValueError(
            f"{where}: this box format is in pixels and needs the image size: give the record positive "
            "'width' and 'height' fields, or --image_root to read them from the image"
        )
    return float(width), float(height)


# Columns of the per-record table score_vg builds, then one Acc@a hit column per threshold.
_FOUND, _N_REF, _MATCHED, _N_PRED, _FIRST_IOU, _PARSE_FAILURE, _FIRST_ACC = range(7)


def score_vg(records, params: Params = Params()) -> dict:
    """Visual grounding metrics of records (``annotation`` and ``response`` carry the boxes)."""
    names = vg_metric_names(params.iou_threshold, params.acc_thresholds)
    scored, rows = [], []
    skipped: Dict[str, int] = {}
    other_formats: Dict[str, int] = {}
    for k, record in enumerate(records):
        size = (None, None)
        if params.box_format in PIXEL_FORMATS:
            size = _image_size(record, f"record {k} (id {record.get('id', '?')})")
        result = vg_record_score(record.get("annotation"), as_text(record.get("response")), params, *size)
        if result is None:
            m = record_modality(record)
            skipped[m] = skipped.get(m, 0) + 1
            continue
        for name in result.other_formats:
            other_formats[name] = other_formats.get(name, 0) + 1
        scored.append(record)
        rows.append(
            [result.n_found, result.n_reference_boxes, result.n_matched, result.n_predicted_boxes, result.first_iou,
             float(result.parse_failure)]
            + [float(result.first_iou >= a) for a in params.acc_thresholds]
        )
    table = np.asarray(rows, dtype=np.float64).reshape(-1, _FIRST_ACC + len(params.acc_thresholds))
    found, n_ref, matched, n_pred = (table[:, i : i + 1] for i in (_FOUND, _N_REF, _MATCHED, _N_PRED))
    ones = np.ones((len(table), 1))
    metrics = {
        names[0]: AdditiveMetric(np.hstack([found, n_ref]), ratio),
        names[1]: AdditiveMetric(np.hstack([matched, n_pred]), ratio_or_zero),
        names[2]: AdditiveMetric(np.hstack([matched, n_ref]), ratio),
        names[3]: AdditiveMetric(np.hstack([2 * matched, n_pred + n_ref]), ratio),
    }
    for j, a in enumerate(params.acc_thresholds):
        metrics[f"Acc@{a:g}"] = AdditiveMetric(np.hstack([table[:, _FIRST_ACC + j : _FIRST_ACC + j + 1], ones]), ratio)
    metrics["mIoU"] = AdditiveMetric(np.hstack([table[:, _FIRST_IOU : _FIRST_IOU + 1], ones]), ratio)
    metrics["parse_failure_rate"] = AdditiveMetric(np.hstack([table[:, _PARSE_FAILURE : _PARSE_FAILURE + 1], ones]), ratio)
    groups = group_by_modality(scored)
    out = {"task": VG}
    out.update(summarise(len(records), groups, metrics, params))
    for m, idx in groups.items():
        out["per_modality"][m]["n_predicted_boxes"] = int(table[idx, _N_PRED].sum())
        out["per_modality"][m]["n_reference_boxes"] = int(table[idx, _N_REF].sum())
    out["iou_threshold"] = params.iou_threshold
    out["box_format"] = params.box_format
    if params.box_format == "qwen25_vl":
        out["smart_resize"] = {"factor": 28, "min_pixels": params.min_pixels, "max_pixels": params.max_pixels}
    out["n_reference_boxes"] = int(table[:, _N_REF].sum())
    out["n_predicted_boxes"] = int(table[:, _N_PRED].sum())
    out["n_skipped_no_reference_box"] = int(sum(skipped.values()))
    out["n_skipped_no_reference_box_per_modality"] = {m: skipped[m] for m in modality_order(skipped)}
    out["n_records_in_other_box_format"] = other_formats
    out["definitions"] = vg_definitions(params)
    if params.bootstrap:
        out.update(bootstrap_info(params))
    return out
