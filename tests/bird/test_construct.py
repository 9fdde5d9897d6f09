"""Med-GRIT construction from a tiny SA-Med2D folder: boxes, split, determinism, bad inputs."""

import json
import math
import os
import re
import shutil
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from paddlemix.bird import templates as T
from paddlemix.bird.boxes import parse_boxes
from paddlemix.bird.construct.build import build_medgrit
from paddlemix.bird.construct.split import split_cases
from paddlemix.bird.image_tag import split_image_prefix
from paddlemix.bird.samed2d import ConstructionError, load_class_names, mask_box, parse_image_name, parse_mask_name
from paddlemix.bird.tasks import TASKS, modality_of
from paddlemix.datasets.medgrit import load_medgrit
from paddlemix.tools import build_medgrit as build_cli
from paddlemix.cli import run

from tests.bird.sa_med2d_tree import CLASSES, HEIGHT, WIDTH, make_sa_root


def grid(value, size):
    return min(999, math.floor(value / size * 1000))


def expected_boxes(root, index):
    """(image stem, label) -> set of grid boxes, from the mask files with plain numpy."""
    expected = defaultdict(set)
    for image, masks in index.items():
        stem = os.path.basename(image)[:-4]
        dataset = stem.split("--")[1]
        names = {int(v): k.replace("_", " ") for k, v in CLASSES[dataset].items()}
        for mask in masks:
            pixels = np.array(Image.open(root / mask))
            ys, xs = np.nonzero(pixels)
            h, w = pixels.shape
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            class_id = int(mask.split("--")[-1][:4])
            expected[(stem, names[class_id])].add((grid(x1, w), grid(y1, h), grid(x2, w), grid(y2, h)))
    return expected


def read_outputs(out_dir):
    train = json.loads((out_dir / "train.json").read_text())
    test = {t: json.loads((out_dir / f"test_{t}.json").read_text()) for t in TASKS}
    return train, test


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("sa")
    index = make_sa_root(root)
    out = root / "out"
    stats = build_medgrit(str(root), str(out), seed=0, min_mask_area=1, progress=False)
    return root, index, out, stats


def test_boxes_equal_numpy_bounding_boxes_of_the_masks(built):
    root, index, out, _ = built
    expected = expected_boxes(root, index)
    train, test = read_outputs(out)
    records = train + [r for t in TASKS for r in test[t]]
    checked = defaultdict(int)
    for rec in records:
        for question, answer in rec["conversations"]:
            if rec["task"] == "VG":
                parsed = parse_boxes(answer)
                label = parsed.refs[0]
                assert {tuple(int(v) for v in b) for b in parsed.boxes} == expected[(rec["id"], label)]
            elif rec["task"] in ("RO", "GC"):
                (box,) = parse_boxes(question).boxes
                labels = {label for (stem, label), boxes in expected.items() if stem == rec["id"] and box in boxes}
                assert len(labels) == 1
                if rec["task"] == "RO":
                    assert answer == labels.pop()
            else:
                parsed = parse_boxes(answer)
                for label, box in zip(parsed.refs, parsed.boxes, strict=True):
                    assert tuple(int(v) for v in box) in expected[(rec["id"], label)]
            checked[rec["task"]] += 1
    assert all(checked[t] > 0 for t in TASKS)
    # The border mask ends exactly at the last grid cell on both axes.
    stem = "ct_00--AbdCT--case_00--z_0010"
    assert (grid(WIDTH - 9, WIDTH), grid(HEIGHT - 7, HEIGHT), 999, 999) in expected[(stem, "tumor")]


def test_mask_box_uses_continuous_corners():
    mask = np.zeros((10, 20), np.uint8)
    mask[2:5, 3:8] = 255
    assert mask_box(mask) == ((3, 2, 8, 5), 15)
    assert mask_box(np.zeros((4, 4), np.uint8)) is None
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[5, 0, 2] = 1
    assert mask_box(rgb) == ((0, 5, 1, 6), 1)


