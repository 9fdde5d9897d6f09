"""Evaluation throughput on a Med-GRIT-sized test split: ours vs one pycocoevalcap run per modality.

    python benchmarks/bench_eval.py [--n 30000] [--seed 0]

Generates ``n`` GC-like captions and ``n`` VG answers spread over the eight SA-Med2D modalities,
scores them with ``paddlemix.bird.metrics.evaluate`` (one PTB tokenizer and one METEOR start for the whole
file), and scores the captions the way the upstream scripts do: for each modality a separate
COCOEvalCap-style run (tokenise references, tokenise responses, Bleu, a new Meteor, Rouge,
Cider; SPICE is left out of both because it cannot run offline). Prints seconds, records per
second, the speed ratio and the largest difference between the two sets of per-modality values.
No asserts: this measures, the tests check.
"""

import argparse
import contextlib
import io
import json
import os
import random
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

from paddlemix.bird.metrics.evaluate import evaluate_file  # noqa: E402
from paddlemix.bird.metrics.records import group_by_modality  # noqa: E402
from paddlemix.bird.tasks import KNOWN_MODALITIES  # noqa: E402

STRUCTURES = {
    "ct": ["liver", "spleen", "left kidney", "right kidney", "pancreas", "aorta", "gallbladder", "stomach"],
    "mr": ["left ventricle", "myocardium", "brain tumor", "edema", "hippocampus", "prostate", "bladder"],
    "x": ["left lung", "right lung", "heart", "clavicle", "pneumothorax", "rib fracture"],
    "pet": ["tumor", "lymph node", "liver lesion", "brain"],
    "endoscopy": ["polyp", "surgical instrument", "bleeding site", "ulcer"],
    "dermoscopy": ["skin lesion", "melanoma", "nevus"],
    "fundus": ["optic disc", "optic cup", "hemorrhage", "exudate", "vessel"],
    "ultrasound": ["thyroid nodule", "breast mass", "fetal head", "kidney"],
}
FINDINGS = ["hypodense", "hyperintense", "heterogeneous", "well-defined", "irregular", "enhancing", "cystic", "calcified", "normal-appearing", "enlarged"]
PLACES = ["upper left", "upper right", "lower left", "lower right", "central", "peripheral", "anterior", "posterior"]
TEMPLATES = [
    "The region contains the {s}, which appears {f} and lies in the {p} part of the image.",
    "This area shows a {f} {s} located in the {p} region, with {g} margins.",
    "It is the {s}. The {s} is {f} and occupies the {p} portion of this {m} scan.",
    "A {f} structure consistent with the {s} is seen in the {p} area; it measures about {n} mm.",
    "The highlighted box covers the {s}, {f} in appearance, adjacent to {g} tissue in the {p} field.",
]


def caption(rng, modality):
    return rng.choice(TEMPLATES).format(
        s=rng.choice(STRUCTURES[modality]), f=rng.choice(FINDINGS), g=rng.choice(FINDINGS), p=rng.choice(PLACES), m=modality, n=rng.randint(3, 90)
    )


def paraphrase(rng, modality, reference):
    """A plausible model answer: mostly the reference with edits, sometimes another sentence or nothing."""
    roll = rng.random()
    if roll < 0.02:
        return ""
    if roll < 0.25:
        return caption(rng, modality)
    words = []
    for word in reference.split():
        edit = rng.random()
        if edit < 0.08:
            continue
        words.append(rng.choice(FINDINGS + PLACES) if edit < 0.16 else word)
    return " ".join(words)


def grid_box(rng):
    x1, y1 = rng.randint(0, 800), rng.randint(0, 800)
    return x1, y1, min(999, x1 + rng.randint(20, 300)), min(999, y1 + rng.randint(20, 300))


def box_text(box):
    return "<box>({},{}),({},{})</box>".format(*box)


def jitter(rng, box):
    x1, y1, x2, y2 = box
    d = [rng.randint(-40, 40) for _ in range(4)]
    return max(0, x1 + d[0]), max(0, y1 + d[1]), min(999, max(x1 + d[0] + 1, x2 + d[2])), min(999, max(y1 + d[1] + 1, y2 + d[3]))


