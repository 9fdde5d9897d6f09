"""Does a model use the image? Its VG answers with the real test images against its answers to the
same questions with the images exchanged (``paddlemix.tools.shuffle_images``), paired per record.

Recall@t per modality says how many reference boxes each run found; the pairing says whether the
real image found more on the same questions, record by record: ``better`` records found more
boxes with the real image, ``worse`` fewer, and the two-sided exact sign test on those (ties left
out) gives the chance of a split at least that uneven if the image made no difference.
"""

from dataclasses import dataclass
from math import comb
from typing import Dict, List, NamedTuple, Sequence, Tuple

from .evaluate import read_predictions
from .grounding import vg_record_score
from .params import Params
from .records import as_text, modality_order, record_modality, record_turn

__all__ = ["PairedVG", "markdown", "paired_vg", "paired_vg_files", "sign_test_p"]


@dataclass
class PairedVG:
    """One modality's paired counts."""

    records: int  # questions with a reference box, answered in both runs
    reference_boxes: int
    found_real: int
    found_shuffled: int
    better: int  # records where the real image found more boxes
    worse: int  # ... fewer
    p_value: float  # two-sided exact sign test of better vs worse


def sign_test_p(better: int, worse: int) -> float:
    """Two-sided exact sign test: P(a split at least as uneven as ``better``/``worse``) under p = 1/2."""
    trials = better + worse
    if trials == 0:
        return 1.0
    tail = sum(comb(trials, i) for i in range(min(better, worse) + 1))
    return min(1.0, 2.0 * tail / 2**trials)


class _Found(NamedTuple):
    """One scorable record of one run."""

    modality: str
    found: int  # reference boxes found
    references: int
    annotation: object  # the reference answer, to check both runs scored the same question


def _found_per_record(records: Sequence[dict], params: Params, where: str) -> Dict[Tuple[str, int], _Found]:
    """(id, turn) -> what the record found, for the scorable records."""
    found = {}
    for record in records:
        key = (str(record.get("id")), record_turn(record))
        if key in found:
            raise ValueError(f"{where}: record {key[0]} (turn {key[1]}) appears twice; pairing needs one answer each")
        score = vg_record_score(record.get("annotation"), as_text(record.get("response")), params)
        if score is not None:
            found[key] = _Found(record_modality(record), score.n_found, score.n_reference_boxes, record.get("annotation"))
    return found


def paired_vg(real: Sequence[dict], shuffled: Sequence[dict], params: Params = Params(),
              where: Tuple[str, str] = ("real", "shuffled")) -> Dict[str, PairedVG]:
    """Per modality (SA-Med2D order), the paired counts of two runs' VG prediction records. Both runs
    must answer the same questions (id and turn) against the same references."""
    a = _found_per_record(real, params, where[0])
    b = _found_per_record(shuffled, params, where[1])
    if set(a) != set(b):
        only = sorted(set(a) ^ set(b))
        raise ValueError(
            f"{where[0]} and {where[1]} answer different questions ({len(only)} not in both, e.g. id {only[0][0]} "
            f"turn {only[0][1]}); pair the predictions of one test file with those of its shuffled copy"
        )
    for key in a:
        if a[key].annotation != b[key].annotation:
            raise ValueError(f"record {key[0]} (turn {key[1]}) has another reference answer in {where[1]} than in {where[0]}")
    result = {}
    for modality in modality_order({v.modality for v in a.values()}):
        keys = [k for k, v in a.items() if v.modality == modality]
        better = sum(a[k].found > b[k].found for k in keys)
        worse = sum(a[k].found < b[k].found for k in keys)
        result[modality] = PairedVG(
            records=len(keys),
            reference_boxes=sum(a[k].references for k in keys),
            found_real=sum(a[k].found for k in keys),
            found_shuffled=sum(b[k].found for k in keys),
            better=better,
            worse=worse,
            p_value=sign_test_p(better, worse),
        )
    return result


def paired_vg_files(real_file: str, shuffled_file: str, params: Params = Params()) -> Dict[str, PairedVG]:
    """:func:`paired_vg` of two VG prediction files."""
    _, real = read_predictions(real_file, task="VG")
    _, shuffled = read_predictions(shuffled_file, task="VG")
    return paired_vg(real, shuffled, params, where=(real_file, shuffled_file))


def markdown(paired: Dict[str, PairedVG], threshold: float) -> List[str]:
    """The report's table lines."""
    lines = [
        "| modality | questions | reference boxes | found, real images | found, shuffled | records better / worse | sign test p |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for modality, row in paired.items():
        lines.append(
            f"| {modality} | {row.records} | {row.reference_boxes} | {row.found_real} | {row.found_shuffled} | "
            f"{row.better} / {row.worse} | {row.p_value:.3g} |"
        )
    lines.append(
        f"\nFound: reference boxes with IoU > {threshold:g} to a predicted box (Recall@{threshold:g}'s numerator). "
        "Better / worse: questions on which the real image found more / fewer boxes than the shuffled one; p: "
        "two-sided exact sign test over those (ties left out) — small p with more `better` is evidence of image use."
    )
    return lines