def test_no_case_in_both_splits_and_modalities_follow_file_names(built):
    _, index, out, stats = built
    train, test = read_outputs(out)

    def case(rec):
        fields = rec["id"].split("--")
        return fields[1], fields[2]

    train_cases = {case(r) for r in train}
    test_cases = {case(r) for t in TASKS for r in test[t]}
    assert train_cases and test_cases
    assert not train_cases & test_cases
    for task in TASKS:
        for rec in test[task]:
            assert rec["task"] == task
            assert len(rec["conversations"]) == 1
            assert rec["image"] == rec["id"] + ".png"
            assert modality_of(rec["image"]) == rec["id"].split("_")[0]
    # Every modality with at least two cases is in test; the single dermoscopy case is not.
    assert {modality_of(r["id"]) for r in test["VG"]} == {"ct", "mr", "x"}
    assert stats["cases"]["per_modality"]["dermoscopy"] == {"train": 1, "test": 0}
    assert stats["cases"]["train"] + stats["cases"]["test"] == 5 + 3 + 4 + 1
    # stats agree with the files
    for task in TASKS:
        per_mod = defaultdict(int)
        for rec in test[task]:
            per_mod[modality_of(rec["image"])] += 1
        assert stats["test"]["records"][task] == dict(per_mod)
    assert sum(sum(v.values()) for v in stats["train"]["records"].values()) == len(train)


def test_split_is_per_modality_and_respects_ratio():
    class E:
        def __init__(self, stem):
            self.name = parse_image_name(stem + ".png")

    entries = [E(f"ct_00--D{d}--c{c}--z_0001") for d in range(2) for c in range(10)]
    entries += [E("mr_00--M--c0--z_0001"), E("mr_00--M--c1--z_0001")]
    split = split_cases(entries, 0.25, seed=3)
    assert len(split["ct"]["test"]) == 5 and len(split["ct"]["train"]) == 15
    assert len(split["mr"]["test"]) == 1 and len(split["mr"]["train"]) == 1
    assert split_cases(list(reversed(entries)), 0.25, seed=3) == split
    assert split_cases(entries, 0.25, seed=4) != split
    assert all(not parts["test"] for parts in split_cases(entries, 0.0, seed=3).values())


def test_output_is_deterministic_for_a_seed_and_order_independent(built, tmp_path):
    root, index, out, _ = built
    again = tmp_path / "again"
    build_medgrit(str(root), str(again), seed=0, min_mask_area=1, progress=False)
    # The same index with its images in reverse order.
    shuffled = tmp_path / "reversed.json"
    shuffled.write_text(json.dumps(dict(reversed(list(index.items())))))
    rev = tmp_path / "rev"
    build_medgrit(str(root), str(rev), seed=0, min_mask_area=1, mask_json=str(shuffled), progress=False)
    for name in ["train.json"] + [f"test_{t}.json" for t in TASKS]:
        assert (again / name).read_bytes() == (out / name).read_bytes()
        assert (rev / name).read_bytes() == (out / name).read_bytes()


def test_another_seed_gives_other_phrasings(built, tmp_path):
    root, _, out, _ = built
    other = tmp_path / "seed1"
    build_medgrit(str(root), str(other), seed=1, min_mask_area=1, progress=False)
    train0, _ = read_outputs(out)
    train1, _ = read_outputs(other)

    def questions(records):
        return {(r["id"], r["task"]): sorted(split_image_prefix(q)[1] for q, _ in r["conversations"]) for r in records}

    q0, q1 = questions(train0), questions(train1)
    common = set(q0) & set(q1)
    assert common
    assert sum(q0[k] != q1[k] for k in common) > len(common) // 3