def vg_answer(rng, boxes, label):
    roll = rng.random()
    if roll < 0.05:
        return "I cannot find it."
    if roll < 0.08:
        return f"<ref>{label}</ref><box>({boxes[0][0]},{boxes[0][1]}),("  # cut off
    predicted = [jitter(rng, b) if rng.random() < 0.7 else grid_box(rng) for b in boxes[: rng.randint(1, len(boxes))]]
    return f"<ref>{label}</ref>" + "".join(box_text(b) for b in predicted)


def generate(n, seed):
    rng = random.Random(seed)
    gc, vg = [], []
    for i in range(n):
        modality = rng.choice(KNOWN_MODALITIES)
        image = f"{modality}_00--dataset--case{i:05d}--z_{rng.randint(0, 300):04d}.png"
        reference = caption(rng, modality)
        gc.append(dict(id=i, image=image, question="Describe the region <box>(1,2),(3,4)</box>.", annotation=reference, response=paraphrase(rng, modality, reference), task="GC", modality=modality))
        label = rng.choice(STRUCTURES[modality])
        boxes = [grid_box(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        vg.append(dict(id=i, image=image, question=f"Where is the {label}?", annotation=f"<ref>{label}</ref>" + "".join(box_text(b) for b in boxes), response=vg_answer(rng, boxes, label), task="VG", modality=modality))
    return gc, vg


@contextlib.contextmanager
def quiet():
    """Silence pycocoevalcap's prints and the Java tokenizer's stderr."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def upstream_style(pred_file):
    """One COCOEvalCap-style run per modality, as tests/models/BiRD/eval_GC_score_modality.py does."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with open(pred_file, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle]
    results = {}
    for modality, idx in group_by_modality(records).items():
        gts = {int(i): [{"caption": records[i]["annotation"]}] for i in idx}
        res = {int(i): [{"caption": records[i]["response"]}] for i in idx}
        tokenizer = PTBTokenizer()
        gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        scores = {}
        for scorer, names in ((Bleu(4), ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]), (Meteor(), ["METEOR"]), (Rouge(), ["ROUGE-L"]), (Cider(), ["CIDEr"])):
            score, _ = scorer.compute_score(gts, res)
            scores.update(zip(names, score if isinstance(score, list) else [score]))
        results[modality] = scores
    return results


def cpu_seconds():
    """CPU time of this process and its finished children (Java): less sensitive to other load."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, *args, **kwargs):
    start, cpu = time.perf_counter(), cpu_seconds()
    with quiet():
        out = fn(*args, **kwargs)
    return out, time.perf_counter() - start, cpu_seconds() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30000, help="predictions per task (Med-GRIT test split: ~30k)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    gc, vg = generate(args.n, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for task, records in (("GC", gc), ("VG", vg)):
            paths[task] = os.path.join(tmp, f"pred_{task}.jsonl")
            with open(paths[task], "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in records)

        vg_metrics, vg_wall, vg_cpu = timed(evaluate_file, paths["VG"], "VG")
        ours, ours_wall, ours_cpu = timed(evaluate_file, paths["GC"], "GC")
        upstream, upstream_wall, upstream_cpu = timed(upstream_style, paths["GC"])

    gap = max(abs(ours["per_modality"][m][k] - v) for m, scores in upstream.items() for k, v in scores.items())
    print(f"records per task: {args.n} over {len(ours['per_modality'])} modalities (seed {args.seed}), {os.cpu_count()} CPUs")
    print(f"{'':36}{'wall s':>9}{'records/s':>11}{'CPU s':>9}")
    for label, wall, cpu in (
        ("VG  ours", vg_wall, vg_cpu),
        ("GC  ours (one Java start per file)", ours_wall, ours_cpu),
        ("GC  upstream-style, per modality", upstream_wall, upstream_cpu),
    ):
        print(f"{label:36}{wall:9.2f}{args.n / wall:11.0f}{cpu:9.2f}")
    print(f"VG  Recall@0.5 macro {vg_metrics['macro']['Recall@0.5']:.4f};  GC CIDEr macro {ours['macro']['CIDEr']:.4f}")
    print(
        f"GC  speed-up: {upstream_wall / ours_wall:.2f}x wall, {upstream_cpu / ours_cpu:.2f}x CPU "
        "(ours also computes micro over all records)"
    )
    print(f"GC  largest per-modality difference, ours vs upstream-style: {gap:.3g}")


if __name__ == "__main__":
    main()
