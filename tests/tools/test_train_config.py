"""The training configs as the recipe reads them: the paper's stage-2 JSON, command-line overrides, the
notes (``_`` keys) that are not arguments, and the recipe options that need no training run (the digit
curriculum's switch, task_fractions). No model is trained, so these stay in the fast core."""

import json
import os

from tests.tools.train_helpers import ROOT


def test_stage2_config_parses_to_the_paper_recipe():
    from paddlemix.tools.supervised_finetune import parse_arguments

    path = os.path.join(ROOT, "paddlemix/config/BiRD/sft_argument_stage2.json")
    model_args, data_args, args = parse_arguments([path])
    assert args.learning_rate == 2e-5
    assert str(args.lr_scheduler_type.value) == "cosine"
    assert args.warmup_ratio == 0.01
    assert args.weight_decay == 0.1
    assert (args.adam_beta1, args.adam_beta2) == (0.9, 0.95)
    assert args.per_device_train_batch_size == 4
    assert args.gradient_accumulation_steps == 8
    assert args.num_train_epochs == 2
    assert data_args.max_length == 2048
    assert args.bf16 is True and args.fp16 is False
    assert args.save_strategy.value == "steps" and args.save_steps == 20
    assert model_args.freeze_vision is True and model_args.train_resampler is True
    assert model_args.lora is False
    assert model_args.model_name_or_path and not model_args.model_preset
    # PaddleNLP turns sharding off in a single process (sharding degree 1), so the stage is read from
    # the arguments the JSON becomes; in a multi-GPU launch it parses to ShardingOption.SHARD_GRAD_OP.
    from paddlenlp.trainer import PdArgumentParser, TrainingArguments
    from paddlenlp.trainer.trainer_utils import ShardingOption

    argv = PdArgumentParser((TrainingArguments,)).read_json(path)
    assert argv[argv.index("--sharding") + 1] == "stage2"
    assert ShardingOption("stage2") == ShardingOption.SHARD_GRAD_OP
    # Command-line pairs after the JSON override it.
    _, data_args, args = parse_arguments([path, "--learning_rate", "1e-4", "--max_length", "512"])
    assert args.learning_rate == 1e-4 and data_args.max_length == 512


def test_config_notes_are_not_arguments(tmp_path):
    from paddlemix.tools.supervised_finetune import config_arguments, parse_arguments

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"_why": ["a note", "for the reader"], "max_length": 96, "learning_rate": 0.01}))
    assert config_arguments(str(path)) == ["--max_length", "96", "--learning_rate", "0.01"]
    _, data_args, args = parse_arguments([str(path), "--output_dir", str(tmp_path / "out")])
    assert data_args.max_length == 96 and args.learning_rate == 0.01
    demo = os.path.join(ROOT, "paddlemix/config/BiRD/sft_argument_demo.json")
    assert "--_departures_from_the_paper" not in config_arguments(demo)
    with open(demo) as handle:
        assert any("resampler" in note for note in json.load(handle)["_departures_from_the_paper"])


def test_digit_curriculum_switches_by_the_trainers_step():
    """Digits are left out of the loss for steps 0..start-1 and counted from ``start`` on, decided from
    the trainer state's step (so a run resumed past the switch trains them at once)."""
    from types import SimpleNamespace

    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer
    from paddlemix.tools.supervised_finetune import DigitCurriculum, digit_token_ids

    tokenizer = QWenVLTokenizer(image_span=4)
    ids = digit_token_ids(tokenizer)
    assert [tokenizer.decode([i]) for i in ids] == list("0123456789")
    model = SimpleNamespace(loss_ignored_ids=None)
    curriculum = DigitCurriculum(model, ids, start_step=3)
    seen = []
    for step in range(5):
        curriculum.on_step_begin(None, SimpleNamespace(global_step=step), None)
        seen.append(model.loss_ignored_ids)
    assert seen == [tuple(ids)] * 3 + [None, None]
    resumed = SimpleNamespace(loss_ignored_ids=None)
    DigitCurriculum(resumed, ids, start_step=3).on_train_begin(None, SimpleNamespace(global_step=600), None)
    assert resumed.loss_ignored_ids is None
    wrapped = SimpleNamespace(model=SimpleNamespace(loss_ignored_ids=None))  # as a LoRAModel holds the LM
    DigitCurriculum(wrapped, ids, start_step=3).on_train_begin(None, SimpleNamespace(global_step=0), None)
    assert wrapped.model.loss_ignored_ids is not None


