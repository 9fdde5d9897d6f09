"""Is there enough in the images to ground the demo's test questions? A nearest-neighbour answer.

    python benchmarks/study_nearest_neighbour.py [--medgrit_dir data/demo/medgrit]
        [--image_root data/demo/sa_med2d/images] [--preset demo] [--seed 42]

For every test VG question this answers with the boxes of the asked class on the training image of
the same modality that is closest to the test image, and scores the answers with the project's own
VG scorer (Recall@0.5 per modality, first turn, as ``eval.py`` scores a model). "Closest" is
measured on four descriptions of an image: its pixels at 16 x 16 (grey), the untrained demo
model's image tokens as the LLM receives them (64 queries x 64 values, random resampler), the same
tokens averaged over the queries (one 64-value vector: what uniform attention over the image would
hand a text position), and the tokens of the spatially started resampler (``resampler_init
spatial``). It prints those beside the image-blind class-mean box (``paddlemix.tools.baselines``).

A memorising answer well above the class-mean box says the frozen vision path does carry what a
model needs to place the box on these test slices (their neighbours in the training slabs have
similar boxes); it says nothing about how many steps a model needs to learn it. Between the two
sits the same-view class-mean box: the mean box of the asked class over the training images cut
the same way as the test image (the demo's case names say it: ``zslab`` axial, ``yslab`` coronal
slabs of the MR, ``slab`` the CT's axial slabs, ``tile`` the microscopy tiles) — what a model
gains by telling an axial slice from a coronal one and nothing finer. The demo's layout-started
tokens (``resampler_init layout``, the demo's vision start) are a fifth description. Asserts nothing.
"""

import argparse
import os
import re
import sys
from collections import defaultdict

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from paddlemix.bird.baselines import vg_baseline  # noqa: E402
from paddlemix.bird.boxes import format_ref_boxes, parse_boxes  # noqa: E402
from paddlemix.bird.metrics.score import score_task  # noqa: E402
from paddlemix.bird.predictions import prediction_record  # noqa: E402
from paddlemix.bird.tasks import VG, modality_of  # noqa: E402
from paddlemix.datasets.medgrit import load_medgrit  # noqa: E402


def training_boxes(train_records):
    """image -> class -> its VG boxes (grid units), from every VG turn of the training records."""
    boxes = defaultdict(lambda: defaultdict(list))
    for rec in train_records:
        if rec.get("task") != VG:
            continue
        for _, answer in rec["conversations"]:
            parsed = parse_boxes(answer)
            for label, box in zip(parsed.refs, parsed.boxes):
                if label and tuple(box) not in boxes[rec["image"]][label]:
                    boxes[rec["image"]][label].append(tuple(box))
    return boxes


def nearest_neighbour_answers(test_records, boxes, features):
    """One prediction record per test VG record: the asked class's boxes on the nearest training image."""
    rows = []
    for rec in test_records:
        question, annotation = rec["conversations"][0]
        label = parse_boxes(annotation).refs[0]
        modality = modality_of(rec["image"])
        candidates = [image for image in boxes if modality_of(image) == modality and label in boxes[image]]
        target = features[rec["image"]]
        answer = [(0, 0, 999, 999)]
        if candidates:
            nearest = min(candidates, key=lambda image: float(((features[image] - target) ** 2).sum()))
            answer = [tuple(round(v) for v in box) for box in boxes[nearest][label]]
        rows.append(prediction_record(id=rec["id"], image=rec.get("image"), question=question,
                                      annotation=annotation, response=format_ref_boxes(label, answer),
                                      task=VG, modality=rec.get("modality")))
    return rows


def view_of(image: str) -> str:
    """``mr_t1--colin27aal--yslab00--y_0020.png`` -> ``mr/yslab``: the modality and how its case was cut."""
    parts = os.path.basename(image).split("--")
    return f"{modality_of(image)}/{re.sub(r'[0-9]+', '', parts[2]) if len(parts) > 3 else ''}"


def same_view_mean_answers(train_records, test_records):
    """The class-mean box computed over the training images of the test image's view only."""
    rows = []
    for view in sorted({view_of(rec["image"]) for rec in test_records}):
        same = [rec for rec in train_records if rec.get("image") and view_of(rec["image"]) == view]
        if not any(rec.get("task") == VG for rec in same):
            same = train_records
        rows.extend(vg_baseline(same, [rec for rec in test_records if view_of(rec["image"]) == view]))
    return rows


def pixel_features(images, image_root, size=16):
    from PIL import Image

    return {name: np.asarray(Image.open(os.path.join(image_root, name)).convert("L").resize((size, size)),
                             dtype=np.float32).ravel() / 255.0 for name in images}


def vision_tokens(images, image_root, preset, seed, resampler_init):
    """image -> the untrained model's image tokens [queries, width] (what the LLM's slots receive)."""
    import paddle

    from paddlemix.models.qwen_vl.builder import build_model
    from paddlemix.processors.image_processing import QWenVLImageProcessor

    model = build_model(preset=preset, seed=seed, resampler_init=resampler_init)
    processor = QWenVLImageProcessor.from_config(model.config)
    tokens = {}
    names = sorted(images)
    with paddle.no_grad():
        for start in range(0, len(names), 32):
            chunk = names[start : start + 32]
            pixels = np.stack([processor.transform(os.path.join(image_root, name)) for name in chunk])
            for name, value in zip(chunk, model.transformer.visual(paddle.to_tensor(pixels.astype("float32"))).numpy()):
                tokens[name] = value
    return tokens


def recall_per_modality(rows) -> str:
    metrics = score_task(rows, VG)
    return "  ".join(f"{m} {scores['Recall@0.5']:.3f}" for m, scores in sorted(metrics["per_modality"].items()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--medgrit_dir", default=os.path.join(ROOT, "data/demo/medgrit"))
    p.add_argument("--image_root", default=os.path.join(ROOT, "data/demo/sa_med2d/images"))
    p.add_argument("--preset", default="demo")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)

    train, _ = load_medgrit(os.path.join(args.medgrit_dir, "train.json"), args.image_root)
    test, _ = load_medgrit(os.path.join(args.medgrit_dir, "test_VG.json"), args.image_root, task=VG)
    boxes = training_boxes(train)
    images = set(boxes) | {rec["image"] for rec in test}
    random_tokens = vision_tokens(images, args.image_root, args.preset, args.seed, "random")
    spatial_tokens = vision_tokens(images, args.image_root, args.preset, args.seed, "spatial")
    layout_tokens = vision_tokens(images, args.image_root, args.preset, args.seed, "layout")
    descriptions = {
        "pixels 16x16": pixel_features(images, args.image_root),
        "image tokens (random resampler)": {k: v.ravel() for k, v in random_tokens.items()},
        "image tokens averaged over queries": {k: v.mean(0) for k, v in random_tokens.items()},
        "image tokens (spatial resampler)": {k: v.ravel() for k, v in spatial_tokens.items()},
        "image tokens (layout start, the demo's)": {k: v.ravel() for k, v in layout_tokens.items()},
    }
    print(f"{len(test)} test VG questions; VG Recall@0.5 per modality (first turn)")
    print(f"  {'class-mean box (image-blind baseline)':55s} {recall_per_modality(vg_baseline(train, test))}")
    print(f"  {'same-view class-mean box (axial / coronal known)':55s} {recall_per_modality(same_view_mean_answers(train, test))}")
    for name, features in descriptions.items():
        rows = nearest_neighbour_answers(test, boxes, features)
        print(f"  {'nearest neighbour, ' + name:55s} {recall_per_modality(rows)}")


if __name__ == "__main__":
    main()
