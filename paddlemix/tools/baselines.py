"""Write the image-blind baselines' predictions (VG class-mean box, RO majority class).

    python -m paddlemix.tools.baselines --train_json TRAIN.json --test_dir DIR --out_dir DIR

Reads ``DIR/test_VG.json`` and ``DIR/test_RO.json`` and writes ``pred_VG.jsonl`` and
``pred_RO.jsonl`` (overwriting them) for ``eval.py`` / ``eval_all.sh`` to score.
"""

import argparse
import os
import sys

from paddlemix.bird.baselines import ro_baseline, vg_baseline
from paddlemix.bird.jsonio import write_jsonl_atomic
from paddlemix.datasets.medgrit import load_medgrit


def write_baselines(train_json: str, test_dir: str, out_dir: str) -> dict:
    train, _ = load_medgrit(train_json, image_root="", check_images=False)
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for task, build in (("VG", vg_baseline), ("RO", ro_baseline)):
        test_file = os.path.join(test_dir, f"test_{task}.json")
        if not os.path.isfile(test_file):
            print(f"baselines: {test_file} not found, skipping {task}", file=sys.stderr)
            continue
        test, _ = load_medgrit(test_file, image_root="", check_images=False, task=task)
        rows = build(train, test)
        path = os.path.join(out_dir, f"pred_{task}.jsonl")
        write_jsonl_atomic(path, rows)
        written[task] = path
    if not written:
        raise FileNotFoundError(f"{test_dir}: neither test_VG.json nor test_RO.json found")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train_json", required=True)
    p.add_argument("--test_dir", required=True, help="folder with test_VG.json and test_RO.json")
    p.add_argument("--out_dir", required=True)
    args = p.parse_args(argv)
    for task, path in write_baselines(args.train_json, args.test_dir, args.out_dir).items():
        print(f"wrote {task} baseline predictions to {path}")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
