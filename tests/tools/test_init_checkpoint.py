"""init_checkpoint: the saved random preset is exactly the model a training run with that seed starts
from, and it loads for inference like a trained checkpoint."""

import os
import sys

import numpy as np
import pytest
from tests.models.qwen_vl.qwen_vl_reference import sincos_2d
from tests.tools.train_helpers import SEED, load_weights, run, run_train

from paddlemix.tools.init_checkpoint import main

pytestmark = pytest.mark.slow  # compares with a training run in a subprocess


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("init_tiny")
    run([sys.executable, "-m", "paddlemix.tools.init_checkpoint", "--preset", "tiny", "--seed", str(SEED),
         "--output_dir", str(out)])
    return str(out)


def test_writes_model_and_tokenizer(init_dir):
    names = set(os.listdir(init_dir))
    assert {"config.json", "model_state.pdparams", "tokenizer_config.json", "qwen.tiktoken"} <= names


def test_equals_the_weights_training_starts_from(init_dir, demo_data, tmp_path):
    # One step at learning rate 0 (no weight decay) leaves the run's initial weights unchanged on disk.
    out = tmp_path / "zero_lr"
    run_train("cpu", demo_data, out, "--max_steps", "1", "--learning_rate", "0", "--weight_decay", "0",
              "--save_strategy", "no")
    trained = load_weights(os.path.join(out, "model_state.pdparams"))
    initial = load_weights(os.path.join(init_dir, "model_state.pdparams"))
    assert sorted(trained) == sorted(initial)
    for name in initial:
        np.testing.assert_array_equal(trained[name], initial[name], err_msg=name)


def test_other_seed_other_weights(init_dir, tmp_path):
    assert main(["--preset", "tiny", "--seed", str(SEED + 1), "--output_dir", str(tmp_path)]) == 0
    a = load_weights(os.path.join(init_dir, "model_state.pdparams"))
    b = load_weights(os.path.join(tmp_path, "model_state.pdparams"))
    assert not np.array_equal(a["lm_head.weight"], b["lm_head.weight"])


def test_loads_for_inference(init_dir):
    from paddlemix.models.qwen_vl.builder import load_model

    model, tokenizer, _ = load_model(init_dir)
    assert model.config.image_span == tokenizer.image_span == 64
    assert model.config.vocab_size == 151936


def test_unknown_preset_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--preset", "no-such-preset", "--output_dir", str(tmp_path)])
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().err


def test_demo_preset_keeps_the_real_vocabulary(tmp_path):
    from paddlemix.models.qwen_vl.builder import load_model

    assert main(["--preset", "demo", "--seed", str(SEED), "--output_dir", str(tmp_path)]) == 0
    model, tokenizer, _ = load_model(str(tmp_path))
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vocab_size) == (64, 6, 151936)
    assert model.config.visual["output_dim"] == 64 and tokenizer.image_span == model.config.image_span == 64


def test_spatial_resampler_init_changes_only_the_resampler_queries_and_keys(init_dir, tmp_path):
    assert main(["--preset", "tiny", "--seed", str(SEED), "--resampler_init", "spatial", "--output_dir",
                 str(tmp_path)]) == 0
    random_start = load_weights(os.path.join(init_dir, "model_state.pdparams"))
    spatial = load_weights(os.path.join(tmp_path, "model_state.pdparams"))
    pool = "transformer.visual.attn_pool."
    weight, bias = spatial[pool + "attn.in_proj_weight"], spatial[pool + "attn.in_proj_bias"]
    e = weight.shape[0]
    np.testing.assert_array_equal(weight[:, :e], 4 * np.eye(e))  # queries: 4 x identity
    np.testing.assert_array_equal(weight[:, e : 2 * e], 4 * np.eye(e))  # keys: 4 x identity
    np.testing.assert_array_equal(bias[: 2 * e], 0.0)
    np.testing.assert_array_equal(spatial[pool + "query"], 0.0)
    # The values and everything else are the seed's random start, unchanged.
    np.testing.assert_array_equal(weight[:, 2 * e :], random_start[pool + "attn.in_proj_weight"][:, 2 * e :])
    changed = {pool + "attn.in_proj_weight", pool + "attn.in_proj_bias", pool + "query"}
    for name in set(random_start) - changed:
        np.testing.assert_array_equal(spatial[name], random_start[name], err_msg=name)


def test_layout_init_is_the_spatial_resampler_plus_a_sin_cos_vit_table(tmp_path):
    from paddlemix.models.qwen_vl.vision import LAYOUT_POS_SCALE

    spatial_dir, layout_dir = tmp_path / "spatial", tmp_path / "layout"
    for init, out in (("spatial", spatial_dir), ("layout", layout_dir)):
        assert main(["--preset", "tiny", "--seed", str(SEED), "--resampler_init", init, "--output_dir", str(out)]) == 0
    spatial = load_weights(os.path.join(spatial_dir, "model_state.pdparams"))
    layout = load_weights(os.path.join(layout_dir, "model_state.pdparams"))
    table = "transformer.visual.positional_embedding"
    size, width = layout[table].shape
    # The table against the independent NumPy reference of the sin-cos layout, not the code's own.
    np.testing.assert_allclose(layout[table], LAYOUT_POS_SCALE * sincos_2d(width, int(size**0.5)), atol=1e-6)
    assert not np.allclose(spatial[table], layout[table])
    for name in set(spatial) - {table}:
        np.testing.assert_array_equal(layout[name], spatial[name], err_msg=name)


def test_resampler_init_is_for_a_preset_a_checkpoint_keeps_its_weights(init_dir, monkeypatch):
    """The demo's config asks for the layout start; the same config run from a checkpoint loads the
    checkpoint's weights as saved and says why in a warning. An unknown start is refused either way."""
    from paddlenlp.trainer import TrainingArguments

    from paddlemix.tools import supervised_finetune as sft

    warnings = []
    monkeypatch.setattr(sft.logger, "warning", warnings.append)
    args = sft.ModelArguments(model_name_or_path=init_dir, resampler_init="layout")
    model = sft.build_training_model(args, TrainingArguments(output_dir=init_dir))
    saved = load_weights(os.path.join(init_dir, "model_state.pdparams"))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), saved[name], err_msg=name)
    assert len(warnings) == 1 and "resampler_init 'layout' initialises a model_preset" in warnings[0]
    for source in (dict(model_name_or_path=init_dir), dict(model_preset="tiny")):
        with pytest.raises(ValueError, match="resampler_init must be one of random, spatial, layout"):
            sft.build_training_model(
                sft.ModelArguments(resampler_init="grid", **source), TrainingArguments(output_dir=init_dir)
            )
