"""Supervised fine-tuning end to end on CPU: ``train.sh`` with one and two processes, checkpoints that
inference loads, kill-and-resume, frozen parameters and padding in the log (the configs are read in
test_train_config.py).

Every run is the demo config on 24 real demo images with batch 2, max_length 256 and 4 steps; runs
are module fixtures shared by the tests that read them.
"""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from tests.tools.train_helpers import (
    BATCH,
    ROOT,
    SEED,
    run_train,
    sample_lengths,
    step_logs,
    train_command,
    train_env,
    load_weights,
)

pytestmark = pytest.mark.slow  # training runs in subprocesses

STEPS = 4
# Full fine-tuning from a checkpoint with the ViT frozen; weight decay on so that a frozen parameter
# wrongly handed to the optimizer would move.
FROZEN_VIT = ("--freeze_vision", "true", "--weight_decay", "0.1", "--max_steps", str(STEPS),
              "--save_steps", str(STEPS // 2))


def from_checkpoint(path):
    return ("--model_name_or_path", path, "--model_preset", "")


@pytest.fixture(scope="module")
def straight_run(demo_data, tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    proc = run_train("cpu", demo_data, out, *from_checkpoint(tiny_base), *FROZEN_VIT)
    return {"out": str(out), "log": proc.stdout + proc.stderr}


@pytest.fixture(scope="module")
def resumed_run(demo_data, tiny_base, tmp_path_factory):
    """The straight run's command, SIGKILLed once checkpoint-2 is on disk, then started again unchanged."""
    out = tmp_path_factory.mktemp("resumed")
    cmd = train_command("cpu", demo_data, out, *from_checkpoint(tiny_base), *FROZEN_VIT)
    half = os.path.join(out, f"checkpoint-{STEPS // 2}")
    last_file = os.path.join(half, "rng_state.pth")  # the checkpoint's last file
    proc = subprocess.Popen(cmd, cwd=ROOT, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + 300
    while not (os.path.isfile(last_file) and os.path.getsize(last_file) > 0):
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            pytest.fail(f"the run ended or stalled before writing {last_file}:\n{proc.stdout.read()[-4000:]}")
        time.sleep(0.05)
    time.sleep(0.1)  # let the 32 KB rng_state write finish
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = {"returncode": proc.returncode, "entries": sorted(os.listdir(out))}
    proc.stdout.close()
    second = run_train("cpu", demo_data, out, *from_checkpoint(tiny_base), *FROZEN_VIT)
    return {"out": str(out), "killed": killed, "log": second.stdout + second.stderr}


@pytest.fixture(scope="module")
def killed_mid_save_run(demo_data, tiny_base, tmp_path_factory):
    """The straight run's command, SIGKILLed while checkpoint-4 is being written, then started again."""
    out = tmp_path_factory.mktemp("killed_mid_save")
    cmd = train_command("cpu", demo_data, out, *from_checkpoint(tiny_base), *FROZEN_VIT)
    weights = os.path.join(out, f"checkpoint-{STEPS}", "model_state.pdparams")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=train_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not (os.path.isfile(weights) and os.path.getsize(weights) > 0):
        if proc.poll() is not None or time.time() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the run ended or stalled before starting to write {weights}")
        time.sleep(0.001)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    from paddlemix.tools.supervised_finetune import checkpoint_problem

    half_written = checkpoint_problem(os.path.dirname(weights))
    second = run_train("cpu", demo_data, out, *from_checkpoint(tiny_base), *FROZEN_VIT)
    return {"out": str(out), "half_written": half_written, "log": second.stdout + second.stderr}


@pytest.fixture(scope="module")
def two_rank_run(demo_data, tmp_path_factory):
    out, logs = tmp_path_factory.mktemp("two_ranks"), tmp_path_factory.mktemp("launch_logs")
    run_train("cpu:2", demo_data, out, "--max_steps", str(STEPS), log_dir=logs)
    return {"out": str(out), "log_dir": str(logs)}


def expected_padding(demo_data, world_size):
    """Padding fraction of each of the first STEPS global batches, counted by hand over all ranks'
    batches: each batch is padded to its longest sample, so it computes rows × longest positions of
    which the samples' lengths are real. The trainer counts its attention masks instead; the sampler
    (tested in tests/datasets/test_sft_batches.py) only says which samples share a step."""
    from paddlemix.datasets.sft import length_grouped_batches
    from paddlemix.models.qwen_vl import get_preset

    lengths = sample_lengths(demo_data, get_preset("tiny").image_span)
    per_rank = [length_grouped_batches(lengths, BATCH, world_size, r, SEED, 0) for r in range(world_size)]
    fractions = []
    for k in range(STEPS):
        step = [[lengths[i] for i in batches[k]] for batches in per_rank]
        real = sum(sum(batch) for batch in step)
        computed = sum(len(batch) * max(batch) for batch in step)
        fractions.append(1.0 - real / computed)
    return fractions


def test_two_cpu_processes_train_and_the_checkpoint_generates(two_rank_run, demo_data, tmp_path):
    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.models.qwen_vl.builder import load_model
    from paddlemix.tools.infer import run_inference

    for rank in (0, 1):
        with open(os.path.join(two_rank_run["log_dir"], f"workerlog.{rank}")) as f:
            log = f.read()
        assert "world_size                    : 2" in log
        assert f"dataset_rank                  : {rank}" in log
        assert f"Total train batch size (w. parallel, distributed & accumulation) = {2 * BATCH}" in log
        assert "Training completed." in log
    logs = step_logs(two_rank_run["out"])
    assert sorted(logs) == list(range(1, STEPS + 1))
    assert all(np.isfinite(h["loss"]) for h in logs.values())

    model, tokenizer, image_processor = load_model(two_rank_run["out"])
    saved = load_weights(os.path.join(two_rank_run["out"], "model_state.pdparams"))
    loaded = model.state_dict()
    assert sorted(saved) == sorted(loaded)
    for name in ("lm_head.weight", "transformer.h.1.mlp.w2.weight", "transformer.visual.attn_pool.query"):
        np.testing.assert_array_equal(loaded[name].numpy(), saved[name])

    records, _ = load_medgrit(os.path.join(demo_data["medgrit"], "test_VG.json"), demo_data["images"])
    out_file = tmp_path / "pred_VG.jsonl"
    written = run_inference(model, tokenizer, image_processor, records[:3], str(out_file), batch_size=3,
                            max_new_tokens=6, show_progress=False)
    assert written == 3
    import json

    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in records[:3]]
    assert all(isinstance(r["response"], str) for r in rows)


def test_one_process_runs_the_numpy_adamw_and_ranks_paddles(straight_run, two_rank_run):
    """--cpu_adamw (on by default) reaches one CPU process; data-parallel ranks keep Paddle's AdamW.
    (CpuAdamW's equality with Paddle's update: tests/models/qwen_vl/test_cpu_adamw.py; its state
    across a kill and resume: test_kill_and_resume_reproduces_the_straight_run.)"""
    assert "optimizer: CpuAdamW" in straight_run["log"]
    assert "deferred updates: ['" in straight_run["log"]  # the LM head's update runs in the background
    rank_logs = "".join(open(os.path.join(two_rank_run["log_dir"], f)).read() for f in os.listdir(two_rank_run["log_dir"]))
    assert "optimizer: CpuAdamW" not in rank_logs and "loss" in rank_logs


def test_padding_fraction_is_logged_for_the_global_batch(straight_run, two_rank_run, demo_data):
    assert "padding_fraction: " in straight_run["log"]
    for run, world_size in ((straight_run, 1), (two_rank_run, 2)):
        logs = step_logs(run["out"])
        logged = [logs[k]["padding_fraction"] for k in range(1, STEPS + 1)]
        # Logged values are rounded to 4 decimals.
        expected = expected_padding(demo_data, world_size)
        # Length-grouped batches pad little (here up to ~0.004), but far more than the rounding
        # tolerance: a log of zeros would fail.
        assert max(expected) > 20 * 5.1e-5
        np.testing.assert_allclose(logged, expected, rtol=0, atol=5.1e-5)


def test_kill_and_resume_reproduces_the_straight_run(straight_run, resumed_run):
    killed = resumed_run["killed"]
    assert killed["returncode"] == -signal.SIGKILL
    assert f"checkpoint-{STEPS // 2}" in killed["entries"]
    assert f"checkpoint-{STEPS}" not in killed["entries"] and "model_state.pdparams" not in killed["entries"]
    assert "resuming from the latest complete checkpoint in output_dir" in resumed_run["log"]

    straight, resumed = step_logs(straight_run["out"]), step_logs(resumed_run["out"])
    assert sorted(straight) == sorted(resumed) == list(range(1, STEPS + 1))
    for key in ("loss", "learning_rate", "padding_fraction"):
        # Same data order, RNG, optimizer and scheduler state: CPU kernels make this exact; allow 1e-6.
        np.testing.assert_allclose([resumed[k][key] for k in sorted(resumed)],
                                   [straight[k][key] for k in sorted(straight)], rtol=0, atol=1e-6, err_msg=key)

    a = load_weights(os.path.join(straight_run["out"], "model_state.pdparams"))
    b = load_weights(os.path.join(resumed_run["out"], "model_state.pdparams"))
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)


def test_kill_during_a_save_resumes_from_the_last_complete_checkpoint(straight_run, killed_mid_save_run):
    run = killed_mid_save_run
    assert run["half_written"] is not None  # the kill landed inside the save of checkpoint-4
    last = os.path.join(run["out"], f"checkpoint-{STEPS}")
    assert f"skipping {last}: its save did not finish ({run['half_written']})" in run["log"]
    assert f"resuming from the latest complete checkpoint in output_dir: {run['out']}/checkpoint-{STEPS // 2}" in run["log"]
    a = load_weights(os.path.join(straight_run["out"], "model_state.pdparams"))
    b = load_weights(os.path.join(run["out"], "model_state.pdparams"))
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)
    straight, resumed = step_logs(straight_run["out"]), step_logs(run["out"])
    np.testing.assert_allclose([resumed[k]["loss"] for k in sorted(resumed)],
                               [straight[k]["loss"] for k in sorted(straight)], rtol=0, atol=1e-6)


def test_frozen_vit_is_bit_identical_and_resampler_and_llm_moved(straight_run, tiny_base):
    before = load_weights(os.path.join(tiny_base, "model_state.pdparams"))
    after = load_weights(os.path.join(straight_run["out"], "model_state.pdparams"))
    assert sorted(before) == sorted(after)
    changed = {n for n in before if not np.array_equal(before[n], after[n])}

    vision = [n for n in before if n.startswith("transformer.visual.")]
    # Upstream fix_vit: everything in the vision tower frozen except the resampler (attn_pool).
    resampler = [n for n in vision if n.startswith("transformer.visual.attn_pool.")]
    vit = [n for n in vision if n not in resampler]
    llm = [n for n in before if not n.startswith("transformer.visual.")]
    assert len(vit) > 20 and len(resampler) >= 8 and len(llm) > 15
    assert "transformer.visual.ln_post.weight" in vit and "transformer.visual.proj" in vit
    assert not changed & set(vit), f"frozen vision parameters changed: {sorted(changed & set(vit))}"
    assert set(resampler) <= changed, f"resampler parameters not trained: {sorted(set(resampler) - changed)}"
    assert set(llm) <= changed, f"LLM parameters not trained: {sorted(set(llm) - changed)}"
