"""Generation: the lean greedy loop and PaddleNLP's generate, KV cache, left padding, images seen once, stop ids."""

import numpy as np
import paddle
import pytest
from tests.models.qwen_vl.qwen_vl_reference import ENDOFTEXT, IM_END, IM_START

from paddlemix.models.qwen_vl.generation import generate_batch

MAX_NEW = 10


@pytest.fixture(scope="module")
def prompts(make_prompt):
    return [
        make_prompt([151644, 872, 198], "a.png", [3838, 374, 419, 30, 151645, 198]),
        [151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198],  # no image
        make_prompt([151644] + [100] * 17, "scan_b.png", [1, 2, 3]),
    ]


def greedy_by_hand(model, ids, pixels, steps):
    """Reference decoding: re-run the whole sequence each step and take the arg-max."""
    ids = list(ids)
    new = []
    for _ in range(steps):
        out = model(paddle.to_tensor([ids]), images=pixels, use_cache=False, return_dict=True)
        token = int(out.logits[0, -1].argmax())
        if token in (IM_END, IM_START, ENDOFTEXT):
            break
        ids.append(token)
        new.append(token)
    return new


def test_cached_equals_uncached_and_by_hand(tiny_model, tiny_pixels, prompts):
    pixels = paddle.to_tensor(tiny_pixels[:1])
    cached = generate_batch(tiny_model, None, [prompts[0]], pixels, max_new_tokens=MAX_NEW)
    uncached = generate_batch(tiny_model, None, [prompts[0]], pixels, max_new_tokens=MAX_NEW, use_cache=False)
    assert cached == uncached
    assert cached[0] == greedy_by_hand(tiny_model, prompts[0], pixels, MAX_NEW)
    assert len(cached[0]) == MAX_NEW


def test_cached_decoding_step_matches_a_full_forward(tiny_model, tiny_pixels, prompts):
    """One prefill and two cached steps of a left-padded batch, driven through
    prepare_inputs_for_generation, give the logits of a full forward over the whole sequence."""
    pixels = paddle.to_tensor(tiny_pixels[:2])
    width = max(map(len, prompts))
    ids = paddle.to_tensor([[ENDOFTEXT] * (width - len(p)) + p for p in prompts])
    mask = paddle.to_tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    past = None
    for step in range(3):
        inputs = tiny_model.prepare_inputs_for_generation(
            ids, past_key_values=past, attention_mask=mask, images=pixels, use_cache=True
        )
        assert (inputs["images"] is None) == (step > 0)
        out = tiny_model(**inputs, return_dict=True)
        full = tiny_model(ids, images=pixels, attention_mask=mask, use_cache=False, return_dict=True).logits[:, -1]
        np.testing.assert_allclose(out.logits[:, -1].numpy(), full.numpy(), rtol=1e-5, atol=1e-5)
        past = out.past_key_values
        ids = paddle.concat([ids, out.logits[:, -1].argmax(-1, keepdim=True)], axis=1)
        mask = paddle.concat([mask, paddle.ones([3, 1], dtype=mask.dtype)], axis=1)


def test_left_padded_batch_equals_each_sample_alone(tiny_model, tiny_pixels, prompts):
    pixels = tiny_pixels[:2]  # prompts 0 and 2 carry the images, in this order
    batch = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW)
    alone = [
        generate_batch(tiny_model, None, [prompts[0]], pixels[:1], max_new_tokens=MAX_NEW)[0],
        generate_batch(tiny_model, None, [prompts[1]], None, max_new_tokens=MAX_NEW)[0],
        generate_batch(tiny_model, None, [prompts[2]], pixels[1:2], max_new_tokens=MAX_NEW)[0],
    ]
    assert batch == alone
    assert generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW, use_cache=False) == batch


def test_perturbing_one_image_changes_only_its_sample(tiny_model, tiny_pixels, prompts):
    pixels = tiny_pixels[:2].copy()
    before = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW)
    pixels[1] = np.random.default_rng(11).standard_normal(pixels[1].shape)
    after = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW)
    assert after[0] == before[0] and after[1] == before[1]
    assert after[2] != before[2]


def test_images_are_encoded_once_with_the_cache(tiny_model, tiny_pixels, prompts):
    calls = []
    hook = tiny_model.transformer.visual.register_forward_post_hook(
        lambda layer, inputs, out: calls.append(out.shape[0])
    )
    try:
        generate_batch(tiny_model, None, prompts, tiny_pixels[:2], max_new_tokens=MAX_NEW)
        assert calls == [2]
        calls.clear()
        generate_batch(tiny_model, None, prompts, tiny_pixels[:2], max_new_tokens=4, use_cache=False)
        assert calls == [2] * 4
    finally:
        hook.remove()


