"""Reading a prediction record for scoring: its modality, its turn, its response (cleaned or as written)."""

from typing import Dict, List, Sequence

import numpy as np

from ..tasks import KNOWN_MODALITIES, modality_of
from .params import CLEAN_MODES


def record_modality(record: dict) -> str:
    """The record's ``modality``, or the SA-Med2D prefix of its ``image`` when absent."""
    modality = record.get("modality")
    if isinstance(modality, str) and modality.strip():
        return modality.strip().lower()
    return modality_of(record.get("image", ""))


def modality_order(modalities) -> List[str]:
    """SA-Med2D modalities in their usual order, then any other prefix alphabetically."""
    present = set(modalities)
    known = [m for m in KNOWN_MODALITIES if m in present]
    return known + sorted(present - set(KNOWN_MODALITIES))


def group_by_modality(records: Sequence[dict]) -> Dict[str, np.ndarray]:
    """Record indices per modality (file order inside each group)."""
    groups: Dict[str, List[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record_modality(record), []).append(i)
    return {m: np.asarray(groups[m], dtype=np.int64) for m in modality_order(groups)}


def record_turn(record: dict) -> int:
    """The turn index a prediction answers (0, the first turn upstream scores, when absent)."""
    return int(record.get("turn") or 0)


def as_text(value) -> str:
    """A response or reference as a string: an absent or null one is an empty answer, scored as a
    miss, never a crash."""
    return value if isinstance(value, str) else ""


def clean_upstream(text: str) -> str:
    """Reproduce what BiRD's upstream eval scripts do to a raw response before scoring.

    Upstream inference decoded with special tokens kept, so its scorers first: cut at the first
    ``.<|im_end|>`` (keeping the full stop), delete ``<|im_end|>`` followed by a newline, keep
    only the text between the first two newlines when there are two (drops a role line or prompt
    echo before the answer and whatever follows it), delete ``<|endoftext|>`` and strip
    surrounding whitespace.
    """
    text = as_text(text)
    end = text.find(".<|im_end|>")
    if end >= 0:
        text = text[:end] + "."
    text = text.replace("<|im_end|>\n", "")
    first = text.find("\n")
    if first >= 0:
        second = text.find("\n", first + 1)
        if second >= 0:
            text = text[first + 1 : second]
    return text.replace("<|endoftext|>", "").strip()


def clean_response(text, mode: str = "none") -> str:
    """``none`` keeps the response as written; ``upstream`` applies :func:`clean_upstream`."""
    if mode == "none":
        return as_text(text)
    if mode == "upstream":
        return clean_upstream(text)
    raise ValueError(f"unknown clean mode {mode!r}; expected one of {', '.join(CLEAN_MODES)}")
