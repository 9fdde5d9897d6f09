"""QWenVLForCausalLM: image splicing, the labelled-positions loss, padding, freezing, save/load."""

import os

import numpy as np
import paddle
import pytest
from tests.models.qwen_vl.qwen_vl_reference import IM_END, IMG_END, IMG_START

from paddlemix.models.qwen_vl import modeling
from paddlemix.models.qwen_vl.configuration import get_preset
from paddlemix.models.qwen_vl.modeling import QWenVLForCausalLM, image_span_positions, positions_from_attention_mask
from paddlemix.tools.supervised_finetune import freeze_vision


def logits_of(model, ids, pixels=None, mask=None):
    out = model(
        paddle.to_tensor(ids),
        images=None if pixels is None else paddle.to_tensor(pixels),
        attention_mask=None if mask is None else paddle.to_tensor(mask),
        use_cache=False,
        return_dict=True,
    )
    return out.logits.numpy()


def labelled_forward(model, ids, labels, pixels=None, **switches):
    """The training call: ids and labels (and images), no cache, the output object."""
    return model(
        paddle.to_tensor(ids),
        images=None if pixels is None else paddle.to_tensor(pixels),
        labels=paddle.to_tensor(labels),
        use_cache=False,
        return_dict=True,
        **switches,
    )


def reference_loss(full_logits, labels):
    """Mean next-token cross-entropy over the labelled positions, in float64 NumPy: position t
    predicts ``labels[t + 1]``; -100 marks a position without a label."""
    labels = np.asarray(labels)
    rows, cols = np.nonzero(labels[:, 1:] != -100)
    picked = full_logits.astype(np.float64)[rows, cols]
    log_probs = picked - picked.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(rows)), labels[rows, cols + 1]])


# ---- configuration ----


def test_presets():
    big = get_preset("qwen-vl-chat-7b")
    assert (big.hidden_size, big.num_hidden_layers, big.num_attention_heads, big.kv_channels) == (4096, 32, 32, 128)
    assert (big.intermediate_size, big.vocab_size, big.image_span, big.resampler_heads) == (22016, 151936, 256, 32)
    assert big.visual["width"] == 1664 and big.visual["layers"] == 48 and big.visual["heads"] == 16
    assert (big.img_start_id, big.img_end_id, big.img_pad_id) == (151857, 151858, 151859)
    assert big.eos_token_id == [151645, 151644, 151643] and big.pad_token_id == 151643
    tiny = get_preset("tiny", num_hidden_layers=1, visual=dict(layers=1))
    assert tiny.num_hidden_layers == 1 and tiny.visual["layers"] == 1 and tiny.visual["width"] == 64
    with pytest.raises(ValueError, match="kv_channels"):
        get_preset("tiny", kv_channels=16)
    with pytest.raises(ValueError, match="unknown keys"):
        get_preset("tiny", visual=dict(widht=3))
    with pytest.raises(KeyError, match="tiny"):
        get_preset("huge")


# ---- image slots ----