def test_task_fractions_parse_and_sample():
    import pytest

    from paddlemix.tools.supervised_finetune import parse_task_fractions, sample_tasks

    assert parse_task_fractions("") == {}
    assert parse_task_fractions("gc:0.25, MII:0") == {"GC": 0.25, "MII": 0.0}
    for bad in ("XX:0.5", "GC", "GC:2", "GC:abc", "GC:-0.1"):
        with pytest.raises(ValueError, match="task_fractions"):
            parse_task_fractions(bad)
    records = [{"id": f"{task}{i}", "task": task} for i in range(2000) for task in ("VG", "GC")]
    kept = sample_tasks(records, {"GC": 0.25}, seed=1)
    counts = {task: sum(r["task"] == task for r in kept) for task in ("VG", "GC")}
    assert counts["VG"] == 2000  # a task without a share is kept whole
    assert abs(counts["GC"] - 500) < 5 * (2000 * 0.25 * 0.75) ** 0.5  # binomial(2000, 0.25), 5 sigma
    assert sample_tasks(records, {"GC": 0.25}, seed=1) == kept
    assert sample_tasks(records, {"GC": 0.25}, seed=2) != kept
    assert sample_tasks(records, {"GC": 0.0, "VG": 0.0}, seed=1) == []


def test_image_feature_cache_is_on_only_for_a_frozen_tower(monkeypatch):
    """The demo config asks for the cache; with the resampler trained the run keeps going without it
    and says why (its features would change every step)."""
    from paddlemix.tools import supervised_finetune as sft

    warnings = []
    monkeypatch.setattr(sft.logger, "warning", warnings.append)
    demo = os.path.join(ROOT, "paddlemix/config/BiRD/sft_argument_demo.json")
    model_args, _, training_args = sft.parse_arguments([demo, "--output_dir", "/nonexistent/o"])
    assert model_args.image_feature_cache_mb == 64 and not model_args.train_resampler
    cache = sft.build_training_model(model_args, training_args).transformer.image_feature_cache
    assert cache is not None and cache.max_bytes == 64 * 2**20 and not warnings
    model_args.train_resampler = True
    assert sft.build_training_model(model_args, training_args).transformer.image_feature_cache is None
    assert len(warnings) == 1 and "image_feature_cache_mb is off for this run: the vision tower trains (attn_pool." in warnings[0]


def test_grounding_config_is_the_demo_recipe_run_longer_on_vg_and_ro():
    """sft_argument_demo_grounding.json may differ from the demo's config only where it says it does
    (its resampler_init is the random start its documented runs had)."""
    from dataclasses import asdict

    from paddlemix.tools.supervised_finetune import parse_arguments, parse_task_fractions

    base = [os.path.join(ROOT, "paddlemix/config/BiRD/sft_argument_demo.json")]
    long = [os.path.join(ROOT, "paddlemix/config/BiRD/sft_argument_demo_grounding.json")]
    differ = {"max_steps": 3000, "digit_loss_start_step": 450, "task_fractions": "GC:0,MII:0",
              "output_dir": "output/demo_grounding", "save_steps": 500, "resampler_init": "random"}
    for demo_part, long_part in zip(parse_arguments(base), parse_arguments(long)):
        demo_fields, long_fields = asdict(demo_part), asdict(long_part)
        for key in demo_fields:
            if key in differ:
                assert long_fields[key] == differ[key], key
            elif key not in ("logging_dir", "run_name"):  # both follow output_dir
                assert long_fields[key] == demo_fields[key], key
    assert parse_task_fractions(differ["task_fractions"]) == {"GC": 0.0, "MII": 0.0}
