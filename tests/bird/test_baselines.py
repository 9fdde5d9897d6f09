"""Image-blind baselines: class-mean box and majority class, by hand; the shuffled-image ablation."""

import pytest

from paddlemix.bird.baselines import class_mean_boxes, majority_class, ro_baseline, shuffle_images, vg_baseline


def rec(task, id_, *turns):
    return {"id": id_, "image": f"{id_}.png", "task": task, "modality": id_.split("_")[0], "conversations": [list(t) for t in turns]}


TRAIN = [
    rec("VG", "ct_a", ("Picture 1: <img>ct_a.png</img>\nliver?", "<ref>liver</ref><box>(100,100),(300,300)</box>"),
        ("kidney?", "<ref>kidney</ref><box>(0,0),(10,10)</box><box>(20,20),(40,40)</box>")),
    rec("VG", "ct_b", ("liver?", "<ref>liver</ref><box>(200,300),(500,500)</box>")),
    rec("RO", "ct_a", ("what is <box>(1,1),(2,2)</box>?", "liver"), ("and <box>(3,3),(4,4)</box>?", "kidney")),
    rec("RO", "ct_b", ("what is <box>(1,1),(2,2)</box>?", "liver")),
]


def test_class_mean_boxes_by_hand():
    means, overall = class_mean_boxes(TRAIN)
    assert means == {"liver": (150, 200, 400, 400), "kidney": (10, 10, 25, 25)}
    # (100+200+0+20)/4 = 80, (100+300+0+20)/4 = 105, (300+500+10+40)/4 = 212.5 -> 212, (300+500+10+40)/4
    assert overall == (80, 105, 212, 212)


def test_majority_class():
    assert majority_class(TRAIN) == "liver"


def test_predictions_use_the_asked_class_and_fall_back_to_the_overall_mean():
    test = [
        rec("VG", "mr_x", ("Picture 1: <img>mr_x.png</img>\nliver?", "<ref>liver</ref><box>(1,1),(9,9)</box>")),
        rec("VG", "mr_y", ("spleen?", "<ref>spleen</ref><box>(1,1),(9,9)</box>")),
    ]
    rows = vg_baseline(TRAIN, test)
    assert [r["response"] for r in rows] == [
        "<ref>liver</ref><box>(150,200),(400,400)</box>",
        "<ref>spleen</ref><box>(80,105),(212,212)</box>",
    ]
    assert rows[0]["question"] == "liver?" and rows[0]["modality"] == "mr" and rows[0]["task"] == "VG"
    ro = ro_baseline(TRAIN, [rec("RO", "x_1", ("q", "kidney"))])
    assert ro[0]["response"] == "liver" and ro[0]["annotation"] == "kidney"


def _record(rid, image, question="Locate the liver.", answer="<ref>liver</ref><box>(1,2),(3,4)</box>"):
    return {"id": rid, "image": image, "task": "VG",
            "conversations": [[f"Picture 1: <img>{image}</img>\n{question}", answer]]}


def test_shuffle_images_moves_every_image_within_its_modality():
    records = [
        _record("a", "mr_00--d--c1--z_0001.png"), _record("a--q2", "mr_00--d--c1--z_0001.png", "Where is the brain?"),
        _record("b", "mr_00--d--c2--z_0005.png"), _record("c", "mr_00--d--c3--z_0009.png"),
        _record("d", "ct_00--d--c1--z_0002.png"), _record("e", "ct_00--d--c2--z_0003.png"),
        _record("f", "microscopy_00--d--c1--2d_none.png"),
    ]
    shuffled, exchanged = shuffle_images(records, seed=3)
    assert exchanged == {"ct": (2, 2), "microscopy": (0, 0), "mr": (3, 3)}
    assert [r["id"] for r in shuffled] == [r["id"] for r in records]
    for old, new in zip(records, shuffled):
        assert new["conversations"][0][1] == old["conversations"][0][1]  # the reference answer stays
        assert new["conversations"][0][0] == old["conversations"][0][0].replace(old["image"], new["image"])
        assert new["image"].split("_")[0] == old["image"].split("_")[0]
        if old["id"] != "f":
            assert new["image"] != old["image"]
    assert shuffled[0]["image"] == shuffled[1]["image"]  # questions on one image move together
    assert shuffled[-1] == records[-1]  # a modality with one image cannot be shuffled
    assert {r["image"] for r in shuffled} == {r["image"] for r in records}  # a permutation of the images
    assert shuffle_images(records, seed=3)[0] == shuffled
    assert records[0]["image"] == "mr_00--d--c1--z_0001.png"  # the input is not modified


def test_shuffled_images_come_from_another_case_where_the_cases_allow():
    """Two slabs of neighbouring slices: every question is shown a slice of the other slab (a
    neighbour of its own slice would leave it answerable). A case of more than half the images
    keeps some of them at home, and the counts say how many crossed."""
    slabs = [_record(f"{slab}{k}", f"mr_t1--atlas--{slab}--{slab[0]}_{k:04d}.png") for slab in ("yslab05", "zslab03")
             for k in range(6)]
    for seed in range(5):
        shuffled, exchanged = shuffle_images(slabs, seed=seed)
        assert exchanged == {"mr": (12, 12)}
        for old, new in zip(slabs, shuffled):
            assert new["image"].split("--")[2] != old["image"].split("--")[2]
        assert sorted(r["image"] for r in shuffled) == sorted(r["image"] for r in slabs)
    lopsided = [_record(f"a{k}", f"ct_00--d--big--z_{k:04d}.png") for k in range(5)]
    lopsided += [_record("b0", "ct_00--d--small--z_0000.png"), _record("c0", "ct_00--d--other--z_0000.png")]
    shuffled, exchanged = shuffle_images(lopsided, seed=1)
    crossed = sum(o["image"].split("--")[2] != n["image"].split("--")[2] for o, n in zip(lopsided, shuffled))
    assert exchanged == {"ct": (7, crossed)} and crossed == 4  # "small" and "other" into "big", two of it out
    assert all(o["image"] != n["image"] for o, n in zip(lopsided, shuffled))
    one_slab = slabs[:6]
    shuffled, exchanged = shuffle_images(one_slab, seed=0)
    assert exchanged == {"mr": (6, 0)} and all(o["image"] != n["image"] for o, n in zip(one_slab, shuffled))


def test_shuffle_images_needs_image_paths():
    with pytest.raises(ValueError, match="'image'"):
        shuffle_images([{"id": "x", "conversations": [["q", "a"]]}])
