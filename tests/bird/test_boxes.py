"""Box text helpers: grid formula, round trips, lenient parsing, IoU."""

import math
import sys
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from paddlemix.bird.boxes import (
    box_to_grid,
    format_ref_boxes,
    grid_to_box,
    iou,
    parse_boxes,
    pixel_boxes_to_text,
    to_grid,
)


def test_grid_formula_examples():
    # min(999, floor(x / size * 1000)) written out by hand.
    assert to_grid(0, 512) == 0
    assert to_grid(511, 512) == 998  # 998.04
    assert to_grid(512, 512) == 999  # the right border
    assert to_grid(100, 300) == 333
    assert to_grid(1, 3) == 333


def test_format_examples():
    assert pixel_boxes_to_text("liver", [(10, 20, 110, 220)], 200, 400) == "<ref>liver</ref><box>(50,50),(550,550)</box>"
    assert format_ref_boxes(None, [(1, 2, 3, 4), (5, 6, 7, 8)]) == "<box>(1,2),(3,4)</box><box>(5,6),(7,8)</box>"


sizes = st.integers(min_value=1, max_value=8192)


@st.composite
def image_and_box(draw):
    w, h = draw(sizes), draw(sizes)
    x1 = draw(st.integers(0, w - 1))
    y1 = draw(st.integers(0, h - 1))
    x2 = draw(st.integers(x1 + 1, w))
    y2 = draw(st.integers(y1 + 1, h))
    return w, h, (x1, y1, x2, y2)


@settings(max_examples=400, deadline=None)
@given(image_and_box())
def test_pixel_text_pixel_round_trip(case):
    w, h, box = case
    text = pixel_boxes_to_text("x", [box], w, h)
    parsed = parse_boxes(text)
    x1, y1, x2, y2 = box_to_grid(box, w, h)
    if x1 == x2 or y1 == y2:
        # A box thinner than one grid cell collapses on the grid; the parser reports it.
        assert parsed.boxes == [] and len(parsed.unparsed) == 1
        return
    assert parsed.unparsed == [] and parsed.refs == ["x"]
    grid = parsed.boxes[0]
    back = grid_to_box(grid, w, h)
    for got, want, size in zip(back, box, (w, h, w, h)):
        assert abs(got - want) <= size / 1000 + 1e-9  # at most one grid cell
    assert all(0 <= v <= 999 for v in grid)


garbage = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="<>/()boxref,0123456789 -.", max_size=120),
    st.none(),
    st.integers(),
    st.lists(st.integers(), max_size=5),
)


@settings(max_examples=500, deadline=None)
@given(garbage)
def test_parser_never_raises(text):
    result = parse_boxes(text)
    assert len(result.boxes) == len(result.refs)
    for x1, y1, x2, y2 in result.boxes:
        assert x1 < x2 and y1 < y2


def test_lenient_forms():
    cases = {
        "<ref>liver</ref><box>(10,20),(300,400)</box>": ([(10, 20, 300, 400)], ["liver"]),
        "<ref>a</ref><box>( 1 , 2 ),(30, 40)": ([(1, 2, 30, 40)], ["a"]),
        "the box is (1,2),(3,4) and also (5,6) (7,8)": ([(1, 2, 3, 4), (5, 6, 7, 8)], [None, None]),
        "<box>(30,40),(1,2)</box>": ([(1, 2, 30, 40)], [None]),  # corners swapped
        "<ref>k</ref><box>(1,1),(9,9)</box><box>(20,20),(40,40)</box>": ([(1, 1, 9, 9), (20, 20, 40, 40)], ["k", "k"]),
    }
    for text, (boxes, refs) in cases.items():
        result = parse_boxes(text)
        assert result.boxes == boxes, text
        assert result.refs == refs, text
        assert result.unparsed == [], text


def test_unparseable_fragments_are_reported():
    result = parse_boxes("<ref>x</ref><box>(1,2)</box><box>(5,5),(5,9)</box><box>(1,1),(4,4)</box>")
    assert result.boxes == [(1, 1, 4, 4)]
    assert result.unparsed == ["<box>(1,2)</box>", "(5,5),(5,9)"]
    assert not result.ok


def test_iou_hand_values():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert math.isclose(iou((0, 0, 10, 10), (5, 0, 15, 10)), 50 / 150)
    assert iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    assert math.isclose(iou((0, 0, 4, 4), (1, 1, 3, 3)), 4 / 16)


def test_boxes_module_imports_no_framework():
    code = "import sys, paddlemix.bird.boxes, paddlemix.bird.tasks; print('paddle' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_import_paddlemix_is_cheap():
    code = "import sys, paddlemix; print(sorted(m for m in ('paddle', 'paddlenlp', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
