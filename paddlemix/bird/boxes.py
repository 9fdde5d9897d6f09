"""Boxes in text: Qwen-VL's ``<ref>label</ref><box>(x1,y1),(x2,y2)</box>`` on a [0, 1000) grid.

A pixel box is ``(x1, y1, x2, y2)`` in continuous image coordinates: the top-left corner of the
first pixel and the bottom-right corner of the last one, so the tight box of a mask whose
foreground spans columns ``c0..c1`` is ``x1 = c0``, ``x2 = c1 + 1``. On the text grid a coordinate
is ``min(999, floor(x / size * 1000))``; a box touching the right border therefore ends at 999.

Parsing is lenient because model output is not trusted: it never raises, it accepts missing
``</box>``, spaces, and bare ``(x,y),(x,y)`` pairs, and it reports the fragments it could not read.
This module imports only the standard library (and numpy nowhere), so any scorer can use it.
"""

import math
import re
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

GRID = 1000

Box = Tuple[float, float, float, float]

_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_PAIR = r"\(" + _NUM + r"," + _NUM + r"\)"
# Two corner points, optionally separated by a comma.
_BOX_RE = re.compile(_PAIR + r"\s*,?\s*" + _PAIR)
_REF_RE = re.compile(r"<ref>(.*?)(?:</ref>|(?=<box>)|$)", re.S)
_BOX_TAG_RE = re.compile(r"<box>(.*?)(?:</box>|(?=<box>)|(?=<ref>)|$)", re.S)


def to_grid(value: float, size: float) -> int:
    """One pixel coordinate → the [0, 1000) grid of ``size`` pixels."""
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    return max(0, min(GRID - 1, math.floor(value / size * GRID)))


def from_grid(value: float, size: float) -> float:
    """One grid coordinate → pixels (the left/top edge of its cell)."""
    return value / GRID * size


def box_to_grid(box: Sequence[float], width: float, height: float) -> Tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return (to_grid(x1, width), to_grid(y1, height), to_grid(x2, width), to_grid(y2, height))


def grid_to_box(box: Sequence[float], width: float, height: float) -> Box:
    x1, y1, x2, y2 = box
    return (from_grid(x1, width), from_grid(y1, height), from_grid(x2, width), from_grid(y2, height))


def format_box(grid_box: Sequence[int]) -> str:
    """A grid box as Qwen-VL writes it: ``<box>(x1,y1),(x2,y2)</box>``."""
    x1, y1, x2, y2 = (int(v) for v in grid_box)
    return f"<box>({x1},{y1}),({x2},{y2})</box>"


def format_ref_boxes(label: Optional[str], grid_boxes: Sequence[Sequence[int]]) -> str:
    """``<ref>label</ref>`` followed by one ``<box>`` per box (the label is omitted when None)."""
    ref = f"<ref>{label}</ref>" if label is not None else ""
    return ref + "".join(format_box(b) for b in grid_boxes)


def pixel_boxes_to_text(label: Optional[str], boxes: Sequence[Sequence[float]], width: float, height: float) -> str:
    """Pixel boxes of one phrase → the answer text on the grid."""
    return format_ref_boxes(label, [box_to_grid(b, width, height) for b in boxes])


@dataclass
class ParsedBoxes:
    """What could be read out of a response.

    ``boxes`` are grid boxes with ordered corners, ``refs[i]`` is the phrase that precedes
    ``boxes[i]`` (None if there is none), ``unparsed`` lists fragments that looked like a box
    but could not be read (or were degenerate).
    """

    boxes: List[Box] = field(default_factory=list)
    refs: List[Optional[str]] = field(default_factory=list)
    unparsed: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.boxes) and not self.unparsed


def ordered_box(x1: float, y1: float, x2: float, y2: float) -> Optional[Box]:
    """The box with its corners ordered, or None when it has no area."""
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def corner_pair_spans(text: str) -> List[Tuple[int, int, Optional[Box]]]:
    """``(start, end, box)`` of every ``(x1,y1),(x2,y2)`` pair in ``text``, in text order, with the
    pair's character span; ``box`` has ordered corners, or is None when degenerate. The same grammar
    :func:`parse_boxes` reads, for callers that need to know where each box was written."""
    return [(m.start(), m.end(), _read_box(m)) for m in _BOX_RE.finditer(text)]


def written_corners(content: str) -> Optional[Tuple[str, str, str, str]]:
    """The four coordinates of a ``<box>`` tag's content exactly as written, when the content is one
    corner pair in this module's grammar (surrounding spaces allowed), else None. For strict
    validators of reference data; :func:`parse_boxes` reads model output with the same grammar."""
    m = _BOX_RE.fullmatch(content.strip())
    return None if m is None else m.groups()


def _read_box(match: "re.Match") -> Optional[Box]:
    return ordered_box(*(float(v) for v in match.groups()))


def parse_boxes(text) -> ParsedBoxes:
    """Every box in a model response, leniently. Never raises."""
    result = ParsedBoxes()
    if not isinstance(text, str):
        if text is not None:
            result.unparsed.append(repr(text)[:200])
        return result
    try:
        _parse_into(text, result)
    except Exception as exc:  # defensive: a parser for untrusted text must not crash a scorer
        result.unparsed.append(f"{type(exc).__name__}: {text[:200]}")
    return result


def _collect_pairs(text: str, label: Optional[str], result: ParsedBoxes) -> bool:
    """Add every corner pair in ``text`` under ``label``; True if any pair was seen."""
    found = False
    for m in _BOX_RE.finditer(text):
        found = True
        box = _read_box(m)
        if box is None:
            result.unparsed.append(m.group(0))
        else:
            result.boxes.append(box)
            result.refs.append(label)
    return found


def _parse_into(text: str, result: ParsedBoxes) -> None:
    # Each <box> tag takes the nearest <ref> phrase before it.
    refs = [(m.start(), m.group(1).strip()) for m in _REF_RE.finditer(text)]
    for tag in _BOX_TAG_RE.finditer(text):
        label = None
        for pos, phrase in refs:
            if pos < tag.start():
                label = phrase
        if not _collect_pairs(tag.group(1), label, result):
            result.unparsed.append(tag.group(0))
    # Bare pairs written outside any tag still count.
    _collect_pairs(_BOX_TAG_RE.sub(" ", text), None, result)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes with ordered corners (any common unit)."""
    ix1, iy1 = max(a[0], b[0]), max(a[1], b[1])
    ix2, iy2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0
