"""Checkpoint conversion: the published parameter table, and a tiny Hugging Face style checkpoint
converted and checked against a numpy forward computed from the raw (PyTorch-layout) tensors."""

import json
import math
import os
import re
import shutil

import numpy as np
import paddle
import pytest
from tests.models.qwen_vl.qwen_vl_reference import IMG_START, qwen_vl_logits, sincos_2d, vision_block

from paddlemix.cli import run
from paddlemix.models.qwen_vl.configuration import get_preset
from paddlemix.models.qwen_vl.convert import (
    ConversionError,
    check_source,
    convert_checkpoint,
    expected_parameter_shapes,
    target_action,
)
from paddlemix.models.qwen_vl.modeling import QWenVLForCausalLM
from paddlemix.tools.convert_qwen_vl import main as convert_main

DATA = os.path.join(os.path.dirname(__file__), "data", "qwen_vl_chat_params.json")


def published_table(layer_limit=None):
    """The published checkpoint's tensors (name -> PyTorch shape), '{i}' expanded."""
    with open(DATA, encoding="utf-8") as f:
        table = json.load(f)
    names = {}
    for name, shape in table["parameters"].items():
        marker = next((m for m in table["layers"] if name.startswith(m)), None)
        if marker is None:
            names[name] = tuple(shape)
            continue
        count = table["layers"][marker] if layer_limit is None else layer_limit
        for i in range(count):
            names[name.replace("{i}", str(i))] = tuple(shape)
    return names


# Modules that are torch.nn.Linear in the published modeling_qwen.py / visual.py (plus the
# MultiheadAttention's fused input projection): their weights are [out, in] and must be transposed.
LINEAR_SUFFIXES = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.w1.weight",
    "mlp.w2.weight",
    "mlp.c_proj.weight",
    "lm_head.weight",
    "attn.in_proj.weight",
    "attn.out_proj.weight",
    "mlp.c_fc.weight",
    "kv_proj.weight",
    "attn.in_proj_weight",
)


# ---- the full-size published checkpoint ----


def test_published_table_sizes_match_the_paper():
    """Qwen-VL paper, Table 1: LLM 7.7B, vision encoder 1.9B, adapter 0.08B, total 9.6B."""
    table = published_table()
    count = lambda pred: sum(math.prod(s) for n, s in table.items() if pred(n))  # noqa: E731
    adapter = count(lambda n: ".attn_pool." in n)
    llm = count(lambda n: "visual" not in n)
    assert 7.65e9 < llm < 7.75e9
    assert 0.075e9 < adapter < 0.085e9
    assert 9.6e9 < sum(math.prod(s) for s in table.values()) < 9.7e9
    assert len([n for n in table if n.startswith("transformer.h.")]) == 32 * 8
    assert len([n for n in table if ".resblocks." in n]) == 48 * 12


def test_converter_maps_every_published_tensor():
    config = get_preset("qwen-vl-chat-7b")
    table = published_table()
    check_source(table, expected_parameter_shapes(config), where="published table")  # raises on any gap
    transposed = {n for n in table if target_action(n) == "transpose"}
    assert transposed == {n for n in table if n.endswith(LINEAR_SUFFIXES)}
    assert all(target_action(n) != "skip" for n in table)


def test_full_width_model_has_the_published_names_and_shapes():
    """The model built at full width with two layers of each stack (lazily: nothing is allocated)."""
    from paddlenlp.transformers.model_utils import no_init_weights

    config = get_preset("qwen-vl-chat-7b", num_hidden_layers=2, visual=dict(layers=2))
    with paddle.LazyGuard(), no_init_weights():
        model = QWenVLForCausalLM(config)
    ours = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    table = published_table(layer_limit=2)
    assert set(ours) == set(table)
    for name, torch_shape in table.items():
        want = torch_shape[::-1] if name.endswith(LINEAR_SUFFIXES) else torch_shape
        assert ours[name] == want, name


# ---- a tiny checkpoint in the Hugging Face naming and layout ----