def test_questions_use_several_templates_and_tag_the_image(built):
    _, _, out, _ = built
    train, _ = read_outputs(out)
    vg_questions = set()
    for rec in train:
        path, _ = split_image_prefix(rec["conversations"][0][0])
        assert path == rec["image"]
        assert all(split_image_prefix(q)[0] is None for q, _ in rec["conversations"][1:])
        if rec["task"] == "VG":
            for question, answer in rec["conversations"]:
                label = parse_boxes(answer).refs[0]
                vg_questions.add(split_image_prefix(question)[1].replace(label, "{}"))
    assert len(vg_questions) >= 4


def test_gc_and_mii_answers_say_name_position_size_and_modality(built):
    _, _, out, _ = built
    train, _ = read_outputs(out)
    gc = [r for r in train if r["task"] == "GC" and r["id"].startswith("ct_")]
    answer = gc[0]["conversations"][0][1]
    assert "CT" in answer and "%" in answer
    assert any(word in answer for word in ("small", "medium-sized", "large"))
    assert any(p in answer for p in ("upper", "lower", "middle", "central"))
    mii = [r for r in train if r["task"] == "MII" and r["id"].startswith("mr_")][0]
    text = mii["conversations"][0][1]
    assert "T1 MR" in text and "<ref>edema</ref><box>" in text and "<ref>enhancing tumor</ref><box>" in text
    assert "2D slice of a 3D" in text
    xray = [r for r in train if r["task"] == "MII" and r["id"].startswith("x_")][0]
    assert "X-ray image" in xray["conversations"][0][1] and "3D" not in xray["conversations"][0][1]


def test_built_files_pass_strict_validation(built):
    root, _, out, _ = built
    paths = [str(out / "train.json")] + [str(out / f"test_{t}.json") for t in TASKS]
    records, report = load_medgrit(paths, str(root / "images"), strict=True)
    assert report.ok and report.kept == report.read == len(records)
    assert {r["task"] for r in records} == set(TASKS)


def test_small_and_empty_masks_are_skipped_and_counted(tmp_path):
    index = make_sa_root(tmp_path)
    stem = "x_ray--ChestX--case_01--2d_none"
    empty = f"masks/{stem}--0001_007.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(tmp_path / empty)
    index[f"images/{stem}.png"].append(empty)
    (tmp_path / "SAMed2D_v1.json").write_text(json.dumps(index))
    areas = [int(np.count_nonzero(np.array(Image.open(tmp_path / m)))) for ms in index.values() for m in ms]
    threshold = sorted(a for a in areas if a)[5]
    stats = build_medgrit(str(tmp_path), str(tmp_path / "out"), min_mask_area=threshold, progress=False)
    assert stats["skipped"]["mask_empty"] == 1
    assert stats["skipped"]["mask_too_small"] == sum(1 for a in areas if 0 < a < threshold)
    assert stats["masks"]["used"] == sum(1 for a in areas if a >= threshold)


def test_flat_class_mapping_is_shared_by_all_datasets(tmp_path):
    make_sa_root(tmp_path)
    flat = tmp_path / "flat_class.json"
    flat.write_text(json.dumps({"first_class": "0001", "second_class": 2, "third_class": "0003"}))
    (tmp_path / "SAMed2D_v1_class_mapping_id.json").unlink()
    stats = build_medgrit(str(tmp_path), str(tmp_path / "out"), min_mask_area=1, progress=False)
    assert stats["config"]["class_json"] == str(flat)
    assert "unknown_class" not in stats["skipped"]
    train, _ = read_outputs(tmp_path / "out")
    labels = {a for r in train if r["task"] == "RO" for _, a in r["conversations"]}
    assert labels == {"first class", "second class", "third class"}


