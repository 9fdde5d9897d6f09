"""LLaVA-Med's QA evaluation set (the "qa50" JSONL) as records inference can run on.

Each line holds ``question_id``, ``image`` (a file name under LLaVA-Med's image folder), ``text``
(the question, often ending in an ``<image>`` placeholder), the reference answer
``gpt4_answer`` and, in the released file, a ``domain`` dict of booleans. Records come out in the
same normalised shape as Med-GRIT's (:func:`paddlemix.datasets.medgrit.load_medgrit`), with task
``QA`` and the modality taken from ``domain``.
"""

import re
from typing import List

from paddlemix.bird.tasks import QA
from paddlemix.datasets.jsonl import first_object, image_path, read_objects
from paddlemix.bird.image_tag import with_image

# LLaVA-Med's domain flags → this project's modality names (SA-Med2D prefixes where they exist).
DOMAIN_MODALITY = {"chest_xray": "x", "ct_scan": "ct", "mri": "mr", "histology": "histology", "gross": "gross"}
_PLACEHOLDER_RE = re.compile(r"\s*<image>\s*$")


class LlavaMedError(ValueError):
    """A malformed LLaVA-Med QA line (the message names the file and line)."""


def is_llava_med_file(path: str) -> bool:
    """True when the first record of a JSON/JSONL file has LLaVA-Med's QA fields."""
    first = first_object(path)
    return isinstance(first, dict) and "question_id" in first and "gpt4_answer" in first


def modality_from_domain(domain) -> str:
    if isinstance(domain, dict):
        hits = [DOMAIN_MODALITY.get(k, k) for k, v in domain.items() if v]
        if len(hits) == 1:
            return hits[0]
    return "unknown"


def load_llava_med_qa(path: str, image_root: str, check_images: bool = True) -> List[dict]:
    """Read the QA JSONL; every problem raises :class:`LlavaMedError` naming file and line."""
    records = []
    seen = {}
    for where, lineno, raw in read_objects(path, LlavaMedError):
        missing = [k for k in ("question_id", "image", "text", "gpt4_answer") if not isinstance(raw, dict) or k not in raw]
        if missing:
            raise LlavaMedError(f"{where}: missing field(s) {', '.join(missing)}")
        qid = str(raw["question_id"])
        if qid in seen:
            raise LlavaMedError(f"{where}: question_id {qid} already used on line {seen[qid]}")
        seen[qid] = lineno
        question = _PLACEHOLDER_RE.sub("", str(raw["text"])).strip()
        if not question:
            raise LlavaMedError(f"{where}: empty question")
        image = str(raw["image"])
        path_on_disk = image_path(where, image_root, image, check_images, LlavaMedError)
        records.append(
            {
                "id": qid,
                "image": image,
                "image_path": path_on_disk,
                "task": QA,
                "modality": modality_from_domain(raw.get("domain")),
                "conversations": [[with_image(question, image), str(raw["gpt4_answer"])]],
            }
        )
    return records