def hf_tiny_state(config, rng):
    """Random tensors named and shaped as the published PyTorch modules (nn.Linear: [out, in])."""
    h, v = config.hidden_size, config.vocab_size
    ff = config.intermediate_size // 2
    vis = config.visual
    width, e, q, p = vis["width"], vis["output_dim"], vis["n_queries"], vis["patch_size"]
    mlp = int(width * vis["mlp_ratio"])

    def weight(out_dim, in_dim):
        return rng.standard_normal([out_dim, in_dim]) / math.sqrt(in_dim)

    def norm(n):
        return 1.0 + 0.1 * rng.standard_normal(n)

    def bias(n):
        return 0.1 * rng.standard_normal(n)

    sd = {"transformer.wte.weight": rng.standard_normal([v, h]), "transformer.ln_f.weight": norm(h)}
    for i in range(config.num_hidden_layers):
        pre = f"transformer.h.{i}."
        sd.update(
            {
                pre + "ln_1.weight": norm(h),
                pre + "attn.c_attn.weight": weight(3 * h, h),
                pre + "attn.c_attn.bias": bias(3 * h),
                pre + "attn.c_proj.weight": weight(h, h),
                pre + "ln_2.weight": norm(h),
                pre + "mlp.w1.weight": weight(ff, h),
                pre + "mlp.w2.weight": weight(ff, h),
                pre + "mlp.c_proj.weight": weight(h, ff),
            }
        )
    sd["lm_head.weight"] = weight(v, h)
    vp = "transformer.visual."
    sd.update(
        {
            vp + "conv1.weight": rng.standard_normal([width, 3, p, p]) / math.sqrt(3 * p * p),
            vp + "positional_embedding": 0.5 * rng.standard_normal([vis["pos_embed_size"], width]),
            vp + "ln_pre.weight": norm(width),
            vp + "ln_pre.bias": bias(width),
            vp + "ln_post.weight": norm(e),
            vp + "ln_post.bias": bias(e),
            vp + "proj": weight(e, e),
        }
    )
    for i in range(vis["layers"]):
        pre = f"{vp}transformer.resblocks.{i}."
        sd.update(
            {
                pre + "ln_1.weight": norm(width),
                pre + "ln_1.bias": bias(width),
                pre + "attn.in_proj.weight": weight(3 * width, width),
                pre + "attn.in_proj.bias": bias(3 * width),
                pre + "attn.out_proj.weight": weight(width, width),
                pre + "attn.out_proj.bias": bias(width),
                pre + "ln_2.weight": norm(width),
                pre + "ln_2.bias": bias(width),
                pre + "mlp.c_fc.weight": weight(mlp, width),
                pre + "mlp.c_fc.bias": bias(mlp),
                pre + "mlp.c_proj.weight": weight(width, mlp),
                pre + "mlp.c_proj.bias": bias(width),
            }
        )
    ap = vp + "attn_pool."
    sd.update(
        {
            ap + "query": 0.5 * rng.standard_normal([q, e]),
            ap + "pos_embed": sincos_2d(e, math.isqrt(q)),
            ap + "kv_proj.weight": weight(e, width),
            ap + "attn.in_proj_weight": weight(3 * e, e),
            ap + "attn.in_proj_bias": bias(3 * e),
            ap + "attn.out_proj.weight": weight(e, e),
            ap + "attn.out_proj.bias": bias(e),
            ap + "ln_q.weight": norm(e),
            ap + "ln_q.bias": bias(e),
            ap + "ln_kv.weight": norm(e),
            ap + "ln_kv.bias": bias(e),
        }
    )
    return {k: np.asarray(t, dtype=np.float32) for k, t in sd.items()}


def hf_config_json(config):
    """A config.json as published (keys the converter must ignore included)."""
    vis = config.visual
    return {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig"},
        "model_type": "qwen",
        "bf16": True,
        "fp16": False,
        "fp32": False,
        "use_flash_attn": False,
        "onnx_safe": None,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "kv_channels": config.kv_channels,
        "intermediate_size": config.intermediate_size,
        "layer_norm_epsilon": 1e-6,
        "rotary_emb_base": 10000,
        "rotary_pct": 1.0,
        "seq_length": 2048,
        "max_position_embeddings": 8192,
        "use_dynamic_ntk": True,
        "use_logn_attn": True,
        "no_bias": True,
        "tie_word_embeddings": False,
        "visual": {
            "heads": vis["heads"],
            "image_size": vis["image_size"],
            "image_start_id": IMG_START,
            "layers": vis["layers"],
            "mlp_ratio": vis["mlp_ratio"],
            "output_dim": vis["output_dim"],
            "patch_size": vis["patch_size"],
            "width": vis["width"],
            "n_queries": vis["n_queries"],
            "pos_embed_size": vis["pos_embed_size"],
        },
    }


