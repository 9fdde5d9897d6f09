"""``train.sh cpu``'s thread split: Paddle's kernels on one thread, NumPy's BLAS on every core, unless
the caller says otherwise. A stand-in Python prints what the training process would be given."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "paddlemix/config/BiRD/sft_argument_demo.json"


def threads_given(tmp_path, **env_vars):
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "OMP=${OMP_NUM_THREADS:-unset} OPENBLAS=${OPENBLAS_NUM_THREADS:-unset}"\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env.update(env_vars, PYTHON=str(fake))
    proc = subprocess.run(["sh", "train.sh", "cpu", CONFIG], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_one_cpu_process_gets_paddle_one_thread_and_numpy_every_core(tmp_path):
    cores = len(os.sched_getaffinity(0))  # what nproc counts: the cores this process may run on
    assert threads_given(tmp_path) == f"OMP=1 OPENBLAS={cores}"


def test_an_explicit_thread_count_wins(tmp_path):
    assert threads_given(tmp_path, OMP_NUM_THREADS="3") == "OMP=3 OPENBLAS=unset"
    assert threads_given(tmp_path, OPENBLAS_NUM_THREADS="2") == "OMP=unset OPENBLAS=2"
