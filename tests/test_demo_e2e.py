"""The demo, shortened: ``bash scripts/demo.sh`` on 24 images, 2 training steps and a few generated
tokens, into temporary directories. Checks that every stage leaves what the report promises (the
numbers of such a short run mean nothing; the full demo's are in the README)."""

import json
import os
import subprocess

import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # the whole demo.sh, shortened

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRIC_KEYS = {
    "VG": {"Recall@0.5", "match_precision@0.5", "match_recall@0.5", "match_F1@0.5", "Acc@0.25", "Acc@0.5", "Acc@0.75",
           "mIoU", "parse_failure_rate"},
    "RO": {"accuracy", "exact_match"},
    "GC": {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"},
    "MII": {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"},
}
RUN_TASKS = {
    "trained": ("VG", "RO", "GC", "MII"),
    "untrained": ("VG", "RO", "GC", "MII"),
    "shuffled": ("VG", "RO"),
    "baselines": ("VG", "RO"),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_e2e")
    dirs = {name: str(root / name) for name in ("data", "output", "reports")}
    env = dict(
        os.environ,
        DEMO_DIR=dirs["data"],
        OUTPUT_DIR=dirs["output"],
        REPORT_DIR=dirs["reports"],
        DEMO_MAX_IMAGES="24",
        TRAIN_ARGS="--max_steps 2 --per_device_train_batch_size 2 --logging_steps 1 --max_length 256",
        MAX_NEW_TOKENS_VG="8",
        MAX_NEW_TOKENS_RO="4",
        MAX_NEW_TOKENS_GC="8",
        MAX_NEW_TOKENS_MII="8",
    )
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"demo.sh exited with {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return {**dirs, "stdout": proc.stdout}


def test_every_stage_reports_progress_and_the_total_time(demo):
    out = demo["stdout"]
    for k in range(1, 10):
        assert f"=== [{k}/9]" in out
    assert "demo finished in " in out
    # inference and evaluation run two jobs at once: the side job's output is shown, its log removed
    for line in ("--- untrained: ", "--- shuffled: ", "--- untrained\n", "--- baselines\n"):
        assert line in out
    assert not [name for name in os.listdir(demo["reports"]) if name.endswith(".log") and name != "demo.log"]


def test_metrics_of_every_run_have_the_contract_keys(demo):
    for run, tasks in RUN_TASKS.items():
        for task in tasks:
            with open(os.path.join(demo["reports"], run, f"metrics_{task}.json")) as handle:
                metrics = json.load(handle)
            assert metrics["task"] == task and metrics["n"] > 0
            assert set(metrics["macro"]) >= METRIC_KEYS[task] and set(metrics["micro"]) >= METRIC_KEYS[task]
            for per_modality in metrics["per_modality"].values():
                assert set(per_modality) >= METRIC_KEYS[task] | {"n"}
        assert not os.path.exists(os.path.join(demo["reports"], run, "metrics_QA.json"))


def test_summary_compares_trained_shuffled_untrained_and_baseline(demo):
    with open(os.path.join(demo["reports"], "summary.md")) as handle:
        md = handle.read()
    assert "| task | metric | trained | shuffled | untrained | baseline | best |" in md
    assert "| task metric | modality | trained | shuffled | untrained | baseline | best |" in md
    for task, keys in METRIC_KEYS.items():
        for key in keys:
            assert f"| {task} | {key} |" in md
    assert "`loss.png`" in md and "`gallery/index.html`" in md
    assert "## VG image use, paired per question" in md
    assert "| modality | questions | reference boxes | found, real images | found, shuffled |" in md


def test_the_ablation_answers_the_same_questions_on_other_images(demo):
    for task in ("VG", "RO"):
        with open(os.path.join(demo["data"], "medgrit", f"test_{task}.json")) as handle:
            real = json.load(handle)
        with open(os.path.join(demo["reports"], "shuffled", "test", f"test_{task}.json")) as handle:
            shuffled = json.load(handle)
        assert [r["id"] for r in shuffled] == [r["id"] for r in real]
        moved = [a["image"] != b["image"] for a, b in zip(real, shuffled)]
        assert sum(moved) > len(real) / 2  # all but modalities with a single test image
        with open(os.path.join(demo["reports"], "shuffled", "pred", f"pred_{task}.jsonl")) as handle:
            assert [json.loads(line)["id"] for line in handle] == [r["id"] for r in real]


def test_loss_curve_gallery_and_untrained_checkpoint(demo):
    with Image.open(os.path.join(demo["reports"], "loss.png")) as image:
        assert image.format == "PNG"
    assert os.path.isfile(os.path.join(demo["reports"], "gallery", "index.html"))
    untrained = demo["output"] + "_untrained"
    assert {"model_state.pdparams", "tokenizer_config.json"} <= set(os.listdir(untrained))
    with open(os.path.join(demo["output"], "trainer_state.json")) as handle:
        assert json.load(handle)["global_step"] == 2


def test_demo_ends_by_printing_the_command_that_serves_its_model(demo):
    last = demo["stdout"].rstrip().splitlines()[-1].split()
    assert last[1:4] == ["-m", "paddlemix.tools.serve", "--checkpoint"]
    assert last[4] == demo["output"] and os.path.isfile(os.path.join(last[4], "model_state.pdparams"))
    assert last[5] == "--examples_dir" and any(name.endswith(".png") for name in os.listdir(last[6]))