def write_hf_checkpoint(directory, config, state, bf16=False):
    """Two safetensors shards (LLM / vision + head) with model.safetensors.index.json."""
    os.makedirs(directory, exist_ok=True)
    shards = {
        "model-00001-of-00002.safetensors": {
            k: t for k, t in state.items() if k.startswith("transformer.h.") or k.startswith("transformer.wte")
        },
    }
    shards["model-00002-of-00002.safetensors"] = {
        k: t for k, t in state.items() if k not in shards["model-00001-of-00002.safetensors"]
    }
    for fn, tensors in shards.items():
        if bf16:
            from safetensors.paddle import save_file

            save_file(
                {k: paddle.to_tensor(t).astype("bfloat16") for k, t in tensors.items()},
                os.path.join(directory, fn),
                metadata={"format": "pt"},
            )
        else:
            from safetensors.numpy import save_file

            save_file(tensors, os.path.join(directory, fn), metadata={"format": "pt"})
    weight_map = {k: fn for fn, tensors in shards.items() for k in tensors}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config_json(config), f)


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory, tiny_config):
    state = hf_tiny_state(tiny_config, np.random.default_rng(0))
    src = str(tmp_path_factory.mktemp("hf_tiny"))
    write_hf_checkpoint(src, tiny_config, state)
    return src, state


@pytest.fixture(scope="module")
def converted(hf_tiny, tmp_path_factory):
    src, state = hf_tiny
    dst = str(tmp_path_factory.mktemp("converted"))
    convert_checkpoint(src, dst, dtype="float32", log=lambda msg: None)
    model = QWenVLForCausalLM.from_pretrained(dst, dtype="float32")
    model.eval()
    return dst, model, state


def test_output_layout(converted):
    dst, _, state = converted
    files = sorted(os.listdir(dst))
    assert "config.json" in files and "model.safetensors.index.json" in files
    assert [f for f in files if f.endswith(".safetensors")] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    with open(os.path.join(dst, "model.safetensors.index.json")) as f:
        assert set(json.load(f)["weight_map"]) == set(state)


def test_vision_block_matches_numpy(converted, tiny_config):
    _, model, state = converted
    x = np.random.default_rng(1).standard_normal([2, 9, tiny_config.visual["width"]])
    want = vision_block(state, "transformer.visual.transformer.resblocks.0.", x, tiny_config.visual["heads"])
    got = model.transformer.visual.transformer.resblocks[0](paddle.to_tensor(x, dtype="float32")).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_whole_model_matches_numpy(converted, tiny_config, make_prompt):
    """Vision tower, resampler, splicing, every decoder block and the LM head against the numpy
    forward of the raw checkpoint tensors."""
    _, model, state = converted
    size = tiny_config.visual["image_size"]
    pixels = np.random.default_rng(2).standard_normal([1, 3, size, size])
    ids = make_prompt([IMG_START - 13, 300, 4000], "scan.png", [17, 52, 9999, 151645])
    want_logits, want_states = qwen_vl_logits(
        state,
        ids,
        pixels,
        heads=tiny_config.num_attention_heads,
        vision_heads=tiny_config.visual["heads"],
        resampler_heads=tiny_config.resampler_heads,
        img_start_id=IMG_START,
    )
    out = model(
        paddle.to_tensor([ids]),
        images=paddle.to_tensor(pixels, dtype="float32"),
        output_hidden_states=True,
        return_dict=True,
        use_cache=False,
    )
    for layer, want in enumerate(want_states[:-1]):  # inputs of every decoder block
        np.testing.assert_allclose(
            out.hidden_states[layer][0].numpy(), want, rtol=1e-4, atol=2e-4, err_msg=f"block {layer}"
        )
    scale = np.abs(want_logits).max()
    np.testing.assert_allclose(out.logits[0].numpy(), want_logits, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.slow  # converts and loads the whole tiny model in bfloat16
def test_bfloat16_source_and_output(tmp_path, tiny_config):
    """A bfloat16 source is read without torch; a bfloat16 output loads as bfloat16 or float32."""
    state = hf_tiny_state(tiny_config, np.random.default_rng(3))
    # Values exactly representable in bfloat16, so every conversion step must be exact.
    state = {k: (v.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32) for k, v in state.items()}
    src = str(tmp_path / "hf_bf16")
    write_hf_checkpoint(src, tiny_config, state, bf16=True)
    name = "transformer.visual.attn_pool.attn.in_proj_weight"
    for dtype in ("float32", "bfloat16"):
        dst = str(tmp_path / f"out_{dtype}")
        convert_checkpoint(src, dst, dtype=dtype, log=lambda msg: None)
        for load_dtype in ("float32", "bfloat16"):
            model = QWenVLForCausalLM.from_pretrained(dst, dtype=load_dtype)
            param = model.state_dict()[name]
            assert param.dtype == getattr(paddle, load_dtype)
            np.testing.assert_array_equal(param.astype("float32").numpy(), state[name].T)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda sd: sd.pop("transformer.h.1.mlp.w2.weight"), "transformer.h.1.mlp.w2.weight"),
        (
            lambda sd: sd.update({"transformer.visual.extra_head.weight": np.zeros([2, 2], np.float32)}),
            "transformer.visual.extra_head.weight",
        ),
        (
            lambda sd: sd.update({"transformer.h.0.attn.c_attn.weight": np.zeros([128, 384], np.float32)}),
            "transformer.h.0.attn.c_attn.weight",
        ),
    ],
    ids=["missing", "extra", "transposed"],
)
def test_mismatched_checkpoint_is_refused_before_writing(tmp_path, tiny_config, change, message):
    state = hf_tiny_state(tiny_config, np.random.default_rng(4))
    change(state)
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    write_hf_checkpoint(src, tiny_config, state)
    with pytest.raises(ConversionError, match=re.escape(message)):
        convert_checkpoint(src, dst, log=lambda msg: None)
    assert not os.path.exists(dst)


