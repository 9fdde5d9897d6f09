"""Qwen-VL's own grounding protocol (``eval_mm/evaluate_grounding.py`` in QwenLM/Qwen-VL), kept apart
from BiRD's.

Qwen-VL prompts with the phrase already given and the box opened, ``<img>PATH</img><ref>PHRASE</ref><box>``,
decodes greedily, reads the **first** ``(x1,y1),(x2,y2)`` pair of the continuation, scales it by
/999 to the image and counts a hit at **IoU >= 0.5** with the one reference box; the score is the
hit rate over all records ("Precision@1", micro). BiRD's protocol (the question in, any predicted
box with IoU > 0.5 per reference box, macro over modalities) is :func:`paddlemix.bird.metrics.grounding.score_vg`;
the two never share a number or a key.

IoU is unchanged by scaling each axis, so a record's IoU is computed on image-normalised boxes:
the prediction / 999, the reference in pixels / the image size (RefCOCO-family records, which
carry ``bbox``, ``width`` and ``height``) or its first grid box / 1000 (Med-GRIT VG records).
Its arithmetic is plain Python.
"""

import re
from typing import Dict, List, Optional, Sequence, Tuple

from ..boxes import GRID, parse_boxes
from ..tasks import VG
from .records import modality_order, record_modality

PROTOCOL = "qwen_vl_grounding"
PRECISION = "Precision@1"
IOU_THRESHOLD = 0.5
SCALE = 999  # Qwen-VL divides the written coordinates by 999

# evaluate_grounding.py's pattern: the first "(a,b),(c,d)", no space allowed between the pairs.
_PAIR_RE = re.compile(r"\((.*?)\),\((.*?)\)")


def prefill(phrase: str) -> str:
    """The start of the answer the model continues: ``<ref>PHRASE</ref><box>``."""
    return f"<ref>{phrase}</ref><box>"


def raw_prompt(image: str, phrase: str) -> str:
    """Qwen-VL's raw completion prompt: ``<img>PATH</img><ref>PHRASE</ref><box>``."""
    return f"<img>{image}</img>" + prefill(phrase)


def record_phrase(record: dict) -> Optional[str]:
    """The referring phrase of a record: ``phrase`` (RefCOCO ``sent``), else the reference answer's
    first ``<ref>``; None when there is none."""
    phrase = record.get("phrase")
    if isinstance(phrase, str) and phrase.strip():
        return phrase.strip()
    refs = [r for r in parse_boxes(record.get("annotation", "")).refs if r]
    return refs[0] if refs else None


def first_box(response) -> Tuple[float, float, float, float]:
    """The first ``(x1,y1),(x2,y2)`` of a response as Qwen-VL reads it; (0, 0, 0, 0) when there is
    none or it is not four numbers (a miss)."""
    if not isinstance(response, str):
        return (0.0, 0.0, 0.0, 0.0)
    match = _PAIR_RE.search(response)
    if match is None or "," not in match.group(1) or "," not in match.group(2):
        return (0.0, 0.0, 0.0, 0.0)
    try:
        x1, y1 = (float(v) for v in match.group(1).split(","))
        x2, y2 = (float(v) for v in match.group(2).split(","))
    except ValueError:
        return (0.0, 0.0, 0.0, 0.0)
    return (x1, y1, x2, y2)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """torchvision's ``box_iou`` for one pair: corners taken as written (areas may be negative)."""
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = area_a + area_b - inter
    return inter / union if union != 0 else 0.0


def normalised_reference(record: dict, where: str) -> Tuple[float, float, float, float]:
    bbox, width, height = record.get("bbox"), record.get("width"), record.get("height")
    if bbox is not None:
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and width and height):
            raise ValueError(f"{where}: a 'bbox' reference needs [x1, y1, x2, y2] and positive 'width' / 'height'")
        return (bbox[0] / width, bbox[1] / height, bbox[2] / width, bbox[3] / height)
    boxes = parse_boxes(record.get("annotation", "")).boxes
    if not boxes:
        raise ValueError(f"{where}: no reference box (neither 'bbox' nor a box in 'annotation')")
    return tuple(v / GRID for v in boxes[0])


def record_iou(record: dict, where: str = "record") -> float:
    predicted = tuple(v / SCALE for v in first_box(record.get("response")))
    return box_iou(predicted, normalised_reference(record, where))


DEFINITIONS = {
    PRECISION: (
        "Qwen-VL's grounding protocol (eval_mm/evaluate_grounding.py): the first (x1,y1),(x2,y2) pair of the "
        "response, scaled by /999 to the image, is a hit when its IoU with the reference box is >= 0.5; "
        "hits / records over all records (micro is the protocol's number; macro, the mean over modalities, "
        "is shown for Med-GRIT only). A response without a pair is a miss"
    ),
    "reference": (
        "RefCOCO-family records: 'bbox' [x1, y1, x2, y2] in pixels of a width x height image; Med-GRIT VG "
        "records: the first box of the reference answer on the [0, 1000) grid"
    ),
    "prompt": (
        "the phrase is given: <img>PATH</img><ref>PHRASE</ref><box> (raw) or the ChatML prompt with the "
        "assistant turn pre-filled with <ref>PHRASE</ref><box> (infer.py --protocol qwen_vl_grounding)"
    ),
}


def score_qwen_grounding(records: Sequence[dict]) -> dict:
    """``Precision@1`` of records (``response`` is the continuation after ``<box>``)."""
    if not records:
        raise ValueError("no records to score")
    hits: Dict[str, List[int]] = {}
    for k, record in enumerate(records):
        where = f"record {k} (id {record.get('id', '?')})"
        hits.setdefault(record_modality(record), []).append(int(record_iou(record, where) >= IOU_THRESHOLD))
    per_modality = {m: {"n": len(hits[m]), PRECISION: sum(hits[m]) / len(hits[m])} for m in modality_order(hits)}
    total = sum(sum(h) for h in hits.values())
    return {
        "task": VG,
        "protocol": PROTOCOL,
        "n": len(records),
        "per_modality": per_modality,
        "macro": {PRECISION: sum(s[PRECISION] for s in per_modality.values()) / len(per_modality)},
        "micro": {PRECISION: total / len(records)},
        "n_hits": total,
        "iou_threshold": IOU_THRESHOLD,
        "definitions": dict(DEFINITIONS),
    }
