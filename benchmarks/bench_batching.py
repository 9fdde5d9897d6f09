"""Padding and training throughput: length-grouped dynamic padding (this repo) vs pad-to-2048 (upstream).

    python benchmarks/bench_batching.py [--medgrit_dir DIR --image_root DIR] [--steps 3] [--batch_size 4]

Data: the demo set (real images and masks, built into a temporary folder unless ``--medgrit_dir`` is
given) turned into Med-GRIT conversations and encoded with the real Qwen tokenizer exactly as training
encodes them (max_length 2048).

Padding: the fraction of computed token positions that are padding over one whole epoch, for
  upstream   random batches, every sample padded to 2048 tokens
  random     random batches, padded to the batch's longest sample (dynamic padding alone)
  grouped    length-grouped batches (``LengthGroupedBatchSampler``), padded to the longest sample
with Qwen-VL-Chat's 256-token image span (what a real run sees) and the tiny model's 64.

Throughput: trained (non-padding) tokens per second of full training steps (forward, backward, AdamW)
of the tiny model on CPU, for ``--steps`` batches of each scheme picked at evenly spaced quantiles of
the scheme's batch widths and real-token counts, so a few steps stand for the epoch's mix. Prints
numbers and ratios; asserts nothing.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

UPSTREAM_LENGTH = 2048


def random_batches(n, batch_size, seed):
    """Upstream's order: a seeded shuffle cut into consecutive batches (the last one may be short)."""
    order = np.random.RandomState(seed).permutation(n)
    return [order[i : i + batch_size].tolist() for i in range(0, n, batch_size)]


def epoch_batches(lengths, batch_size, num_replicas, seed):
    """``{scheme: (batches, pad_to)}`` for one epoch, each batch one device's share."""
    from paddlemix.datasets.sft import length_grouped_batches

    grouped = [b for rank in range(num_replicas)
               for b in length_grouped_batches(lengths, batch_size, num_replicas, rank, seed, epoch=0)]
    shuffled = random_batches(len(lengths), batch_size, seed)
    return {"upstream": (shuffled, UPSTREAM_LENGTH), "random": (shuffled, None), "grouped": (grouped, None)}


def padding_table(lengths, batch_size, num_replicas, seed):
    from paddlemix.datasets.sft import padding_fraction

    return {name: padding_fraction(batches, lengths, pad_to)
            for name, (batches, pad_to) in epoch_batches(lengths, batch_size, num_replicas, seed).items()}


def pick_batches(batches, lengths, pad_to, k):
    """``k`` batches at evenly spaced quantiles of (computed width, real tokens): a small sample that
    spans the epoch's short and long batches instead of whatever a random draw happens to hit."""
    full = [b for b in batches if len(b) == len(batches[0])]
    key = [((pad_to or max(lengths[i] for i in b)), sum(lengths[i] for i in b)) for b in full]
    order = sorted(range(len(full)), key=lambda j: key[j])
    return [full[order[int((q + 0.5) / k * len(order))]] for q in range(k)]


def time_steps(model, optimizer, dataset, batches, pad_to, pad_id):
    """Seconds and real tokens of one training step per batch (the first batch is run once untimed)."""
    import paddle

    from paddlemix.datasets.sft import collate_sft

    def step(indices):
        batch = collate_sft([dataset[i] for i in indices], pad_id, pad_to_multiple_of=pad_to or 1)
        inputs = {k: paddle.to_tensor(v) for k, v in batch.items()}
        start = time.perf_counter()
        loss = model(**inputs, return_dict=True).loss
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)  # wait for the step to finish
        return time.perf_counter() - start, int(batch["attention_mask"].sum()), batch["input_ids"].shape

    step(batches[0])  # warm-up: kernel selection, allocator growth
    return [step(b) for b in batches]


