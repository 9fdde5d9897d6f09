"""Why the demo does not ground MR regions: how fast the demo preset learns to copy the asked phrase.

    python benchmarks/study_copying.py [--steps 300] [--batch_size 8] [--lr 3e-3] [--settings text,image,image+box,curriculum]

A VG answer starts ``<ref>phrase</ref>``: before any box can depend on the question, the model
has to copy the phrase the question names. This trains the ``demo`` preset from its seeded random
start (AdamW, β2 0.95, clip 1.0, constant lr, the demo's frozen vision tower) on one toy task in
four settings and reports, every 50 steps, how many of the 17 region names it answers exactly
(greedy, teacher-forced over the ``<ref>…</ref>`` tokens, on a fixed question template):

  text        "Where is the {name} in this image?" → ``<ref>{name}</ref>``
  image       the same with a real demo MR slice in front (``Picture 1: <img>…</img>``)
  image+box   the same, the answer followed by a box of four random coordinates, standing in for
              box digits the model cannot yet predict
  curriculum  ``image`` for the first half of the steps, then ``image+box`` (does the copying,
              once learned, survive the digits?)

Names are the demo's MR atlas labels. Prints the table; asserts nothing. Needs the demo set
(``bash scripts/demo.sh`` or ``python -m paddlemix.tools.build_demo_data --out_dir data/demo/sa_med2d``).
"""

import argparse
import glob
import os
import random
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [f"{side} {part}" for part in ("frontal lobe", "temporal lobe", "parietal lobe", "occipital lobe",
                                       "cingulate gyrus", "hippocampus", "thalamus", "insula")
         for side in ("left", "right")] + ["cerebellar vermis"]
TEMPLATES = ["Where is the {} in this image?", "Locate the {} in the image.", "Can you show me where the {} is?",
             "Which region contains the {}? Answer with boxes."]


def run_setting(setting: str, images, steps: int, batch_size: int, lr: float, seed: int = 42):
    import paddle

    from paddlemix.datasets.sft import collate_sft
    from paddlemix.models.qwen_vl import QWenVLForCausalLM, get_preset
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer
    from paddlemix.processors.conversation import encode_conversation
    from paddlemix.processors.image_processing import QWenVLImageProcessor
    from paddlemix.tools.supervised_finetune import freeze_vision

    paddle.seed(seed)
    rng = random.Random(seed)
    config = get_preset("demo")
    model = QWenVLForCausalLM(config)
    freeze_vision(model, train_resampler=False)
    tokenizer = QWenVLTokenizer(image_span=config.image_span)
    processor = QWenVLImageProcessor.from_config(config)
    optimizer = paddle.optimizer.AdamW(learning_rate=lr, parameters=[p for p in model.parameters() if not p.stop_gradient],
                                       beta2=0.95, weight_decay=0.0, grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    with_image = setting != "text"

    def sample(name, template, image):  # reads the training loop's ``step`` (curriculum)
        question = template.format(name)
        if with_image:
            question = f"Picture 1: <img>{os.path.basename(image)}</img>\n{question}"
        answer = f"<ref>{name}</ref>"
        if setting == "image+box" or (setting == "curriculum" and step >= steps // 2):
            answer += "<box>({},{}),({},{})</box>".format(*(rng.randrange(1000) for _ in range(4)))
        enc = encode_conversation(tokenizer, [[question, answer]], max_length=512)
        feature = {"input_ids": np.asarray(enc.input_ids), "labels": np.asarray(enc.labels)}
        if with_image:
            feature["images"] = processor([image])
        return feature

    def exact_names():
        model.eval()
        correct = 0
        for name in NAMES:
            feature = sample(name, TEMPLATES[0], images[0])  # scored on the name tokens only
            n_ref = len(tokenizer.encode_text(f"<ref>{name}</ref>"))
            positions = np.nonzero(feature["labels"] != -100)[0][:n_ref]
            with paddle.no_grad():
                logits = model(input_ids=paddle.to_tensor([feature["input_ids"]]), return_dict=True,
                               images=paddle.to_tensor(feature["images"]) if with_image else None).logits[0].numpy()
            correct += all(logits[p - 1].argmax() == feature["labels"][p] for p in positions)
        model.train()
        return correct

    curve = {}
    for step in range(steps + 1):
        if step % 50 == 0 or step == steps:
            curve[step] = exact_names()
        if step == steps:
            break
        batch = collate_sft([sample(rng.choice(NAMES), rng.choice(TEMPLATES), rng.choice(images))
                             for _ in range(batch_size)], tokenizer.pad_token_id)
        loss = model(input_ids=paddle.to_tensor(batch["input_ids"]), labels=paddle.to_tensor(batch["labels"]),
                     images=paddle.to_tensor(batch["images"]) if with_image else None, return_dict=True).loss
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image_root", default=os.path.join(ROOT, "data", "demo", "sa_med2d", "images"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--settings", default="text,image,image+box,curriculum")
    args = p.parse_args(argv)
    images = sorted(glob.glob(os.path.join(args.image_root, "mr*.png")))[:50]
    if not images:
        print(f"error: no mr*.png in {args.image_root}; build the demo set first", file=sys.stderr)
        return 2
    settings = args.settings.split(",")
    curves = {s: run_setting(s, images, args.steps, args.batch_size, args.lr) for s in settings}
    print(f"exact <ref>name</ref> answers out of {len(NAMES)} (demo preset, batch {args.batch_size}, lr {args.lr})")
    print(f"{'step':>5} " + " ".join(f"{s:>10}" for s in settings))
    for step in curves[settings[0]]:
        print(f"{step:>5} " + " ".join(f"{curves[s][step]:>10}" for s in settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
