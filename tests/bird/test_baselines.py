"""Image-blind baselines: class-mean box and majority class, by hand."""

from paddlemix.bird.baselines import class_mean_boxes, majority_class, ro_baseline, vg_baseline


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
