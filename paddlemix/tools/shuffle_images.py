"""Write test files whose images are exchanged among records of a modality (the image-blind ablation).

    python -m paddlemix.tools.shuffle_images --test_dir DIR --out_dir DIR [--tasks VG,RO] [--seed 0]

Reads ``DIR/test_<TASK>.json`` and writes the same records to ``OUT/test_<TASK>.json`` with every
image moved to other records of its modality, of another case (slab, volume) where the case sizes
allow (``paddlemix.bird.baselines.shuffle_images``).
Inferring on them and scoring against the unchanged references shows how much a model's answers
depend on the image it is shown.
"""

import argparse
import json
import os
import sys

from paddlemix.bird.baselines import shuffle_images
from paddlemix.bird.jsonio import write_json_atomic


def write_shuffled(test_dir: str, out_dir: str, tasks, seed: int = 0) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for task in tasks:
        test_file = os.path.join(test_dir, f"test_{task}.json")
        if not os.path.isfile(test_file):
            print(f"shuffle_images: {test_file} not found, skipping {task}", file=sys.stderr)
            continue
        with open(test_file, encoding="utf-8-sig") as f:  # tolerate a byte-order mark
            records = json.load(f)
        try:
            shuffled, exchanged = shuffle_images(records, seed)
        except ValueError as e:
            raise ValueError(f"{test_file}: {e}") from None
        path = os.path.join(out_dir, f"test_{task}.json")
        write_json_atomic(path, shuffled, indent=None)
        written[task] = (path, exchanged)
    if not written:
        raise FileNotFoundError(f"{test_dir}: none of " + ", ".join(f"test_{t}.json" for t in tasks) + " found")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--test_dir", required=True, help="folder with test_<TASK>.json")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--tasks", default="VG,RO", help="comma-separated tasks (default VG,RO)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for task, (path, exchanged) in write_shuffled(args.test_dir, args.out_dir, args.tasks.split(","), args.seed).items():
        counts = ", ".join(f"{m} {n} ({across} to another case)" for m, (n, across) in exchanged.items())
        print(f"wrote {path}: images exchanged per modality: {counts}")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
