"""Image-blind baselines that say what "learned" means on a test set.

* VG — the class-mean box: answer every grounding question with the mean of all training boxes
  of the asked class (the overall mean box for a class never seen in training).
* RO — the majority class: answer every referring question with the most frequent training name.

They write ordinary prediction JSONL, so the same evaluator scores them as it scores a model.
``shuffle_images`` makes the image-blind ablation of a model itself: its test images exchanged
(for images of another case: another slab or volume).
"""

import os
import random
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from .boxes import format_ref_boxes, parse_boxes
from .image_tag import split_image_prefix, with_image
from .predictions import prediction_record
from .tasks import RO, VG, modality_of

Box = Tuple[float, float, float, float]


def _turns(records: Sequence[dict], task: str):
    for rec in records:
        if rec.get("task") == task:
            for question, answer in rec["conversations"]:
                yield rec, question, answer


def _asked_label(answer: str) -> Optional[str]:
    parsed = parse_boxes(answer)
    return parsed.refs[0] if parsed.refs and parsed.refs[0] else None


def class_mean_boxes(train_records: Sequence[dict]) -> Tuple[Dict[str, Box], Box]:
    """Mean grid box per class over every training VG box, and the mean over all classes."""
    per_class: Dict[str, List[Box]] = defaultdict(list)
    for _, _, answer in _turns(train_records, VG):
        parsed = parse_boxes(answer)
        for label, box in zip(parsed.refs, parsed.boxes):
            if label:
                per_class[label].append(box)
    every = [b for boxes in per_class.values() for b in boxes]
    if not every:
        raise ValueError("no VG boxes in the training records: cannot build the class-mean-box baseline")

    def mean(boxes):
        return tuple(round(sum(b[i] for b in boxes) / len(boxes)) for i in range(4))

    return {label: mean(boxes) for label, boxes in per_class.items()}, mean(every)


def majority_class(train_records: Sequence[dict]) -> str:
    counts = Counter(answer.strip() for _, _, answer in _turns(train_records, RO))
    if not counts:
        raise ValueError("no RO answers in the training records: cannot build the majority baseline")
    return counts.most_common(1)[0][0]


def _prediction(rec: dict, question: str, annotation: str, response: str, task: str) -> dict:
    return prediction_record(id=rec["id"], image=rec.get("image"), question=question, annotation=annotation,
                             response=response, task=task, modality=rec.get("modality"))


def vg_baseline(train_records: Sequence[dict], test_records: Sequence[dict]) -> List[dict]:
    """Class-mean-box predictions for the first turn of every test VG record."""
    means, overall = class_mean_boxes(train_records)
    rows = []
    for rec in test_records:
        question, annotation = rec["conversations"][0]
        label = _asked_label(annotation)
        box = means.get(label, overall)
        rows.append(_prediction(rec, question, annotation, format_ref_boxes(label, [box]), VG))
    return rows


def ro_baseline(train_records: Sequence[dict], test_records: Sequence[dict]) -> List[dict]:
    """Majority-class predictions for the first turn of every test RO record."""
    name = majority_class(train_records)
    return [_prediction(rec, *rec["conversations"][0], name, RO) for rec in test_records]


def case_of(image: str) -> str:
    """The case (volume, slab or tile) of an SA-Med2D image name, ``<modality_sub>--<dataset>--<case>--<slice>``:
    its first three fields (``mr_t1--colin27aal--yslab05--y_0080.png`` → ``mr_t1--colin27aal--yslab05``).
    A name of another form is its own case."""
    name = os.path.basename(str(image))
    parts = name.split("--")
    return "--".join(parts[:3]) if len(parts) >= 4 else name


def shuffle_images(records: Sequence[dict], seed: int = 0) -> Tuple[List[dict], Dict[str, Tuple[int, int]]]:
    """The image-blind ablation of a trained model: the same test records with their images
    exchanged among records of the same modality, every image moved to another image's records,
    and to an image of another case (:func:`case_of`) wherever the case sizes allow.

    Questions, references and ids stay, so a model that reads the image loses accuracy and one that
    answers from the question alone does not. Another case matters: the slices of one slab are
    neighbours (a few pixels apart in the volume), so a question shown the next slice of its own
    slab sees nearly its own image and stays answerable. When no case holds more than half of a
    modality's images every image goes to another case; otherwise every image outside the largest
    case goes into it and as many of its images go out (a single case: each image to another of its
    images). Records carry ``image`` (a path relative to the image root); the first
    question's ``<img>…</img>`` tag, if any, is rewritten to match. Returns the new records and, per
    modality, (distinct images exchanged, of them moved to another case); a modality with a single
    image cannot be shuffled: (0, 0), its records unchanged."""
    missing = [rec.get("id", i) for i, rec in enumerate(records) if not rec.get("image")]
    if missing:
        raise ValueError(f"records without an 'image' path cannot be shuffled: {missing[:5]}")
    by_modality: Dict[str, Dict[str, List[str]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        cases = by_modality[modality_of(rec["image"])]
        images = cases[case_of(rec["image"])]
        if rec["image"] not in images:
            images.append(rec["image"])
    rng = random.Random(seed)
    moved: Dict[str, str] = {}
    exchanged: Dict[str, Tuple[int, int]] = {}
    for modality, cases in sorted(by_modality.items()):
        # The cases largest first (equal sizes in a random order), each case's images together in a
        # random order. A cyclic shift by the largest case's size, when that is at most half the
        # images, sends every image out of its case (a case is one run no longer than the shift);
        # otherwise a shift by the number of other images sends each of them into the largest case
        # and as many of the largest case's out, the most that can cross.
        names = sorted(cases)
        rng.shuffle(names)
        names.sort(key=lambda name: -len(cases[name]))
        order = []
        for name in names:
            images = sorted(cases[name])
            rng.shuffle(images)
            order.extend(images)
        n, largest = len(order), max(len(images) for images in cases.values())
        if n < 2:
            moved.update(zip(order, order))
            exchanged[modality] = (0, 0)
            continue
        shift = largest if 2 * largest <= n else max(1, n - largest)  # one case: to another of its images
        moved.update(zip(order, order[shift:] + order[:shift]))
        exchanged[modality] = (n, sum(case_of(a) != case_of(moved[a]) for a in order))
    out = []
    for rec in records:
        new_image = moved[rec["image"]]
        conversations = [list(turn) for turn in rec["conversations"]]
        if split_image_prefix(conversations[0][0])[0] is not None:
            conversations[0][0] = with_image(conversations[0][0], new_image)
        out.append(dict(rec, image=new_image, conversations=conversations))
    return out, exchanged