def prepare_data(args, workdir):
    if args.medgrit_dir:
        return os.path.join(args.medgrit_dir, "train.json"), args.image_root
    from paddlemix.bird.construct.build import build_medgrit
    from paddlemix.bird.demo_data import build_demo_set

    sa_root, medgrit = os.path.join(workdir, "sa_med2d"), os.path.join(workdir, "medgrit")
    build_demo_set(sa_root, max_images=args.max_images, seed=0, progress=False)
    build_medgrit(sa_root, medgrit, seed=0, progress=False)
    return os.path.join(medgrit, "train.json"), os.path.join(sa_root, "images")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--medgrit_dir", default=None, help="folder with a Med-GRIT train.json (default: build the demo set)")
    p.add_argument("--image_root", default=None, help="image folder of --medgrit_dir's records")
    p.add_argument("--max_images", type=int, default=400, help="demo set size when building it")
    p.add_argument("--batch_size", type=int, default=4, help="per-device batch (the paper's 4)")
    p.add_argument("--num_replicas", type=int, default=1, help="data-parallel ranks the groups are dealt to")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per scheme")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.medgrit_dir and not args.image_root:
        p.error("--medgrit_dir needs --image_root")

    import paddle

    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.datasets.sft import SFTDataset
    from paddlemix.models.qwen_vl import QWenVLForCausalLM, get_preset
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer
    from paddlemix.processors.image_processing import QWenVLImageProcessor

    paddle.set_device("cpu")
    with tempfile.TemporaryDirectory() as workdir:
        train_json, image_root = prepare_data(args, workdir)
        records, _ = load_medgrit(train_json, image_root)
        tiny = get_preset("tiny")
        spans = {"Qwen-VL-Chat (image span 256)": 256, f"tiny (image span {tiny.image_span})": tiny.image_span}
        datasets = {}
        print(f"{len(records)} conversations from {train_json}; per-device batch {args.batch_size}, "
              f"{args.num_replicas} rank(s)\n")
        print(f"{'padding fraction over one epoch':<34}{'upstream':>10}{'random':>10}{'grouped':>10}"
              f"{'computed tokens upstream/grouped':>36}")
        for label, span in spans.items():
            ds = SFTDataset(records, QWenVLTokenizer(image_span=span), None, UPSTREAM_LENGTH, show_progress=False)
            datasets[span] = ds
            lengths = ds.lengths
            table = padding_table(lengths, args.batch_size, args.num_replicas, args.seed)
            # Computed positions are real / (1 - padding); the real tokens are the same in every scheme.
            ratio = (1 - table["grouped"]) / (1 - table["upstream"])
            print(f"{label:<34}{table['upstream']:>10.3f}{table['random']:>10.3f}{table['grouped']:>10.3f}"
                  f"{ratio:>35.2f}x")
            print(f"{'':<4}sample lengths: median {int(np.median(lengths))}, max {max(lengths)} tokens "
                  f"({len(lengths)} samples, {ds.summary().split(', ', 1)[1]})")

        dataset = datasets[tiny.image_span]
        dataset.image_processor = QWenVLImageProcessor.from_config(tiny)
        lengths = dataset.lengths
        paddle.seed(args.seed)
        model = QWenVLForCausalLM(tiny)
        model.train()
        optimizer = paddle.optimizer.AdamW(1e-4, parameters=model.parameters(), weight_decay=0.1)
        pad_id = QWenVLTokenizer(image_span=tiny.image_span).pad_token_id
        schemes = epoch_batches(lengths, args.batch_size, args.num_replicas, args.seed)
        rates = {}
        print(f"\ntraining steps of the tiny model on CPU ({args.steps} per scheme, forward + backward + AdamW)")
        for name in ("upstream", "grouped"):
            batches, pad_to = schemes[name]
            steps = time_steps(model, optimizer, dataset, pick_batches(batches, lengths, pad_to, args.steps),
                               pad_to, pad_id)
            seconds, real = sum(s for s, _, _ in steps), sum(t for _, t, _ in steps)
            rates[name] = real / seconds
            shapes = ", ".join(f"{shape[0]}x{shape[1]}" for _, _, shape in steps)
            print(f"  {name:<10} {rates[name]:8.1f} trained tokens/s  ({real} tokens in {seconds:.1f} s; "
                  f"batches {shapes})")
        print(f"\ngrouped / upstream trained tokens per second: {rates['grouped'] / rates['upstream']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
