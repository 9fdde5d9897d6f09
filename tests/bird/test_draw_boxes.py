"""The VG error gallery: worst records first, boxes scaled from the grid to each image, an index."""

import json

import numpy as np
from PIL import Image

from paddlemix.tools.draw_boxes import PREDICTION_COLOR, REFERENCE_COLOR, main, match_iou, worst_items

REF = "<ref>liver</ref><box>(100,100),(500,500)</box>"


def record(i, image, response, annotation=REF):
    return dict(id=i, image=image, question=f"Where is the liver? <{i}>", annotation=annotation, response=response, task="VG")


def test_match_iou():
    ref = [(0, 0, 100, 100), (200, 200, 300, 300)]
    assert match_iou(ref, [(200, 200, 300, 300)]) == 0.5  # (0 + 1) / 2
    assert match_iou(ref, []) == 0.0


def test_worst_items_orders_and_limits_per_modality():
    records = [
        record(0, "ct_a.png", REF),  # IoU 1
        record(1, "ct_b.png", "<box>(100,100),(500,300)</box>"),  # IoU 0.5
        record(2, "ct_c.png", "nothing"),  # IoU 0
        record(3, "mr_d.png", REF),
        record(4, "mr_e.png", REF, annotation="no box in the reference"),  # skipped
    ]
    items = worst_items(records, per_modality=2)
    assert list(items) == ["ct", "mr"]
    assert [it.record["id"] for it in items["ct"]] == [2, 1]
    assert [it.match_iou for it in items["ct"]] == [0.0, 0.5]
    assert [it.record["id"] for it in items["mr"]] == [3]


def test_gallery_draws_scaled_boxes_and_an_index(tmp_path, capsys):
    root = tmp_path / "images"
    root.mkdir()
    Image.fromarray(np.full((100, 200), 40, dtype=np.uint8)).save(root / "ct_00--a--b--z_0001.png")
    mr16 = np.zeros((300, 300), dtype=np.uint16)
    mr16[299, 299], mr16[250, 250] = 60000, 30000
    Image.fromarray(mr16).save(root / "mr_00--a--b--z_0001.png")
    pred = tmp_path / "pred_VG.jsonl"
    records = [
        # Prediction (600,600)-(900,900) misses the reference (100,100)-(500,500).
        record(0, "ct_00--a--b--z_0001.png", "<ref>liver</ref><box>(600,600),(900,900)</box> & <b>"),
        record(1, str(root / "mr_00--a--b--z_0001.png"), REF),  # absolute path
        record(2, "pet_missing.png", "<box>(1,2),(3"),
    ]
    pred.write_text("".join(json.dumps(r) + "\n" for r in records))
    out_dir = tmp_path / "gallery"
    assert main(["--pred_file", str(pred), "--image_root", str(root), "--out_dir", str(out_dir), "--per_modality", "3"]) == 0
    assert "index.html" in capsys.readouterr().out

    ct = np.asarray(Image.open(out_dir / "images" / "ct_000.png"))
    assert ct.shape == (100, 200, 3)
    # Grid (100,100)-(500,500) on 200x100 pixels is (20,10)-(100,50); (600,600)-(900,900) is (120,60)-(180,90).
    assert tuple(ct[30, 20]) == REFERENCE_COLOR and tuple(ct[10, 60]) == REFERENCE_COLOR
    assert tuple(ct[75, 120]) == PREDICTION_COLOR and tuple(ct[90, 150]) == PREDICTION_COLOR
    assert tuple(ct[30, 60]) == (40, 40, 40)  # inside the box the image is untouched

    mr = np.asarray(Image.open(out_dir / "images" / "mr_000.png"))
    # 16-bit intensities are stretched to 8 bits, not clipped: 30000 of 0..60000 is 127.5, rounded to 128.
    assert mr.shape == (300, 300, 3) and mr[299, 299].tolist() == [255] * 3 and mr[250, 250].tolist() == [128] * 3
    pet = Image.open(out_dir / "images" / "pet_000.png")
    assert pet.size == (512, 512)  # missing image: a blank grid

    index = (out_dir / "index.html").read_text()
    assert index.count('class="card"') == 3
    assert "match IoU 0.000" in index and "match IoU 1.000" in index
    assert "Where is the liver? &lt;0&gt;" in index and "&amp; &lt;b&gt;" in index  # escaped
    assert "image not found: pet_missing.png" in index and "unparsed:" in index
    assert index.index("<h2>ct") < index.index("<h2>mr") < index.index("<h2>pet")
