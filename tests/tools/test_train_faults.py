"""Training with bad input: errors before any model is built, one ``error:`` line, paths relative to
the caller, and records that cannot be trained named rather than counted only."""

import json
import os
import shutil
import subprocess

import pytest
from tests.tools.train_helpers import DEMO_CONFIG, ROOT, train_args, train_env

pytestmark = pytest.mark.slow  # training runs in subprocesses


def train_main(*argv):
    from paddlemix.tools.supervised_finetune import main

    return main([os.path.join(ROOT, DEMO_CONFIG), *argv, "--device", "cpu"])


def test_relative_config_and_output_dir_mean_the_callers_directory(demo_data, tmp_path):
    shutil.copy(os.path.join(ROOT, DEMO_CONFIG), tmp_path / "my_config.json")
    args = train_args(demo_data, "out", "--max_steps", "1", "--save_steps", "100")
    i = args.index("--train_json")
    args[i + 1] = os.path.relpath(demo_data["train_json"], tmp_path)
    proc = subprocess.run(["sh", os.path.join(ROOT, "train.sh"), "cpu", "my_config.json", *args], cwd=tmp_path,
                          env=train_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "model_state.pdparams").is_file()
    assert not os.path.exists(os.path.join(ROOT, "out"))


def test_missing_train_json_is_one_error_line_before_any_model(demo_data, tmp_path):
    missing = tmp_path / "nothere.json"
    proc = subprocess.run(["sh", "train.sh", "cpu", DEMO_CONFIG, *train_args(demo_data, tmp_path / "o"),
                           "--train_json", str(missing)], cwd=ROOT, env=train_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and str(missing) in last
    assert "Traceback" not in proc.stderr and "trainable of" not in proc.stdout + proc.stderr
    assert not (tmp_path / "o" / "model_state.pdparams").exists()


def test_wrong_image_root_is_reported_before_the_checkpoint_is_read(demo_data, tiny_base, tmp_path):
    # A checkpoint whose weights are unreadable: loading it first would fail with another error.
    broken = tmp_path / "ckpt"
    broken.mkdir()
    shutil.copy(os.path.join(tiny_base, "config.json"), broken / "config.json")
    (broken / "model_state.pdparams").write_bytes(b"not weights")
    base = train_args(demo_data, tmp_path / "o", "--model_name_or_path", str(broken), "--model_preset", "")
    with pytest.raises(FileNotFoundError, match=r"image_root .*nowhere is not a folder"):
        train_main(*base, "--image_root", str(tmp_path / "nowhere"))
    bad_image = json.loads(open(demo_data["train_json"]).read())[:2]
    bad_image[1]["image"] = "missing.png"
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps(bad_image))
    from paddlemix.datasets.medgrit import MedGritError

    with pytest.raises(MedGritError, match=r"train\.json record 1 .*missing_image"):
        train_main(*base, "--train_json", str(bad), "--strict_data", "true")


def test_no_record_fitting_max_length_stops_before_training_and_names_them(demo_data, tmp_path):
    records = json.loads(open(demo_data["train_json"]).read())
    with pytest.raises(ValueError, match=rf"none of the {len(records)} records .* fits max_length=20 .*e\.g\. "
                                         rf"{records[0]['id']}: .*raise max_length"):
        train_main(*train_args(demo_data, tmp_path / "o"), "--max_length", "20")
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")


class RecordingLogger:
    """Stands in for PaddleNLP's logger (whose level and streams other tests may change)."""

    def __init__(self):
        self.lines = []

    def info(self, message):
        self.lines.append(message)

    warning = info


def test_too_long_records_are_logged_by_id(demo_data, tmp_path, monkeypatch):
    import paddlemix.tools.supervised_finetune as sft

    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.datasets.sft import SFTDataset
    from paddlemix.models.qwen_vl import get_preset
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer
    from paddlemix.tools.supervised_finetune import DataArguments, ModelArguments, load_training_data

    # Single-turn records, so a record is left out exactly when its whole sample is too long.
    raw = json.loads(open(demo_data["train_json"]).read())
    for rec in raw:
        rec["conversations"] = rec["conversations"][:1]
    single = tmp_path / "train.json"
    single.write_text(json.dumps(raw))
    config = get_preset("tiny")
    records, _ = load_medgrit(str(single), demo_data["images"])
    tokenizer = QWenVLTokenizer(image_span=config.image_span)
    lengths = SFTDataset(records, tokenizer, None, 10**6, show_progress=False).lengths
    max_length = sorted(lengths)[len(lengths) // 2]
    too_long = [r["id"] for r, n in zip(records, lengths) if n > max_length]  # an id may recur (one per task)
    assert 0 < len(too_long) < len(lengths)

    data_args = DataArguments(train_json=str(single), image_root=demo_data["images"], max_length=max_length)
    log = RecordingLogger()
    monkeypatch.setattr(sft, "logger", log)
    dataset, _ = load_training_data(ModelArguments(model_preset="tiny"), data_args, config, show_progress=False)
    assert len(dataset) == len(lengths) - len(too_long)
    skipped = [line for line in log.lines if line.startswith("skipped (too_long): ") and " ... and " not in line]
    assert [line.split(": ")[1] for line in skipped] == too_long[:20]
    if len(too_long) > 20:
        assert f"skipped (too_long): ... and {len(too_long) - 20} more" in log.lines