@pytest.mark.parametrize("decode_strategy", ["greedy_search", "sampling"])
def test_generation_builds_no_autograd_graph(tiny_model, tiny_pixels, prompts, decode_strategy):
    """Decoding keeps no graph: every forward it runs returns logits that stop gradients."""
    tracked = []
    def record(layer, inputs, out):  # PaddleNLP's generate asks for tuples: (logits, cache)
        tracked.append((out[0] if isinstance(out, tuple) else out.logits).stop_gradient)

    hook = tiny_model.register_forward_post_hook(record)
    try:
        generate_batch(tiny_model, None, prompts, tiny_pixels[:2], max_new_tokens=3, decode_strategy=decode_strategy)
    finally:
        hook.remove()
    assert tracked and all(tracked)


def test_sampling(tiny_model, tiny_pixels, prompts):
    pixels = tiny_pixels[:2]
    greedy = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW)
    top1 = generate_batch(
        tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW, decode_strategy="sampling", top_k=1
    )
    assert top1 == greedy
    runs = []
    for _ in range(2):
        paddle.seed(5)
        runs.append(
            generate_batch(
                tiny_model,
                None,
                prompts,
                pixels,
                max_new_tokens=MAX_NEW,
                decode_strategy="sampling",
                top_p=0.9,
                temperature=1.5,
            )
        )
    assert runs[0] == runs[1]
    assert all(len(r) == MAX_NEW for r in runs[0])


def force_token(model, monkeypatch, row, step, token):
    """Make sample ``row`` emit ``token`` as its ``step``-th new token (0-based), through the hook
    PaddleNLP's decoding loops call on every step's logits."""
    calls = []

    def adjust(logits):  # [B, V]
        calls.append(None)
        if len(calls) - 1 != step:
            return logits
        bias = np.zeros(logits.shape, dtype=np.float32)
        bias[row] = -1e9
        bias[row, token] = 0.0
        return logits + paddle.to_tensor(bias, dtype=logits.dtype)

    monkeypatch.setattr(model, "adjust_logits_during_generation", adjust)


@pytest.mark.parametrize("stop_id", [IM_END, IM_START, ENDOFTEXT])
def test_each_sample_stops_at_any_stop_id(tiny_model, tiny_pixels, prompts, stop_id, monkeypatch):
    pixels = tiny_pixels[:2]
    free = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW)
    with monkeypatch.context() as patch:
        force_token(tiny_model, patch, row=2, step=3, token=stop_id)
        stopped = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW)
    assert stopped[2] == free[2][:3]
    assert stopped[:2] == free[:2]

    with monkeypatch.context() as patch:
        force_token(tiny_model, patch, row=0, step=1, token=stop_id)
        ids, _ = tiny_model.generate(input_ids=paddle.to_tensor([prompts[1]]), max_new_tokens=MAX_NEW)
    assert ids.numpy().tolist()[0][1] == stop_id and ids.shape[1] == 2  # the config's stop ids end it


def test_lean_greedy_equals_paddlenlp_greedy_search(tiny_model, tiny_pixels, prompts):
    """generate_batch's own greedy loop against PaddleNLP's greedy_search with the cache, on a
    left-padded batch (every row runs the full budget: a random model does not stop)."""
    pixels = tiny_pixels[:2]
    lean = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW)
    width = max(map(len, prompts))
    ids = paddle.to_tensor([[ENDOFTEXT] * (width - len(p)) + p for p in prompts])
    mask = paddle.to_tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    theirs, _ = tiny_model.generate(
        input_ids=ids, attention_mask=mask, images=paddle.to_tensor(pixels), max_new_tokens=MAX_NEW,
        decode_strategy="greedy_search", eos_token_id=[IM_END, ENDOFTEXT], pad_token_id=ENDOFTEXT,
    )
    assert lean == theirs.numpy().tolist()


def test_stop_ids_are_a_parameter(tiny_model, tiny_pixels, prompts):
    pixels = tiny_pixels[:2]
    free = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW)
    stop = free[0][4]  # the fifth token the model writes for the first prompt
    cut = generate_batch(tiny_model, None, prompts, pixels, max_new_tokens=MAX_NEW, stop_ids=[stop])
    for before, after in zip(free, cut):
        assert after == (before[: before.index(stop)] if stop in before else before)
    assert cut[0] == free[0][: free[0].index(stop)]


def test_row_argmax_is_the_first_maximum_of_each_row():
    from paddlemix.models.qwen_vl.generation import _row_argmax

    rng = np.random.default_rng(3)
    values = rng.standard_normal((8, 151936)).astype(np.float32)
    values[2, [17, 90000]] = 50.0  # a tie: the first index wins, as in paddle.argmax
    values[5, -1] = 60.0
    expected = [int(np.flatnonzero(row == row.max())[0]) for row in values]
    logits = paddle.to_tensor(values[:, None, :])[:, -1]  # a slice, as greedy_decode hands it
    got = _row_argmax(logits)
    assert got.dtype == np.int64 and got.tolist() == expected
    assert got.tolist() == paddle.argmax(logits, axis=-1).numpy().tolist()
    assert _row_argmax(logits.astype("float64")).tolist() == expected  # the Paddle road
