"""Every --box_format: boxes written by hand in that family's format score IoU 1.0 against the
Med-GRIT reference of the same region; pixel formats need the image size; nothing is guessed."""

import pytest

from paddlemix.bird.box_formats import BOX_FORMATS, foreign_formats, read_boxes, smart_resize
from paddlemix.bird.boxes import iou, pixel_boxes_to_text, parse_boxes
from paddlemix.bird.metrics.params import Params
from paddlemix.bird.metrics.score import score_task

# A 1120 x 560 image (multiples of 28: smart_resize keeps it) and a region in its pixels.
W, H = 1120, 560
PIXEL_BOX = (112, 56, 560, 280)  # on the grid: (100, 100, 500, 500)
REFERENCE = pixel_boxes_to_text("liver", [PIXEL_BOX], W, H)

HAND_WRITTEN = {
    "qwen_vl": "<ref>liver</ref><box>(100,100),(500,500)</box>",
    "qwen2_vl": "<|object_ref_start|>liver<|object_ref_end|><|box_start|>(100,100),(500,500)<|box_end|>",
    "qwen25_vl": '```json\n[\n  {"bbox_2d": [112, 56, 560, 280], "label": "liver"}\n]\n```',
    "qwen3_vl": '[{"bbox_2d": [100, 100, 500, 500], "label": "liver"}]',
    "internvl": "<ref>liver</ref><box>[[100, 100, 500, 500]]</box>",
    "norm01": "The liver is at [0.100, 0.100, 0.500, 0.500].",
    "pixels": "<ref>liver</ref><box>(112,56),(560,280)</box>",
}


def test_reference_is_the_grid_box():
    assert REFERENCE == "<ref>liver</ref><box>(100,100),(500,500)</box>"


@pytest.mark.parametrize("box_format", BOX_FORMATS)
def test_hand_written_box_scores_iou_one(box_format):
    parsed = read_boxes(HAND_WRITTEN[box_format], box_format, W, H)
    assert parsed.ok and len(parsed.boxes) == 1, parsed
    assert iou(parsed.boxes[0], parse_boxes(REFERENCE).boxes[0]) == pytest.approx(1.0, abs=1e-12)
    record = dict(image="ct_1.png", annotation=REFERENCE, response=HAND_WRITTEN[box_format], width=W, height=H)
    out = score_task([record], "VG", Params(box_format=box_format))
    assert out["micro"]["mIoU"] == pytest.approx(1.0, abs=1e-12) and out["micro"]["Recall@0.5"] == 1.0
    assert out["box_format"] == box_format


def test_every_format_is_covered():
    assert set(HAND_WRITTEN) == set(BOX_FORMATS)


def test_labels_are_read():
    for box_format in ("qwen_vl", "qwen2_vl", "qwen25_vl", "qwen3_vl", "internvl", "pixels"):
        assert read_boxes(HAND_WRITTEN[box_format], box_format, W, H).refs == ["liver"], box_format


def test_smart_resize_by_hand():
    assert smart_resize(560, 1120) == (560, 1120)  # already multiples of 28, within bounds
    assert smart_resize(500, 1000) == (504, 1008)  # round(500 / 28) = 18 -> 504; round(1000 / 28) = 36 -> 1008
    # Over max_pixels: beta = sqrt(560 * 1120 / 156800) = 2 -> floor(280 / 28) * 28, floor(560 / 28) * 28.
    assert smart_resize(560, 1120, max_pixels=156800) == (280, 560)
    # Under min_pixels: beta = sqrt(3136 / (20 * 40)) = 1.98; ceil(39.6 / 28) * 28 = 56, ceil(79.2 / 28) * 28 = 84.
    assert smart_resize(20, 40) == (56, 84)


def test_qwen25_vl_reads_pixels_of_the_resized_input():
    # The model saw the image at 280 x 560 (max_pixels 156800): the region is half the size there.
    text = '{"bbox_2d": [56, 28, 280, 140], "label": "liver"}'
    parsed = read_boxes(text, "qwen25_vl", W, H, max_pixels=156800)
    assert parsed.boxes == [(100, 100, 500, 500)]
    out = score_task([dict(image="ct_1.png", annotation=REFERENCE, response=text, width=W, height=H)], "VG",
                     Params(box_format="qwen25_vl", max_pixels=156800))
    assert out["micro"]["mIoU"] == 1.0 and out["smart_resize"]["max_pixels"] == 156800
    # The tag form of the same box, several boxes, and a list cut off by the token budget.
    tags = "<|object_ref_start|>liver<|object_ref_end|><|box_start|>(56,28),(280,140)<|box_end|>"
    assert read_boxes(tags, "qwen25_vl", W, H, max_pixels=156800).boxes == [(100, 100, 500, 500)]
    cut = '[{"bbox_2d": [56, 28, 280, 140], "label": "a"}, {"bbox_2d": [0, 0, 28, 28], "label": "b"}, {"bbox_2d": [1,'
    parsed = read_boxes(cut, "qwen25_vl", W, H, max_pixels=156800)
    assert parsed.boxes == [(100, 100, 500, 500), (0, 0, 50, 100)] and parsed.refs == ["a", "b"]


def test_border_and_range():
    # 1000 (Qwen2-VL's right border) is the grid's last cell, 999.
    assert read_boxes("<|box_start|>(0,0),(1000,1000)<|box_end|>", "qwen2_vl").boxes == [(0, 0, 999, 999)]
    over = read_boxes("<|box_start|>(0,0),(1200,500)<|box_end|>", "qwen2_vl")
    assert over.boxes == [] and over.unparsed  # out of range: reported, not clipped
    assert read_boxes("[0.1, 0.2, 1.5, 0.6]", "norm01").unparsed
    assert read_boxes("<box>(0,0),(2000,10)</box>", "pixels", W, H).unparsed


def test_pixel_formats_need_the_image_size():
    with pytest.raises(ValueError, match="width and height"):
        read_boxes(HAND_WRITTEN["pixels"], "pixels")
    record = dict(id="r7", image="ct_1.png", annotation=REFERENCE, response=HAND_WRITTEN["pixels"])
    with pytest.raises(ValueError, match=r"record 0 \(id r7\).*'width' and 'height'"):
        score_task([record], "VG", Params(box_format="pixels"))
    with pytest.raises(ValueError, match="unknown box format"):
        read_boxes("x", "yolo")


def test_another_format_is_counted_never_guessed():
    records = [dict(image="ct_1.png", annotation=REFERENCE, response=HAND_WRITTEN[f]) for f in ("qwen3_vl", "qwen2_vl")]
    out = score_task(records, "VG")  # default qwen_vl
    # JSON is not read as qwen_vl; Qwen2-VL's pair is (qwen_vl reads bare pairs), and both are reported.
    assert out["per_modality"]["ct"]["n_predicted_boxes"] == 1 and out["micro"]["parse_failure_rate"] == 0.5
    assert out["n_records_in_other_box_format"] == {"qwen2_vl": 1, "bbox_2d JSON (qwen25_vl, qwen3_vl)": 1}
    assert foreign_formats(HAND_WRITTEN["qwen3_vl"], "qwen_vl") == ["bbox_2d JSON (qwen25_vl, qwen3_vl)"]
    assert foreign_formats(HAND_WRITTEN["internvl"], "internvl") == []
    assert foreign_formats(HAND_WRITTEN["qwen_vl"], "qwen_vl") == []