def _break(root, index, what):
    """Damage one thing in a fixture; return the path that the error must name."""
    stem = "ct_00--AbdCT--case_01--z_0010"
    masks = index[f"images/{stem}.png"]
    if what == "unknown_class":
        bad = f"masks/{stem}--0042_000.png"
        shutil.copy(root / masks[0], root / bad)
        masks.append(bad)
    elif what == "bad_mask_name":
        bad = f"masks/{stem}--liver.png"
        shutil.copy(root / masks[0], root / bad)
        masks.append(bad)
    elif what == "bad_image_name":
        bad = "images/ct_00--AbdCT--case_09.png"
        shutil.copy(root / f"images/{stem}.png", root / bad)
        index[bad] = []
    elif what == "mask_image_mismatch":
        bad = "masks/ct_00--AbdCT--case_02--z_0010--0001_000.png"
        masks.append(bad)
    elif what == "mask_missing":
        bad = f"masks/{stem}--0002_005.png"
        masks.append(bad)
    elif what == "image_missing":
        bad = "images/ct_00--AbdCT--case_07--z_0001.png"
        index[bad] = []
    elif what == "mask_unreadable":
        bad = masks[0]
        (root / bad).write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    elif what == "image_unreadable":
        bad = f"images/{stem}.png"
        data = (root / bad).read_bytes()
        (root / bad).write_bytes(data[: len(data) // 2])
    elif what == "mask_size_mismatch":
        bad = masks[0]
        Image.fromarray(np.full((HEIGHT + 1, WIDTH), 255, np.uint8)).save(root / bad)
    (root / "SAMed2D_v1.json").write_text(json.dumps(index))
    return bad


@pytest.mark.parametrize(
    "what",
    [
        "unknown_class",
        "bad_mask_name",
        "bad_image_name",
        "mask_image_mismatch",
        "mask_missing",
        "image_missing",
        "mask_unreadable",
        "image_unreadable",
        "mask_size_mismatch",
    ],
)
def test_input_errors_raise_in_strict_mode_and_are_counted_otherwise(tmp_path, what):
    index = make_sa_root(tmp_path)
    bad = _break(tmp_path, index, what)
    with pytest.raises(ConstructionError) as err:
        build_medgrit(str(tmp_path), str(tmp_path / "strict"), strict=True, min_mask_area=1, progress=False)
    assert os.path.basename(bad) in str(err.value)
    stats = build_medgrit(str(tmp_path), str(tmp_path / "lenient"), min_mask_area=1, progress=False)
    assert stats["skipped"][what] == 1
    assert os.path.basename(bad) in stats["skipped_examples"][what][0]
    assert set(stats["skipped"]) <= {what, "image_without_regions"}


def test_name_parser_reads_fields_and_names_the_file_in_errors():
    name = parse_image_name("images/ct_00--CAD_PE--001--x_0125.png")
    assert (name.modality_sub, name.dataset, name.case, name.slice) == ("ct_00", "CAD_PE", "001", "x_0125")
    assert name.modality == "ct" and name.case_key == ("CAD_PE", "001") and name.is_slice
    xray = parse_image_name("x_ray--covid_19_ct_cxr--16660_5_1--2d_none.png")
    assert xray.modality == "x" and not xray.is_slice
    mask = parse_mask_name("masks/mr_t1--BraTS2021--BraTS2021_00218--z_0141--0011_002.png")
    assert (mask.class_id, mask.instance, mask.image.case) == (11, 2, "BraTS2021_00218")
    for bad in [
        "ct_00--AbdCT--case.png",
        "ct_00--AbdCT--case--z_0001.jpg",
        "ct_00--AbdCT--case--slice10.png",
        "ct 00--AbdCT--case--z_0001.png",
        "ct_00----case--z_0001.png",
    ]:
        with pytest.raises(ConstructionError, match=re.escape(bad)):
            parse_image_name(bad)
    with pytest.raises(ConstructionError, match="mask suffix"):
        parse_mask_name("ct_00--AbdCT--case--z_0001--liver.png")


def test_class_json_shapes_and_errors(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"D1": {"liver": "0003", "union_liver": 3, "spleen": 4}, "D2": {"liver": 1}}))
    names = load_class_names(str(path))
    assert names.name("D1", 3) == "liver" and names.name("D2", 1) == "liver"
    assert names.name("D2", 3) is None and names.name("D3", 1) is None
    path.write_text(json.dumps({"liver": "three"}))
    with pytest.raises(ConstructionError, match="classes.json.*'liver'"):
        load_class_names(str(path))
    path.write_text(json.dumps({"D1": {"liver": 1}, "spleen": 2}))
    with pytest.raises(ConstructionError, match="mixes"):
        load_class_names(str(path))


