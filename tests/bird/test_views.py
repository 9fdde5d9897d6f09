"""Dihedral views: boxes against masks turned by NumPy, construction's view records, the loader."""

import filecmp
import json
import math
import os
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from paddlemix.bird.boxes import parse_boxes
from paddlemix.bird.construct.build import build_medgrit
from paddlemix.bird.samed2d import mask_box
from paddlemix.bird.tasks import TASKS, modality_of
from paddlemix.bird.views import VIEWS, apply_view, view_box, view_size
from paddlemix.datasets.medgrit import MedGritError, load_medgrit, record_image
from tests.bird.sa_med2d_tree import CLASSES, make_sa_root

# Each view as NumPy turns an [H, W] array, written from the views' geometric meaning alone.
NUMPY = {
    "flip_h": np.fliplr,
    "flip_v": np.flipud,
    "rot180": lambda a: np.rot90(a, 2),
    "rot90": lambda a: np.rot90(a, 1),  # counter-clockwise, as PIL's ROTATE_90
    "rot270": lambda a: np.rot90(a, -1),
    "transpose": lambda a: a.T,  # the main diagonal: (x, y) -> (y, x)
    "transverse": lambda a: np.rot90(a, 2).T,  # the anti-diagonal
}


def test_the_seven_views_are_distinct_and_each_is_what_numpy_does():
    assert sorted(VIEWS) == sorted(NUMPY)
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    seen = {a.tobytes()}
    for view in VIEWS:
        turned = np.asarray(apply_view(Image.fromarray(a), view))
        np.testing.assert_array_equal(turned, NUMPY[view](a), err_msg=view)
        assert turned.shape[::-1] == view_size(view, 4, 3)
        seen.add(turned.tobytes() + bytes(turned.shape))
    assert len(seen) == 8


def test_a_box_maps_to_the_box_of_the_turned_mask():
    rng = np.random.default_rng(0)
    for _ in range(60):
        height, width = (int(v) for v in rng.integers(3, 30, 2))
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x2, y2 = int(rng.integers(x1 + 1, width + 1)), int(rng.integers(y1 + 1, height + 1))
        mask = np.zeros((height, width), np.uint8)
        mask[y1:y2, x1:x2] = 255
        box, _ = mask_box(mask)
        for view in VIEWS:
            expected, _ = mask_box(NUMPY[view](mask))
            assert view_box(view, box, width, height) == expected, (view, box, width, height)


def test_an_unknown_view_is_refused():
    with pytest.raises(ValueError, match="unknown view 'rot45'"):
        view_box("rot45", (0, 0, 1, 1), 2, 2)


def _grid(value, size):
    return min(999, math.floor(value / size * 1000))


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    base = tmp_path_factory.mktemp("views")
    make_sa_root(base / "sa")
    plain = build_medgrit(str(base / "sa"), str(base / "plain"), progress=False)
    views = build_medgrit(str(base / "sa"), str(base / "views"), progress=False,
                          view_modalities=["x"], view_tasks=["VG", "RO"])
    return base, plain, views


def test_views_add_training_records_only(builds):
    base, plain, views = builds
    for task in TASKS:
        assert filecmp.cmp(base / "plain" / f"test_{task}.json", base / "views" / f"test_{task}.json", shallow=False)
    train_plain = json.loads((base / "plain" / "train.json").read_text())
    train_views = json.loads((base / "views" / "train.json").read_text())
    assert [r for r in train_views if "view" not in r] == train_plain
    added = Counter((modality_of(r["image"]), r["task"], r["view"]) for r in train_views if "view" in r)
    x_train = {r["image"] for r in train_plain if modality_of(r["image"]) == "x"}
    assert x_train and {m for m, _, _ in added} == {"x"} and {t for _, t, _ in added} == {"VG", "RO"}
    per_view = Counter(v for _, _, v in added.elements())
    assert set(per_view) == set(VIEWS) and len(set(per_view.values())) == 1
    assert views["images"]["train_views"] == 7 * len(x_train)
    assert views["config"]["view_modalities"] == ["x"] and plain["config"]["view_modalities"] == []
    assert len({(r["id"], r["task"]) for r in train_views}) == len(train_views)


