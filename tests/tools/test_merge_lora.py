"""LoRA fine-tuning and ``paddlemix.tools.merge_lora``: which modules get adapters, that training moves
only the adapters, that the run keeps what merging needs, and that the merged checkpoint computes
what the unmerged model computes."""

import json
import os
import sys

import numpy as np
import pytest
from tests.tools.train_helpers import DEMO_CONFIG, ROOT, SEED, load_weights, run, train_args

pytestmark = pytest.mark.slow  # LoRA training in a subprocess

RANK, ALPHA, STEPS = 4, 8, 4
LLM_LAYERS = 2  # the tiny preset
ADAPTED = sorted(f"transformer.h.{i}.{m}" for i in range(LLM_LAYERS)
                 for m in ("attn.c_attn", "attn.c_proj", "mlp.w1", "mlp.w2"))

# Train through supervised_finetune.main and keep the trained model's full state (adapters and the
# frozen weights), which a LoRA run does not save.
TRAIN_AND_DUMP = (
    "import sys, paddle; sys.path.insert(0, sys.argv[1]);"
    "from paddlemix.tools.supervised_finetune import main;"
    "trainer = main(sys.argv[3:]);"
    "paddle.save(trainer.model.model.state_dict(), sys.argv[2])"
)


@pytest.fixture(scope="module")
def lora_run(demo_data, tmp_path_factory):
    """The demo config (random tiny preset) with LoRA rank 4, 4 steps, checkpoint every 2."""
    out = tmp_path_factory.mktemp("lora")
    dump = out.parent / f"{out.name}_trained_state.pdparams"
    args = train_args(demo_data, out, "--lora", "true", "--lora_rank", str(RANK), "--lora_alpha", str(ALPHA),
                      "--max_steps", str(STEPS), "--save_steps", str(STEPS // 2), "--device", "cpu")
    run([sys.executable, "-c", TRAIN_AND_DUMP, ROOT, str(dump), DEMO_CONFIG, *args], timeout=600)
    return {"out": str(out), "trained": str(dump)}


@pytest.fixture(scope="module")
def merged(lora_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("merged")
    proc = run([sys.executable, "-m", "paddlemix.tools.merge_lora", "--lora_dir", lora_run["out"],
                "--output_dir", str(path)], timeout=300)
    assert f"merged {len(ADAPTED)} LoRA layers" in proc.stdout
    return str(path)


def sample_batch(demo_data, tokenizer, image_processor, n=2):
    """Two real training samples as a padded model input."""
    import paddle

    from paddlemix.datasets.medgrit import load_medgrit
    from paddlemix.datasets.sft import SFTDataset, collate_sft

    records, _ = load_medgrit(demo_data["train_json"], demo_data["images"])
    dataset = SFTDataset(records[:n], tokenizer, image_processor, 256, show_progress=False)
    batch = collate_sft([dataset[i] for i in range(n)], tokenizer.pad_token_id)
    return {k: paddle.to_tensor(batch[k]) for k in ("input_ids", "attention_mask", "images")}


def logits_of(model, batch):
    import paddle

    model.eval()
    with paddle.no_grad():
        return model(**batch, return_dict=True).logits.numpy()


def test_lora_run_saves_adapters_and_the_base_they_were_trained_on(lora_run):
    import paddle

    from paddlemix.models.qwen_vl import QWenVLForCausalLM, get_preset

    out = lora_run["out"]
    with open(os.path.join(out, "lora_config.json")) as f:
        config = json.load(f)
    assert config["base_model_name_or_path"] == os.path.join(out, "base_model")
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (RANK, ALPHA, 0.05)
    adapters = load_weights(os.path.join(out, "lora_model_state.pdparams"))
    assert sorted(adapters) == sorted(f"{n}.lora_{ab}" for n in ADAPTED for ab in "AB")
    # The saved base is exactly the preset the run initialised (same seed, same construction).
    paddle.seed(SEED)
    fresh = QWenVLForCausalLM(get_preset("tiny")).state_dict()
    base = load_weights(os.path.join(out, "base_model", "model_state.pdparams"))
    assert sorted(base) == sorted(fresh)
    for name in base:
        np.testing.assert_array_equal(base[name], fresh[name].numpy(), err_msg=name)


def test_lora_training_moves_only_the_adapters(lora_run):
    out = lora_run["out"]
    trained = load_weights(lora_run["trained"])
    base = load_weights(os.path.join(out, "base_model", "model_state.pdparams"))
    lora_keys = sorted(k for k in trained if ".lora_" in k)
    assert sorted(set(trained) - set(lora_keys)) == sorted(base)
    for name in base:
        np.testing.assert_array_equal(trained[name], base[name], err_msg=f"frozen {name} changed")
    final = load_weights(os.path.join(out, "lora_model_state.pdparams"))
    half = load_weights(os.path.join(out, f"checkpoint-{STEPS // 2}", "lora_model_state.pdparams"))
    assert sorted(final) == lora_keys
    for name in lora_keys:
        np.testing.assert_array_equal(final[name], trained[name], err_msg=f"saved {name} is not the trained one")
        if name.endswith("lora_B"):
            assert np.abs(final[name]).max() > 0, f"{name} never left its zero initialisation"
        assert not np.array_equal(final[name], half[name]), f"{name} did not change after step {STEPS // 2}"


def test_merged_checkpoint_matches_the_unmerged_model(lora_run, merged, demo_data):
    import paddle
    from paddlenlp.peft import LoRAConfig, LoRAModel

    from paddlemix.models.qwen_vl import QWenVLForCausalLM, generate_batch
    from paddlemix.models.qwen_vl.builder import load_model

    model, tokenizer, image_processor = load_model(merged)
    batch = sample_batch(demo_data, tokenizer, image_processor)
    merged_logits = logits_of(model, batch)

    base_dir = os.path.join(lora_run["out"], "base_model")
    unmerged = LoRAModel(QWenVLForCausalLM.from_pretrained(base_dir), LoRAConfig.from_pretrained(lora_run["out"]))
    unmerged.model.set_state_dict(paddle.load(lora_run["trained"]))
    unmerged_logits = logits_of(unmerged, batch)
    base_logits = logits_of(QWenVLForCausalLM.from_pretrained(base_dir), batch)

    # W x + (x A) B s vs (W + A B s) x in float32: rounding differences only (measured ~1e-6).
    np.testing.assert_allclose(merged_logits, unmerged_logits, rtol=1e-5, atol=1e-5)
    assert np.abs(merged_logits - base_logits).max() > 1e-3, "the adapters had no effect: the comparison is empty"

    prompts = [batch["input_ids"][0].numpy()[:120].tolist()]
    new_ids = generate_batch(model, tokenizer, prompts, images=batch["images"][:1], max_new_tokens=4)
    assert len(new_ids) == 1 and len(new_ids[0]) <= 4


def test_merge_of_a_checkpoint_with_an_explicit_base_is_w_plus_ab_times_scaling(lora_run, tmp_path):
    from paddlemix.tools.merge_lora import merge_lora

    half = os.path.join(lora_run["out"], f"checkpoint-{STEPS // 2}")
    base_dir = os.path.join(lora_run["out"], "base_model")
    merge_lora(half, str(tmp_path / "merged_half"), base_model=base_dir)
    weights = load_weights(str(tmp_path / "merged_half" / "model_state.pdparams"))
    base = load_weights(os.path.join(base_dir, "model_state.pdparams"))
    adapters = load_weights(os.path.join(half, "lora_model_state.pdparams"))
    for name in sorted(base):
        layer = name[: -len(".weight")]
        if layer in ADAPTED:
            a, b = adapters[f"{layer}.lora_A"].astype(np.float64), adapters[f"{layer}.lora_B"].astype(np.float64)
            expected = base[name] + a @ b * (ALPHA / RANK)
            np.testing.assert_allclose(weights[name], expected, rtol=0, atol=1e-6, err_msg=name)
            assert not np.array_equal(weights[name], base[name])
        else:
            np.testing.assert_array_equal(weights[name], base[name], err_msg=name)
    assert os.path.isfile(tmp_path / "merged_half" / "tokenizer_config.json")


def test_merge_says_what_is_missing(lora_run, tmp_path):
    import paddle
    from paddlenlp.peft import LoRAConfig

    from paddlemix.models.qwen_vl import QWenVLForCausalLM
    from paddlemix.tools.merge_lora import merge_lora, merge_lora_weights

    with pytest.raises(FileNotFoundError, match="lora_config.json"):
        merge_lora(str(tmp_path), str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="--base_model"):
        merge_lora(lora_run["out"], str(tmp_path / "x"), base_model=str(tmp_path))
    with pytest.raises(ValueError, match="must differ"):
        merge_lora(lora_run["out"], lora_run["out"])

    model = QWenVLForCausalLM.from_pretrained(os.path.join(lora_run["out"], "base_model"))
    config = LoRAConfig.from_pretrained(lora_run["out"])
    adapters = paddle.load(os.path.join(lora_run["out"], "lora_model_state.pdparams"))
    missing_layer = {k: v for k, v in adapters.items() if not k.startswith("transformer.h.1.mlp.w2.")}
    with pytest.raises(ValueError, match=r"transformer\.h\.1\.mlp\.w2"):
        merge_lora_weights(model, missing_layer, config)
    half_adapter = {k: v for k, v in adapters.items() if k != "transformer.h.0.attn.c_attn.lora_B"}
    with pytest.raises(ValueError, match="incomplete"):
        merge_lora_weights(model, half_adapter, config)


def test_lora_config_puts_rank_64_adapters_on_the_llm_projections_only(tiny_base, tmp_path):
    from paddlenlp.peft import LoRAModel
    from paddlenlp.peft.lora.lora_layers import LoRALinear

    from paddlemix.tools.supervised_finetune import build_training_model, parse_arguments

    path = os.path.join(ROOT, "paddlemix/config/BiRD/sft_argument_stage2_lora.json")
    model_args, _, args = parse_arguments([path])
    assert model_args.lora is True
    assert (model_args.lora_rank, model_args.lora_alpha, model_args.lora_dropout) == (64, 16, 0.05)
    assert args.learning_rate == 1e-4 and args.bf16 is True

    # The same config on the tiny model (float32 on CPU): which layers get adapters.
    model_args, _, args = parse_arguments([path, "--model_name_or_path", tiny_base, "--bf16", "false",
                                           "--output_dir", str(tmp_path)])
    model = build_training_model(model_args, args)
    assert isinstance(model, LoRAModel)
    layers = dict(model.model.named_sublayers())
    adapted = sorted(n for n, layer in layers.items() if isinstance(layer, LoRALinear))
    # Qwen-VL's recipe: attention c_attn and c_proj, MLP w1 and w2 of every LLM layer; not the LLM MLP's
    # c_proj, nothing in the vision tower.
    assert adapted == ADAPTED
    assert all(layers[n].r == 64 and layers[n].scaling == 16 / 64 for n in adapted)
    trainable = sorted(n for n, p in model.model.named_parameters() if not p.stop_gradient)
    assert trainable == sorted(f"{n}.lora_{ab}" for n in ADAPTED for ab in "AB")
    assert model.lora_config.base_model_name_or_path == os.path.abspath(tiny_base)


def test_command_line_reports_a_bad_lora_dir_in_one_error_line(tmp_path):
    import subprocess

    nowhere = tmp_path / "nowhere"
    cmd = [sys.executable, "-m", "paddlemix.tools.merge_lora", "--lora_dir", str(nowhere), "--output_dir", str(tmp_path / "m")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {nowhere}/lora_config.json not found")
    assert not (tmp_path / "m").exists()
