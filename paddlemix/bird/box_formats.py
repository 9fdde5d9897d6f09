"""Box formats of other model families, read onto the Med-GRIT [0, 1000) grid of the record's image.

So predictions written by another model score with BiRD's rules on the same test files
(``eval.py --box_format NAME``). The names and texts are a contract (docs/ARCHITECTURE.md, "Box
text"):

=========  ================================================================  =====================
name       text the model writes                                             coordinates
=========  ================================================================  =====================
qwen_vl    ``<ref>…</ref><box>(x1,y1),(x2,y2)</box>`` (Qwen-VL, arXiv         [0, 1000) grid
           2308.12966; BiRD)
qwen2_vl   ``<|object_ref_start|>…<|object_ref_end|><|box_start|>(x1,y1),     0–1000 (Qwen2-VL,
           (x2,y2)<|box_end|>``                                                arXiv 2409.12191)
qwen25_vl  JSON objects ``{"bbox_2d": [x1, y1, x2, y2], "label": …}`` (a       pixels of the
           list, optionally in a ```` ```json ```` fence) or the qwen2_vl     ``smart_resize``\\ d
           tags (Qwen2.5-VL, arXiv 2502.13923)                                input
qwen3_vl   the same JSON ``bbox_2d`` objects (Qwen3-VL)                      0–1000
internvl   ``<ref>…</ref><box>[[x1, y1, x2, y2], …]</box>`` (InternVL;        0–1000
           MedRegA, arXiv 2410.18387)
norm01     inline ``[x1, y1, x2, y2]`` floats (Shikra, arXiv 2306.15195)      [0, 1]
pixels     the qwen_vl markup                                                pixels of the
                                                                             original image
=========  ================================================================  =====================

0–1000 values are put on the grid as they are, with 1000 (a box touching the border) read as
999, the grid's last cell. Pixel values go through the grid rule of :mod:`paddlemix.bird.boxes`
(``min(999, floor(x / size * 1000))``), Qwen2.5-VL's against the size ``smart_resize`` gives the
original image (factor 28, ``min_pixels`` / ``max_pixels``, the Qwen2.5-VL processor's defaults
3136 / 12845056). A value outside its format's range is reported as unparsed, never clipped into
a box; a response written in another format than the chosen one is counted, never re-read in a
guessed format. Standard library only.
"""

import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

from .boxes import GRID, ParsedBoxes, ordered_box, parse_boxes, to_grid

BOX_FORMATS = ("qwen_vl", "qwen2_vl", "qwen25_vl", "qwen3_vl", "internvl", "norm01", "pixels")
DEFAULT_BOX_FORMAT = "qwen_vl"
PIXEL_FORMATS = frozenset({"qwen25_vl", "pixels"})  # need the image's width and height

SMART_RESIZE_FACTOR = 28
DEFAULT_MIN_PIXELS = 56 * 56  # 3136
DEFAULT_MAX_PIXELS = 28 * 28 * 16384  # 12845056
_MAX_ASPECT_RATIO = 200

_NUM = r"(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)"
_PAIR_RE = re.compile(r"\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\)\s*,?\s*\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\)")
_QUAD_RE = re.compile(r"\[\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*\]")
_QWEN2_REF_RE = re.compile(r"<\|object_ref_start\|>(.*?)(?:<\|object_ref_end\|>|$)", re.S)
_QWEN2_BOX_RE = re.compile(r"<\|box_start\|>(.*?)(?:<\|box_end\|>|(?=<\|box_start\|>)|$)", re.S)
_INTERNVL_REF_RE = re.compile(r"<ref>(.*?)(?:</ref>|$)", re.S)
_INTERNVL_BOX_RE = re.compile(r"<box>(.*?)(?:</box>|(?=<box>)|$)", re.S)
_JSON_OBJECT_RE = re.compile(r"\{[^{}]*\}")
_BBOX_2D_RE = re.compile(r'"bbox_2d"\s*:\s*\[([^\[\]]*)\]?')
_LABEL_RE = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"')

# What each family's text looks like, to say which format a response was written in.
SIGNATURES: Dict[str, "re.Pattern"] = {
    "qwen_vl": re.compile(r"<box>\s*\("),
    "qwen2_vl": re.compile(r"<\|box_start\|>"),
    "bbox_2d JSON (qwen25_vl, qwen3_vl)": re.compile(r'"bbox_2d"'),
    "internvl": re.compile(r"<box>\s*\[\s*\["),
    "norm01": re.compile(r"\[\s*[01]?\.\d+\s*,\s*[01]?\.\d+\s*,"),
}
_OWN_SIGNATURES = {
    "qwen_vl": ("qwen_vl",),
    "pixels": ("qwen_vl",),
    "qwen2_vl": ("qwen2_vl",),
    "qwen25_vl": ("bbox_2d JSON (qwen25_vl, qwen3_vl)", "qwen2_vl"),
    "qwen3_vl": ("bbox_2d JSON (qwen25_vl, qwen3_vl)",),
    "internvl": ("internvl",),
    "norm01": ("norm01",),
}


def check_box_format(name: str) -> str:
    if name not in BOX_FORMATS:
        raise ValueError(f"unknown box format {name!r}; expected one of {', '.join(BOX_FORMATS)}")
    return name