def test_mii_lists_at_most_max_regions_largest_first(tmp_path):
    make_sa_root(tmp_path)
    build_medgrit(str(tmp_path), str(tmp_path / "out"), min_mask_area=1, max_mii_regions=1, progress=False)
    train, _ = read_outputs(tmp_path / "out")
    mii = [r for r in train if r["task"] == "MII" and r["id"].startswith("ct_")]
    for rec in mii:
        answer = rec["conversations"][0][1]
        assert answer.count("<ref>") == 1
        assert "3 structures, of which the 1 largest are" in answer


def test_gc_size_words_follow_the_masks_share_of_the_image(built):
    """Each GC answer's size word against the mask's foreground share counted here with numpy, and
    the thresholds as the templates document them: under 2% small, under 10% medium-sized."""
    root, index, out, _ = built
    train, test = read_outputs(out)
    masks_by_stem = {os.path.basename(image)[:-4]: masks for image, masks in index.items()}
    words_seen = set()
    for rec in [r for r in train if r["task"] == "GC"] + test["GC"]:
        for question, answer in rec["conversations"]:
            (box,) = parse_boxes(question).boxes
            shares = []
            for mask in masks_by_stem[rec["id"].split("--q")[0]]:
                pixels = np.array(Image.open(root / mask)) > 0
                ys, xs = np.nonzero(pixels)
                h, w = pixels.shape
                grid_box = (grid(xs.min(), w), grid(ys.min(), h), grid(xs.max() + 1, w), grid(ys.max() + 1, h))
                if grid_box == tuple(box):
                    shares.append(pixels.sum() / pixels.size)
            assert len(shares) == 1, (rec["id"], question)
            word = "small" if shares[0] < 0.02 else "medium-sized" if shares[0] < 0.10 else "large"
            others = {"small", "medium-sized", "large"} - {word}
            assert word in answer and not any(o in answer for o in others), (rec["id"], shares[0], answer)
            words_seen.add(word)
    assert len(words_seen) >= 2  # the tiny set has structures on both sides of a threshold


def test_templates_render_and_words():
    slots = dict(phrase="liver", box="<box>(1,2),(3,4)</box>", modality="CT", kind="slice", position="central",
                 size="small", percent="3%", count="one structure", items="<ref>liver</ref>")
    for group in (T.VG_QUESTIONS, T.RO_QUESTIONS, T.GC_QUESTIONS, T.GC_ANSWERS, T.MII_QUESTIONS,
                  T.MII_SUMMARIES, T.MII_LARGEST, T.MII_SINGLE):
        assert len(set(group)) == len(group) >= 2
        for template in group:
            assert "{" not in template.format(**slots)
    assert T.position_words(0.1, 0.1) == "upper left"
    assert T.position_words(0.5, 0.5) == "central"
    assert T.position_words(0.9, 0.5) == "middle right"
    assert T.position_words(0.5, 0.99) == "lower middle"
    assert [T.size_words(f) for f in (0.001, 0.05, 0.5)] == ["small", "medium-sized", "large"]
    assert T.percent_words(0.1234) == "12%" and T.percent_words(0.0163) == "1.6%"
    assert T.percent_words(0.0001) == "0.1%"
    assert T.modality_words("mr_t1") == "T1 MR" and T.modality_words("x_ray") == "X-ray"
    assert T.modality_words("ct_00") == "CT" and T.modality_words("oct_00") == "oct"