def test_view_records_box_what_the_turned_masks_cover(builds):
    """Each view's VG answer lists the grid boxes of the asked class's masks turned by NumPy, in
    reading order."""
    base, _, _ = builds
    index = json.loads((base / "sa" / "SAMed2D_v1.json").read_text())
    train = json.loads((base / "views" / "train.json").read_text())
    checked = 0
    for rec in train:
        if rec.get("view") is None or rec["task"] != "VG":
            continue
        dataset = rec["image"].split("--")[1]
        for _, answer in rec["conversations"]:
            label = re.search(r"<ref>(.*?)</ref>", answer).group(1)
            class_id = CLASSES[dataset][label]
            expected = set()
            for name in index["images/" + rec["image"]]:
                if name.rsplit("--", 1)[1].startswith(class_id + "_"):
                    turned = NUMPY[rec["view"]](np.asarray(Image.open(base / "sa" / name)))
                    height, width = turned.shape
                    x1, y1, x2, y2 = mask_box(turned)[0]
                    expected.add((_grid(x1, width), _grid(y1, height), _grid(x2, width), _grid(y2, height)))
            boxes = [tuple(int(v) for v in b) for b in parse_boxes(answer).boxes]
            assert set(boxes) == expected and len(boxes) == len(expected), (rec["id"], boxes, expected)
            assert boxes == sorted(boxes, key=lambda b: (b[1], b[0], b[3], b[2]))
            checked += 1
    assert checked >= 7


def test_the_loader_shows_a_view_record_its_turned_image(builds, tmp_path):
    base, _, _ = builds
    train = json.loads((base / "views" / "train.json").read_text())
    records, _ = load_medgrit(str(base / "views" / "train.json"), str(base / "sa" / "images"), strict=True)
    by_key = {(r["id"], r["task"]): r for r in records}
    rec = next(r for r in train if r.get("view") == "rot90")
    loaded = by_key[(rec["id"], rec["task"])]
    assert loaded["view"] == "rot90"
    original = np.asarray(Image.open(base / "sa" / "images" / rec["image"]).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(record_image(loaded)), np.rot90(original, 1))
    plain = next(r for r in records if "view" not in r)
    assert record_image(plain) == plain["image_path"]

    bad = dict(rec, view="rot45")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([bad]))
    with pytest.raises(MedGritError, match="view"):
        load_medgrit(str(path), str(base / "sa" / "images"), strict=True)


def test_the_build_cli_takes_views(tmp_path):
    from paddlemix.tools import build_medgrit as cli

    make_sa_root(tmp_path / "sa")
    assert cli.main(["--sa_root", str(tmp_path / "sa"), "--out_dir", str(tmp_path / "out"), "--no_progress",
                     "--train_views", "x", "--view_tasks", "VG"]) == 0
    train = json.loads((tmp_path / "out" / "train.json").read_text())
    assert {(r["task"], modality_of(r["image"])) for r in train if "view" in r} == {("VG", "x")}
    with pytest.raises(SystemExit):
        cli.main(["--sa_root", str(tmp_path / "sa"), "--out_dir", str(tmp_path / "o2"), "--view_tasks", "XX",
                  "--train_views", "x"])
    assert os.path.isdir(tmp_path / "out")


def test_training_samples_of_a_view_carry_the_turned_pixels(builds, qwen_tokenizer):
    from paddlemix.datasets.sft import SFTDataset
    from paddlemix.processors.image_processing import QWenVLImageProcessor

    base, _, _ = builds
    records, _ = load_medgrit(str(base / "views" / "train.json"), str(base / "sa" / "images"), strict=True)
    pair = [next(r for r in records if r.get("view") == "transpose")]
    pair.append(next(r for r in records if "view" not in r and r["image"] == pair[0]["image"]))
    processor = QWenVLImageProcessor(image_size=32)
    dataset = SFTDataset(pair, qwen_tokenizer, processor, max_length=2048, show_progress=False)
    viewed, original = dataset[0]["images"], dataset[1]["images"]
    rgb = Image.open(pair[0]["image_path"]).convert("RGB")
    np.testing.assert_array_equal(viewed, processor([rgb.transpose(Image.Transpose.TRANSPOSE)]))
    np.testing.assert_array_equal(original, processor([rgb]))
    assert not np.array_equal(viewed, original)
