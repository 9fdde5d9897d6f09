"""Reply boxes from an answer's text and token probabilities, checked against hand-computed values."""

import pytest

from paddlemix.serving.answer_boxes import answer_boxes, box_token_scores


def pieces(*tokens):
    return [t.encode("utf-8") for t in tokens]


def test_score_is_the_mean_probability_of_the_coordinate_digits():
    # "<ref>肝</ref><box>(1,20),(300,4)</box>": the label is 3 UTF-8 bytes, split over two tokens.
    tokens = [b"<ref>", "肝".encode()[:2], "肝".encode()[2:], b"</ref>", b"<box>", b"(", b"1", b",", b"2", b"0",
              b"),(", b"3", b"0", b"0", b",", b"4", b")", b"</box>"]
    probs = [0.9, 0.5, 0.5, 0.9, 0.9, 0.8, 0.1, 0.7, 0.2, 0.3, 0.6, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9]
    # digits: 1 (0.1), 2 0 (0.2 0.3), 3 0 0 (0.4 0.5 0.6), 4 (0.8) -> mean 2.9 / 7
    (box, score), = box_token_scores(tokens, probs)
    assert box == (1, 4, 300, 20)  # corners ordered
    assert score == pytest.approx(2.9 / 7)
    (reply,) = answer_boxes("<ref>肝</ref><box>(1,20),(300,4)</box>", tokens, probs, image_size=(500, 250))
    assert reply == {"label": "肝", "box": [0.5, 1.0, 150.0, 5.0], "box_grid": [1, 4, 300, 20],
                     "score": pytest.approx(2.9 / 7)}


def test_each_box_gets_its_own_digits_and_labels_follow_refs():
    text = "<ref>a</ref><box>(1,1),(2,2)</box><box>(5,5),(9,9)</box> and (1,1),(2,2)"
    tokens = pieces("<ref>", "a", "</ref>", "<box>", "(", "1", ",", "1", "),(", "2", ",", "2", ")", "</box>",
                    "<box>", "(", "5", ",", "5", "),(", "9", ",", "9", ")", "</box>", " and", " (", "1", ",", "1",
                    "),(", "2", ",", "2", ")")
    probs = [1.0] * len(tokens)
    for k, t in enumerate(tokens):
        if t.isdigit():
            probs[k] = {b"1": 0.2, b"2": 0.4, b"5": 0.6, b"9": 0.8}[t] if k < 25 else 0.1
    boxes = answer_boxes(text, tokens, probs, image_size=(1000, 1000))
    assert [b["label"] for b in boxes] == ["a", "a", None]
    assert [b["box_grid"] for b in boxes] == [[1, 1, 2, 2], [5, 5, 9, 9], [1, 1, 2, 2]]
    assert [b["score"] for b in boxes] == pytest.approx([0.3, 0.7, 0.1])
    assert boxes[1]["box"] == [5.0, 5.0, 9.0, 9.0]


def test_without_image_or_probabilities_box_and_score_are_null():
    (reply,) = answer_boxes("<ref>x</ref><box>(10,10),(20,30)</box>")
    assert reply == {"label": "x", "box": None, "box_grid": [10, 10, 20, 30], "score": None}
    assert answer_boxes("no boxes here", [b"no boxes here"], [0.5]) == []
    # A degenerate box is not a box (the parser reports it as unparsed).
    assert answer_boxes("<box>(5,5),(5,9)</box>", pieces("<box>", "(", "5", ",", "5", "),(", "5", ",", "9", ")", "</box>"),
                        [0.5] * 11, (10, 10)) == []