def test_cli_writes_outputs_and_reports_errors(tmp_path, capsys):
    make_sa_root(tmp_path)
    out = tmp_path / "out"
    assert build_cli.main(["--sa_root", str(tmp_path), "--out_dir", str(out), "--no_progress", "--seed", "2"]) == 0
    assert json.loads((out / "stats.json").read_text())["config"]["seed"] == 2
    assert "train.json" in capsys.readouterr().out
    (tmp_path / "SAMed2D_v1.json").write_text("{not json")
    assert run(build_cli.main, ["--sa_root", str(tmp_path), "--out_dir", str(out), "--no_progress"]) == 2
    assert "SAMed2D_v1.json" in capsys.readouterr().err
    missing = tmp_path / "no_such_folder"
    assert run(build_cli.main, ["--sa_root", str(missing), "--out_dir", str(tmp_path / "o2"), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {missing}: no such folder (--sa_root is the SA-Med2D folder with images/ and masks/)\n"
    assert not (tmp_path / "o2").exists()


def _by_image(records):
    grouped = defaultdict(list)
    for rec in records:
        grouped[(rec["task"], rec["image"])].append(rec)
    return grouped


def test_split_turns_keeps_every_turn_and_test_questions_adds_records(built, tmp_path):
    root, index, out, _ = built
    split = tmp_path / "split"
    stats = build_medgrit(str(root), str(split), seed=0, min_mask_area=1, max_turns=1, split_tasks=("VG", "RO"),
                          test_questions=3, progress=False)
    assert stats["config"]["split_tasks"] == ["RO", "VG"] and stats["config"]["test_questions"] == 3
    train, test = read_outputs(split)
    default_train, default_test = read_outputs(out)
    labels = defaultdict(set)  # image -> labels, from the mask files
    for stem, label in expected_boxes(root, index):
        labels[f"{stem}.png"].add(label)

    for (task, image), recs in _by_image(train).items():
        stem = image[:-4]
        # record k of an image is <stem>--q<k>; the first keeps the bare stem; each carries the image
        assert [r["id"] for r in recs] == [stem] + [f"{stem}--q{k}" for k in range(2, len(recs) + 1)]
        assert all(len(r["conversations"]) == 1 for r in recs)
        assert all(split_image_prefix(r["conversations"][0][0])[0] == image for r in recs)
        if task == "VG":  # every label of the image is asked exactly once over its records
            asked = [parse_boxes(r["conversations"][0][1]).refs[0] for r in recs]
            assert sorted(asked) == sorted(labels[image])
        elif task in ("GC", "MII"):  # tasks not split: one record, max_turns turns
            assert len(recs) == 1
    n_ro = sum(len(r["conversations"]) for r in default_train if r["task"] == "RO")
    assert sum(1 for r in train if r["task"] == "RO") == n_ro  # max_turns 8 kept all RO turns by default

    for task in TASKS:
        new = _by_image(test[task])
        for rec in default_test[task]:  # the default single question is the first of the new ones
            recs = new[(task, rec["image"])]
            assert recs[0] == rec
            assert 1 <= len(recs) <= 3 and len({r["conversations"][0][0] for r in recs}) == len(recs)
            assert all(len(r["conversations"]) == 1 for r in recs)
    records, report = load_medgrit([str(split / "train.json")] + [str(split / f"test_{t}.json") for t in TASKS],
                                   str(root / "images"), strict=True)
    assert report.ok and report.kept == len(records)


def test_split_turns_refuses_unknown_tasks(tmp_path, capsys):
    make_sa_root(tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        build_medgrit(str(tmp_path), str(tmp_path / "out"), split_tasks=("VQA",), progress=False)
    with pytest.raises(SystemExit):
        build_cli.main(["--sa_root", str(tmp_path), "--out_dir", str(tmp_path / "out"), "--split_turns", "VG,XX"])
    assert "unknown task(s) ['XX']" in capsys.readouterr().err
