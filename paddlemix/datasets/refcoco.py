"""Qwen-VL's RefCOCO-family grounding JSONL (refcoco / refcoco+ / refcocog splits) as inference records.

Each line of the files Qwen-VL's ``eval_mm/evaluate_grounding.py`` reads holds ``image`` (a path
under the COCO image folder), ``sent`` (the referring phrase), ``bbox`` (the referred box in pixels
of the original image, ``[x1, y1, x2, y2]``, the form that script passes to ``box_iou``),
``height`` and ``width``. Records come out in the normalised Med-GRIT shape (see
:func:`paddlemix.datasets.medgrit.load_medgrit`), task ``VG``, with the phrase, pixel box and image
size kept for the Qwen-VL grounding protocol (:mod:`paddlemix.bird.metrics.qwen_grounding`), and the
reference answer written on the Med-GRIT grid so BiRD's scorer can read it as well.
"""

from typing import List

from paddlemix.bird.boxes import pixel_boxes_to_text
from paddlemix.bird.tasks import VG, modality_of
from paddlemix.datasets.jsonl import first_object, image_path, read_objects
from paddlemix.bird.image_tag import with_image

FIELDS = ("image", "sent", "bbox", "height", "width")


class RefCocoError(ValueError):
    """A malformed RefCOCO-family line (the message names the file and line)."""


def is_refcoco_file(path: str) -> bool:
    """True when the first line of a JSONL file has the RefCOCO-family fields ``sent`` and ``bbox``."""
    first = first_object(path)
    return isinstance(first, dict) and "sent" in first and "bbox" in first


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_refcoco(path: str, image_root: str, check_images: bool = True) -> List[dict]:
    """Read the JSONL; every problem raises :class:`RefCocoError` naming file and line."""
    records = []
    for where, lineno, raw in read_objects(path, RefCocoError):
        missing = [k for k in FIELDS if not isinstance(raw, dict) or k not in raw]
        if missing:
            raise RefCocoError(f"{where}: missing field(s) {', '.join(missing)}")
        width, height, bbox = raw["width"], raw["height"], raw["bbox"]
        if not (_number(width) and _number(height) and width > 0 and height > 0):
            raise RefCocoError(f"{where}: width and height must be positive numbers, got {width!r}, {height!r}")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
            raise RefCocoError(f"{where}: bbox must be [x1, y1, x2, y2] in pixels, got {bbox!r}")
        if not (0 <= bbox[0] < bbox[2] <= width and 0 <= bbox[1] < bbox[3] <= height):
            raise RefCocoError(f"{where}: bbox {bbox} is not a box inside the {width}x{height} image")
        sent = str(raw["sent"]).strip()
        if not sent:
            raise RefCocoError(f"{where}: empty 'sent' (the referring phrase)")
        image = str(raw["image"])
        path_on_disk = image_path(where, image_root, image, check_images, RefCocoError)
        records.append(
            {
                "id": str(raw.get("id", lineno - 1)),
                "image": image,
                "image_path": path_on_disk,
                "task": VG,
                "modality": modality_of(image),
                "conversations": [[with_image(sent, image), pixel_boxes_to_text(sent, [bbox], width, height)]],
                "phrase": sent,
                "bbox": [float(v) for v in bbox],
                "width": width,
                "height": height,
            }
        )
    return records