def smart_resize(
    height: int,
    width: int,
    factor: int = SMART_RESIZE_FACTOR,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Tuple[int, int]:
    """``(height, width)`` of the input Qwen2-VL / Qwen2.5-VL resize an image to: both multiples of
    ``factor``, the pixel count within [min_pixels, max_pixels], the aspect ratio nearly kept."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if max(height, width) / min(height, width) > _MAX_ASPECT_RATIO:
        raise ValueError(f"aspect ratio of a {width}x{height} image exceeds {_MAX_ASPECT_RATIO}")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _add(result: ParsedBoxes, values: Sequence[float], label: Optional[str], to_grid_box, fragment: str) -> None:
    converted = to_grid_box(values)
    box = None if converted is None else ordered_box(*converted)
    if box is None:
        result.unparsed.append(fragment[:200])
    else:
        result.boxes.append(box)
        result.refs.append(label)


def _thousand(values: Sequence[float]) -> Optional[Tuple[float, ...]]:
    if any(v < 0 or v > GRID for v in values):
        return None
    return tuple(min(float(GRID - 1), v) for v in values)


def _unit(values: Sequence[float]) -> Optional[Tuple[float, ...]]:
    if any(v < 0 or v > 1 for v in values):
        return None
    return _thousand([v * GRID for v in values])


def _pixels(width: float, height: float):
    def convert(values: Sequence[float]) -> Optional[Tuple[float, ...]]:
        x1, y1, x2, y2 = values
        if min(values) < 0 or max(x1, x2) > width or max(y1, y2) > height:
            return None
        return (to_grid(x1, width), to_grid(y1, height), to_grid(x2, width), to_grid(y2, height))

    return convert


def _label_before(refs: List[Tuple[int, str]], pos: int) -> Optional[str]:
    label = None
    for start, phrase in refs:
        if start < pos:
            label = phrase
    return label


def _read_tags(text, ref_re, box_re, item_re, convert, result: ParsedBoxes) -> None:
    refs = [(m.start(), m.group(1).strip()) for m in ref_re.finditer(text)]
    for tag in box_re.finditer(text):
        label = _label_before(refs, tag.start())
        items = list(item_re.finditer(tag.group(1)))
        if not items:
            result.unparsed.append(tag.group(0)[:200])
        for m in items:
            _add(result, [float(v) for v in m.groups()], label, convert, m.group(0))


def _read_bbox_2d(text: str, convert, result: ParsedBoxes) -> None:
    # Object by object, so a list cut off by the token budget still yields its complete boxes.
    for obj in _JSON_OBJECT_RE.finditer(text):
        bbox = _BBOX_2D_RE.search(obj.group(0))
        if bbox is None:
            continue
        label_match = _LABEL_RE.search(obj.group(0))
        label = label_match.group(1) if label_match else None
        try:
            values = [float(v) for v in bbox.group(1).split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            result.unparsed.append(obj.group(0)[:200])
            continue
        _add(result, values, label, convert, obj.group(0))


def read_boxes(
    text,
    box_format: str = DEFAULT_BOX_FORMAT,
    width: Optional[float] = None,
    height: Optional[float] = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ParsedBoxes:
    """Every box of a response written in ``box_format``, on the [0, 1000) grid. Never raises on text.

    ``width`` / ``height`` (pixels of the original image) are required by the pixel formats.
    """
    check_box_format(box_format)
    if box_format == "qwen_vl":
        return parse_boxes(text)
    if box_format in PIXEL_FORMATS and (not width or not height):
        raise ValueError(f"box format {box_format!r} needs the image's width and height")
    result = ParsedBoxes()
    if not isinstance(text, str):
        if text is not None:
            result.unparsed.append(repr(text)[:200])
        return result
    if box_format == "pixels":
        grid = parse_boxes(text)
        result.unparsed.extend(grid.unparsed)
        convert = _pixels(width, height)
        for box, label in zip(grid.boxes, grid.refs):
            _add(result, box, label, convert, repr(box))
    elif box_format == "qwen2_vl":
        _read_tags(text, _QWEN2_REF_RE, _QWEN2_BOX_RE, _PAIR_RE, _thousand, result)
    elif box_format == "qwen25_vl":
        resized_h, resized_w = smart_resize(int(height), int(width), min_pixels=min_pixels, max_pixels=max_pixels)
        convert = _pixels(resized_w, resized_h)
        _read_bbox_2d(text, convert, result)
        _read_tags(text, _QWEN2_REF_RE, _QWEN2_BOX_RE, _PAIR_RE, convert, result)
    elif box_format == "qwen3_vl":
        _read_bbox_2d(text, _thousand, result)
    elif box_format == "internvl":
        _read_tags(text, _INTERNVL_REF_RE, _INTERNVL_BOX_RE, _QUAD_RE, _thousand, result)
    elif box_format == "norm01":
        for m in _QUAD_RE.finditer(text):
            _add(result, [float(v) for v in m.groups()], None, _unit, m.group(0))
    return result


def foreign_formats(text, box_format: str) -> List[str]:
    """Formats other than ``box_format`` whose markup appears in ``text`` (for the report)."""
    if not isinstance(text, str):
        return []
    own = _OWN_SIGNATURES[check_box_format(box_format)]
    return [name for name, pattern in SIGNATURES.items() if name not in own and pattern.search(text)]