def test_recomputed_buffers_are_skipped_and_sincos_table_filled(tmp_path, tiny_config):
    state = hf_tiny_state(tiny_config, np.random.default_rng(5))
    table = state.pop("transformer.visual.attn_pool.pos_embed")
    state["transformer.rotary_emb.inv_freq"] = np.ones([16], np.float32)
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    write_hf_checkpoint(src, tiny_config, state)
    messages = []
    convert_checkpoint(src, dst, log=messages.append)
    assert any("pos_embed" in m for m in messages)
    model = QWenVLForCausalLM.from_pretrained(dst)
    np.testing.assert_allclose(model.transformer.visual.attn_pool.pos_embed.numpy(), table, atol=1e-6)


def test_torch_bin_needs_torch(tmp_path, tiny_config):
    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed; the error path is for machines without it")
    except ImportError:
        pass
    with open(tmp_path / "config.json", "w") as f:
        json.dump(hf_config_json(tiny_config), f)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ConversionError, match="need torch"):
        convert_checkpoint(str(tmp_path), str(tmp_path / "out"), log=lambda msg: None)


def test_command_line(hf_tiny, tmp_path, capsys):
    src, _ = hf_tiny
    assert convert_main(["--src", src, "--dst", str(tmp_path / "out"), "--dtype", "bfloat16"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert run(convert_main, ["--src", str(tmp_path / "nowhere"), "--dst", str(tmp_path / "x")]) == 2
    assert "config.json not found" in capsys.readouterr().err


@pytest.mark.parametrize("keep", [0.5, 0.999, 4], ids=["half", "last_bytes", "header_only"])
def test_truncated_shard_is_named_and_nothing_is_written(hf_tiny, tmp_path, keep):
    src, _ = hf_tiny
    copy = tmp_path / "src"
    shutil.copytree(src, copy)
    shard = sorted(p for p in copy.iterdir() if p.suffix == ".safetensors")[-1]
    size = shard.stat().st_size
    os.truncate(shard, int(size * keep) if keep < 1 else keep)  # an interrupted download
    dst = tmp_path / "dst"
    with pytest.raises(ConversionError, match=re.escape(str(shard)) + ": truncated"):
        convert_checkpoint(str(copy), str(dst), log=lambda msg: None)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_output_appears_only_when_complete(hf_tiny, tmp_path):
    src, _ = hf_tiny
    dst = tmp_path / "dst"
    (tmp_path / "dst.partial").mkdir()
    (tmp_path / "dst.partial" / "model-00001-of-00002.safetensors").write_bytes(b"left by a killed run")
    convert_checkpoint(src, str(dst), log=lambda msg: None)
    assert sorted(os.listdir(tmp_path)) == ["dst"]
    assert QWenVLForCausalLM.from_pretrained(str(dst)) is not None
    with pytest.raises(ConversionError, match="exists and is not empty"):
        convert_checkpoint(src, str(dst), log=lambda msg: None)
