"""Helpers shared by the training-tool tests: ``train.sh`` runs with the small overrides every run
shares, and readers for what a run leaves behind (CPU steps are slow: keep runs few and short)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CONFIG = "paddlemix/config/BiRD/sft_argument_demo.json"
SEED = 42  # the demo config's seed
BATCH = 2
MAX_LENGTH = 256


def run(cmd, **kwargs):
    """Run ``cmd`` in the repository; fail the test with the output's tail if it exits non-zero."""
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def train_args(data, output_dir, *extra):
    """The shared small overrides of the demo config (``extra`` ``--key value`` pairs come last and win).

    The model and what trains are pinned here (the tiny preset at its random start, everything
    trainable) so the tests do not move when the demo's tuned settings do."""
    return [
        "--model_preset", "tiny", "--resampler_init", "random", "--freeze_vision", "false", "--train_resampler", "true",
        "--task_fractions", "",  # every record: the tests count the training file's records
        "--train_json", data["train_json"], "--image_root", data["images"], "--output_dir", str(output_dir),
        "--per_device_train_batch_size", str(BATCH), "--max_length", str(MAX_LENGTH), "--logging_steps", "1",
        "--disable_tqdm", "true", *extra,
    ]


def train_command(devices, data, output_dir, *extra):
    return ["sh", "train.sh", devices, DEMO_CONFIG, *train_args(data, output_dir, *extra)]


def train_env(log_dir=None):
    env = dict(os.environ, PYTHON=sys.executable)
    if log_dir is not None:
        env["LOG_DIR"] = str(log_dir)
    return env


def run_train(devices, data, output_dir, *extra, log_dir=None):
    """``sh train.sh DEVICES demo.json ...`` to completion; returns the finished process."""
    return run(train_command(devices, data, output_dir, *extra), env=train_env(log_dir), timeout=600)


def step_logs(output_dir):
    """``{step: log entry}`` for the per-step entries (those with a ``loss``) of ``trainer_state.json``."""
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    return {h["step"]: h for h in history if "loss" in h}


def load_weights(path):
    import paddle

    return paddle.load(path, return_numpy=True)


def sample_lengths(data, image_span):
    """Token lengths of the training samples exactly as ``supervised_finetune`` encodes them."""
    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.datasets.sft import SFTDataset
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer

    records, _ = load_medgrit(data["train_json"], data["images"])
    return SFTDataset(records, QWenVLTokenizer(image_span=image_span), None, MAX_LENGTH, show_progress=False).lengths
