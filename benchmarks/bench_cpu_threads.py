"""CPU threads: training steps and batch inference with Paddle's default of one thread vs all cores.

    python benchmarks/bench_cpu_threads.py [--medgrit_dir DIR --image_root DIR] [--steps 40] [--threads N]

Paddle sets ``OMP_NUM_THREADS=1`` when the variable is unset, so a CPU run uses one core however
many the machine has; ``train.sh cpu`` and ``scripts/demo.sh`` now export the machine's core count
instead. This runs the demo's own commands both ways on the demo set (real images, real
tokenizer; built into a temporary folder unless ``--medgrit_dir`` is given):

  train   ``sh train.sh cpu paddlemix/config/BiRD/sft_argument_demo.json --max_steps STEPS``
          (``train_runtime`` from the run's metrics, so start-up and data encoding are excluded)
  infer   ``tests/models/BiRD/infer.py`` on the first 64 records of test_VG.json with the
          untrained demo model (``max_new_tokens 32``; an untrained model never stops early, so
          every sample generates the same number of tokens), wall time of the whole command

Prints seconds and the ratio one thread / N threads; asserts nothing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "paddlemix", "config", "BiRD", "sft_argument_demo.json")


def python() -> str:
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def run(cmd, threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def build_data(work: str):
    sa_root, medgrit = os.path.join(work, "sa"), os.path.join(work, "medgrit")
    subprocess.run([python(), "-m", "paddlemix.tools.build_demo_data", "--out_dir", sa_root, "--no_progress"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([python(), "-m", "paddlemix.tools.build_medgrit", "--sa_root", sa_root, "--out_dir", medgrit,
                    "--no_progress"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return medgrit, os.path.join(sa_root, "images")


def train_seconds(work, medgrit, image_root, steps, threads) -> float:
    out = os.path.join(work, f"train_{threads}")
    run(["sh", "train.sh", "cpu", CONFIG, "--train_json", os.path.join(medgrit, "train.json"),
         "--image_root", image_root, "--output_dir", out, "--overwrite_output_dir", "true",
         "--max_steps", str(steps), "--save_strategy", "no", "--logging_steps", str(steps)], threads)
    with open(os.path.join(out, "all_results.json")) as f:
        return float(json.load(f)["train_runtime"])


def infer_seconds(work, medgrit, image_root, checkpoint, threads) -> float:
    with open(os.path.join(medgrit, "test_VG.json")) as f:
        records = json.load(f)[:64]
    subset = os.path.join(work, "test_VG_64.json")
    with open(subset, "w") as f:
        json.dump(records, f)
    out = os.path.join(work, f"pred_{threads}.jsonl")
    if os.path.exists(out):
        os.remove(out)
    return run([python(), "tests/models/BiRD/infer.py", "--checkpoint", checkpoint, "--json_path", subset,
                "--image_root", image_root, "--output_file", out, "--batch_size", "64", "--max_new_tokens", "32"],
               threads)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--medgrit_dir", default=None)
    p.add_argument("--image_root", default=None)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="the many-thread setting")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        if args.medgrit_dir:
            medgrit, image_root = args.medgrit_dir, args.image_root
        else:
            medgrit, image_root = build_data(work)
        with open(CONFIG) as f:
            config = json.load(f)
        checkpoint = os.path.join(work, "untrained")
        subprocess.run([python(), "-m", "paddlemix.tools.init_checkpoint", "--preset", config["model_preset"],
                        "--seed", str(config["seed"]), "--output_dir", checkpoint],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = []
        for name, measure in (
            (f"train, {args.steps} steps (train_runtime)", lambda t: train_seconds(work, medgrit, image_root, args.steps, t)),
            ("infer, 64 VG prompts x 32 tokens (wall)", lambda t: infer_seconds(work, medgrit, image_root, checkpoint, t)),
        ):
            one, many = measure(1), measure(args.threads)
            rows.append((name, one, many))
    print(f"{'job':<44} {'1 thread':>10} {f'{args.threads} threads':>11} {'ratio':>7}")
    for name, one, many in rows:
        print(f"{name:<44} {one:>9.1f}s {many:>10.1f}s {one / many:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