def test_image_span_positions(tiny_config):
    span = 3
    ids = np.array(
        [
            [1, IMG_START, 7, 7, 7, IMG_END, 2, IMG_START, 8, 8, 8, IMG_END],
            [IMG_START, 9, 9, 9, IMG_END, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    got = image_span_positions(ids, IMG_START, IMG_END, span)
    np.testing.assert_array_equal(got, [[2, 3, 4], [8, 9, 10], [13, 14, 15]])
    with pytest.raises(ValueError, match="holds 2 ids"):
        image_span_positions(np.array([[IMG_START, 5, 5, IMG_END]]), IMG_START, IMG_END, span)
    with pytest.raises(ValueError, match="do not pair up"):
        image_span_positions(np.array([[IMG_START, 5, 5, 5, 5]]), IMG_START, IMG_END, span)
    with pytest.raises(ValueError, match="do not pair up"):
        image_span_positions(np.array([[IMG_END, 5, 5, 5, IMG_START]]), IMG_START, IMG_END, span)


def test_features_land_exactly_in_the_slots(tiny_model, tiny_pixels, make_prompt):
    ids = [
        make_prompt([5, 6], "a.png", [7]) + make_prompt([], "b.png", [8, 9]),
        make_prompt([1] * 30, "c.png", [2] * 41),
    ]
    pixels = paddle.to_tensor(tiny_pixels)
    out = tiny_model(
        paddle.to_tensor(ids), images=pixels, output_hidden_states=True, return_dict=True, use_cache=False
    )
    embeds = out.hidden_states[0].numpy()  # the decoder's input
    features = tiny_model.transformer.visual(pixels).numpy()
    table = tiny_model.transformer.wte.weight.numpy()
    ids = np.array(ids)
    slots = image_span_positions(ids, IMG_START, IMG_END, 64)
    is_slot = np.zeros(ids.size, dtype=bool)
    is_slot[slots.reshape(-1)] = True
    for k, slot in enumerate(slots):
        np.testing.assert_array_equal(embeds.reshape(-1, embeds.shape[-1])[slot], features[k])
    np.testing.assert_array_equal(embeds.reshape(-1, embeds.shape[-1])[~is_slot], table[ids.reshape(-1)[~is_slot]])


def test_image_count_must_match_slots(tiny_model, tiny_pixels, make_prompt):
    ids = paddle.to_tensor([make_prompt([5], "a.png", [6])])
    with pytest.raises(ValueError, match="no images were given"):
        tiny_model(ids)
    with pytest.raises(ValueError, match="1 image slot"):
        tiny_model(ids, images=paddle.to_tensor(tiny_pixels[:2]))
    with pytest.raises(ValueError, match="no <img>"):
        tiny_model(paddle.to_tensor([[5, 6, 7]]), images=paddle.to_tensor(tiny_pixels[:1]))


def test_features_are_cast_to_the_embedding_dtype(tiny_config, make_prompt):
    """A float32 vision tower feeding embeddings of another dtype (float64 here: CPU kernels lack
    bfloat16 scatter): the spliced features take the embedding dtype."""
    model = QWenVLForCausalLM(get_preset("tiny", num_hidden_layers=1, visual=dict(layers=1)))
    model.transformer.wte.to(dtype="float64")
    ids = paddle.to_tensor([make_prompt([5], "a.png", [6])])
    pixels = paddle.zeros([1, 3, 224, 224])
    embeds = model.transformer.embed(ids, pixels)
    assert embeds.dtype == paddle.float64
    np.testing.assert_allclose(embeds[0, 2:66].numpy(), model.transformer.visual(pixels)[0].numpy(), rtol=1e-6)


# ---- loss ----


def test_loss_uses_labelled_positions_only(tiny_model, tiny_pixels, make_prompt, monkeypatch):
    ids = [make_prompt([5, 6], "a.png", [70, 80, 90, IM_END]), make_prompt([9] * 3, "b.png", [11, 12, 13])]
    labels = np.full([2, len(ids[0])], -100)
    labels[0, -4:] = [70, 80, 90, IM_END]
    labels[1, -2:] = [12, 13]
    seen = []
    head_loss = modeling.linear_cross_entropy

    def spy(states, weight, targets, *args):
        seen.append(states.shape)
        return head_loss(states, weight, targets, *args)

    monkeypatch.setattr(modeling, "linear_cross_entropy", spy)
    out = labelled_forward(tiny_model, ids, labels, tiny_pixels[:2])
    assert seen == [[6, tiny_model.config.hidden_size]]  # 4 + 2 labelled positions, nothing else
    assert out.logits is None

    full = logits_of(tiny_model, ids, tiny_pixels[:2])
    assert float(out.loss) == pytest.approx(reference_loss(full, labels), rel=1e-5)

    both = labelled_forward(tiny_model, ids, labels, tiny_pixels[:2], logits_to_keep=0)
    np.testing.assert_allclose(both.logits.numpy(), full, rtol=1e-5, atol=1e-5)


def test_loss_leaves_out_the_ignored_target_ids(tiny_model, tiny_pixels, make_prompt):
    """The digit curriculum's switch: positions whose target is in ``loss_ignored_ids`` leave the mean."""
    ids = [make_prompt([5, 6], "a.png", [15, 80, 24, IM_END])]
    labels = np.full([1, len(ids[0])], -100)
    labels[0, -4:] = [15, 80, 24, IM_END]
    full = logits_of(tiny_model, ids, tiny_pixels[:1])
    without_digits = labels.copy()
    without_digits[0, -4] = without_digits[0, -2] = -100  # targets 15 and 24 ('0' and '9')
    tiny_model.loss_ignored_ids = tuple(range(15, 25))
    try:
        loss = float(labelled_forward(tiny_model, ids, labels, tiny_pixels[:1]).loss)
    finally:
        tiny_model.loss_ignored_ids = None
    assert loss == pytest.approx(reference_loss(full, without_digits), rel=1e-5)
    assert loss != pytest.approx(reference_loss(full, labels), rel=1e-3)
    assert float(labelled_forward(tiny_model, ids, labels, tiny_pixels[:1]).loss) == pytest.approx(
        reference_loss(full, labels), rel=1e-5
    )


def test_demo_preset_initialisation_keeps_the_published_scale_per_width():
    """std * sqrt(hidden) as the 7B's 0.02 * sqrt(4096), measured on the built weights."""
    from paddlemix.models.qwen_vl.builder import build_model

    model = build_model(preset="demo", seed=0)
    for name in ("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "lm_head.weight"):
        weight = dict(model.named_parameters())[name].numpy()
        assert weight.std() * np.sqrt(64) == pytest.approx(0.02 * np.sqrt(4096), rel=0.02), name


def test_loss_without_labelled_positions_is_zero(tiny_model):
    out = tiny_model(
        paddle.to_tensor([[5, 6, 7]]), labels=paddle.to_tensor([[5, -100, -100]]), use_cache=False, return_dict=True
    )
    assert float(out.loss) == 0.0


def test_tuple_output_for_the_trainer(tiny_model):
    """Without return_dict the trainer gets ``(loss,)``: a scalar, the same mean next-token loss."""
    ids = labels = [[5, 6, 7, 8]]
    (loss,) = tiny_model(paddle.to_tensor(ids), labels=paddle.to_tensor(labels), use_cache=False)
    assert loss.shape == []
    assert float(loss) == pytest.approx(reference_loss(logits_of(tiny_model, ids), labels), rel=1e-5)


# ---- padding and batching ----


def test_positions_from_attention_mask():
    mask = paddle.to_tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(positions_from_attention_mask(mask).numpy(), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def test_left_padding_and_per_image_isolation(tiny_model, tiny_pixels, make_prompt):
    """Each sample of a left-padded batch equals the sample alone, and an image only affects its own
    sample."""
    prompts = [make_prompt([5, 6], "a.png", [7, 8]), make_prompt([5] * 12, "bb.png", [9]), [3, 4, 5, 6]]
    pixels = tiny_pixels[:2]
    width = max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batch = logits_of(tiny_model, ids, pixels, mask)
    alone = [
        logits_of(tiny_model, [prompts[0]], pixels[:1]),
        logits_of(tiny_model, [prompts[1]], pixels[1:2]),
        logits_of(tiny_model, [prompts[2]]),
    ]
    for row, single in enumerate(alone):
        np.testing.assert_allclose(batch[row, width - len(prompts[row]) :], single[0], rtol=1e-4, atol=1e-4)

    perturbed = pixels.copy()
    perturbed[1] += 0.5 * np.random.default_rng(0).standard_normal(perturbed[1].shape).astype(np.float32)
    changed = logits_of(tiny_model, ids, perturbed, mask)
    np.testing.assert_array_equal(changed[0], batch[0])
    np.testing.assert_array_equal(changed[2], batch[2])
    assert np.abs(changed[1] - batch[1]).max() > 1e-3


# ---- training helpers ----


def test_freeze_vision(tiny_config, tiny_pixels, make_prompt):
    paddle.seed(0)
    model = QWenVLForCausalLM(get_preset("tiny", num_hidden_layers=1))
    trainable = freeze_vision(model)
    assert set(trainable) == {
        n
        for n, _ in model.transformer.visual.named_parameters()
        if n.startswith("attn_pool.")
    }
    assert "attn_pool.pos_embed" in trainable and "ln_post.weight" not in trainable and "proj" not in trainable
    ids = make_prompt([5], "a.png", [6, 7])
    out = model(
        paddle.to_tensor([ids]),
        images=paddle.to_tensor(tiny_pixels[:1]),
        labels=paddle.to_tensor([ids]),
        use_cache=False,
        return_dict=True,
    )
    out.loss.backward()
    grads = {n: p.grad for n, p in model.transformer.visual.named_parameters()}
    assert all(grads[n] is not None for n in trainable)
    assert all(grads[n] is None for n in grads if n not in trainable)
    assert model.transformer.h[0].mlp.w1.weight.grad is not None
    assert freeze_vision(model, train_resampler=False) == []
    assert all(p.stop_gradient for p in model.transformer.visual.parameters())


# ---- save / load ----


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "pdparams"])
def test_save_and_load_round_trip(tmp_path, tiny_model, tiny_pixels, make_prompt, safe):
    ids = [make_prompt([5, 6], "a.png", [7, 8, 9])]
    want = logits_of(tiny_model, ids, tiny_pixels[:1])
    tiny_model.save_pretrained(str(tmp_path), safe_serialization=safe)
    assert os.path.isfile(tmp_path / ("model.safetensors" if safe else "model_state.pdparams"))
    loaded = QWenVLForCausalLM.from_pretrained(str(tmp_path))
    loaded.eval()
    assert loaded.config.visual == tiny_model.config.visual
    np.testing.assert_array_equal(logits_of(loaded, ids, tiny_pixels[:1]), want)

    in_bf16 = QWenVLForCausalLM.from_pretrained(str(tmp_path), dtype="bfloat16")
    assert {p.dtype for p in in_bf16.parameters()} == {paddle.bfloat16}
    original = tiny_model.lm_head.weight
    np.testing.assert_array_equal(in_bf16.lm_head.weight.numpy(), original.astype("bfloat16").numpy())


def test_loading_a_checkpoint_that_does_not_fit_fails(tmp_path, tiny_model):
    tiny_model.save_pretrained(str(tmp_path), safe_serialization=True)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["transformer.visual.ln_post.bias"]
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "np"})
    with pytest.raises(ValueError, match="transformer.visual.ln_post.bias"):
        QWenVLForCausalLM.from_pretrained(str(tmp_path))


# ---- logits_to_keep and where image slots are found ----


def test_logits_to_keep_selects_the_last_positions(tiny_model, make_prompt, tiny_pixels):
    ids = paddle.to_tensor([make_prompt([5, 6], "a.png", [7, 8, 9])])
    pixels = paddle.to_tensor(tiny_pixels[:1])
    full = tiny_model(ids, images=pixels, use_cache=False, return_dict=True).logits.numpy()
    every = tiny_model(ids, images=pixels, use_cache=False, logits_to_keep=0, return_dict=True).logits.numpy()
    last2 = tiny_model(ids, images=pixels, use_cache=False, logits_to_keep=2, return_dict=True).logits.numpy()
    np.testing.assert_array_equal(every, full)
    assert last2.shape == (1, 2, full.shape[-1])
    np.testing.assert_allclose(last2, full[:, -2:], rtol=1e-5, atol=1e-5)


def test_well_formed_slots_are_found_without_the_host_check(tiny_model, tiny_pixels, make_prompt, monkeypatch):
    """The row-by-row host check runs only for a bad batch; a good one is handled by paddle ops."""
    ids = [make_prompt([5], "a.png", [6]) + make_prompt([], "b.png", [7]), make_prompt([1] * 68, "c.png", [2])]

    def host_check(*args):
        raise AssertionError("the host check ran for well-formed slots")

    monkeypatch.setattr(modeling, "_checked_slot_positions", host_check)
    assert logits_of(tiny_model, ids, tiny_pixels).shape[:2] == (2, 135)
    # Image k fills slot k: two in row 0, one in row 1 (flat positions; rows are 135 ids long).
    got = image_span_positions(paddle.to_tensor(ids), IMG_START, IMG_END, 64).numpy()
    np.testing.assert_array_equal(got[:, 0], [2, 69, 135 + 69])
    np.testing.assert_array_equal(got[:, -1] - got[:, 0], [63, 63, 63])


def test_square_rms_norm_equals_paddlenlps_and_replaces_every_norm(tiny_model):
    """The decoder's norms square by multiplying (SquareRMSNorm): PaddleNLP's ``pow(2)`` values and
    gradients to float32 rounding (Paddle's CPU ``pow`` is not always the correctly rounded square),
    under the same parameter names."""
    import paddle
    from paddlenlp.transformers.qwen.modeling import QWenRMSNorm

    from paddlemix.models.qwen_vl.modeling import SquareRMSNorm

    norms = [n for n, layer in tiny_model.named_sublayers() if isinstance(layer, QWenRMSNorm)]
    assert norms and all(type(dict(tiny_model.named_sublayers())[n]) is SquareRMSNorm for n in norms)
    assert len(norms) == 2 * tiny_model.config.num_hidden_layers + 1  # ln_1, ln_2 per block, ln_f
    x = np.random.default_rng(0).standard_normal([3, 40, 128]).astype(np.float32) * 3
    outs = []
    for cls in (QWenRMSNorm, SquareRMSNorm):
        paddle.seed(0)
        layer = QWenRMSNorm(tiny_model.config)
        layer.__class__ = cls
        layer.weight.set_value(np.linspace(0.5, 1.5, 128).astype(np.float32))
        inp = paddle.to_tensor(x, stop_gradient=False)
        out = layer(inp)
        (out * out).sum().backward()
        outs.append((out.numpy(), inp.grad.numpy(), layer.weight.grad.numpy()))
    for plain, square in zip(*outs):  # measured: 1.4% of the outputs differ, by one float32 ulp
        np.testing.assert_allclose(square, plain, rtol=1e-6, atol=1e-6 * float(np.abs(plain).max()))


def test_the_head_expanded_mask_gives_paddlenlps_logits(tiny_model, tiny_pixels, make_prompt, monkeypatch):
    """On CPU the attention mask comes expanded to every head (QWenVLModel.get_masks); logits of a
    left-padded batch equal those of PaddleNLP's broadcast [B, 1, S, S] mask."""
    from paddlenlp.transformers.qwen.modeling import QWenModel

    prompts = [make_prompt([5, 6], "a.png", [7, 8]), [3, 4, 5, 6]]
    width = max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    shapes = []
    original = type(tiny_model.transformer).get_masks

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        shapes.append(list(out.shape))
        return out

    monkeypatch.setattr(type(tiny_model.transformer), "get_masks", spy)
    expanded = logits_of(tiny_model, ids, tiny_pixels[:1], mask)
    assert shapes == [[2, tiny_model.config.num_attention_heads, width, width]]
    monkeypatch.setattr(type(tiny_model.transformer), "get_masks", QWenModel.get_masks)
    broadcast = logits_of(tiny_model, ids, tiny_pixels[:1], mask)
    np.testing.assert_allclose(expanded, broadcast, rtol=1e-6, atol=1e-6)


def test_numpy_attention_core_gives_paddlenlps_loss_and_gradients(tiny_config, tiny_pixels, make_prompt, monkeypatch):
    """Training on CPU, head split, rotary embedding and attention core run in NumPy
    (cpu_attention.py). On a left-padded batch (positions from the mask) the loss and every
    parameter's gradient equal PaddleNLP's attention forward to float32 rounding, and returned
    attention probabilities sum to one over the visible keys."""
    from paddlenlp.transformers.qwen.modeling import QWenAttention

    from paddlemix.models.qwen_vl import cpu_attention
    from paddlemix.models.qwen_vl.cpu_attention import CpuQWenAttention
    from paddlemix.models.qwen_vl.modeling import QWenVLForCausalLM

    fused_calls = []
    rotary_apply = cpu_attention._RotaryAttention.apply
    monkeypatch.setattr(cpu_attention._RotaryAttention, "apply", lambda *a: fused_calls.append(1) or rotary_apply(*a))

    paddle.seed(5)
    model = QWenVLForCausalLM(tiny_config)
    model.train()
    attentions = [layer for layer in model.sublayers() if isinstance(layer, QWenAttention)]
    assert len(attentions) == tiny_config.num_hidden_layers
    assert all(type(layer) is CpuQWenAttention for layer in attentions)
    prompts = [make_prompt([5, 6], "a.png", [70, 80, 90, IM_END]), [9, 10, 11, 12, 13]]
    width = max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts])
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    labels = np.where(mask == 1, ids, -100)
    labels[:, : width - 4] = -100

    def loss_and_grads():
        out = model(paddle.to_tensor(ids), images=paddle.to_tensor(tiny_pixels[:1]),
                    attention_mask=paddle.to_tensor(mask), labels=paddle.to_tensor(labels), use_cache=False,
                    return_dict=True)
        out.loss.backward()
        grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
        model.clear_gradients()
        return float(out.loss), grads

    fast_loss, fast = loss_and_grads()
    assert len(fused_calls) == tiny_config.num_hidden_layers  # one fused road a layer
    for layer in attentions:
        layer.__class__ = QWenAttention
    plain_loss, plain = loss_and_grads()
    assert len(fused_calls) == tiny_config.num_hidden_layers
    for layer in attentions:
        layer.__class__ = CpuQWenAttention
    assert fast_loss == pytest.approx(plain_loss, rel=1e-6)
    assert sorted(fast) == sorted(plain) and len(plain) > 10
    for name in plain:
        scale = float(np.abs(plain[name]).max())
        np.testing.assert_allclose(fast[name], plain[name], rtol=1e-4, atol=1e-5 * scale + 1e-12, err_msg=name)

    q = paddle.to_tensor(np.random.default_rng(0).standard_normal([2, 5, 4, 8]).astype(np.float32))
    additive = np.zeros([2, 1, 5, 5], dtype=np.float32)
    additive[:, :, :, :2] = np.finfo(np.float32).min  # two masked keys
    from paddlemix.models.qwen_vl.cpu_attention import attention_core

    _, probs = attention_core(q, q, q, paddle.to_tensor(additive))
    probs = probs.numpy()
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert not probs[..., :2].any()
