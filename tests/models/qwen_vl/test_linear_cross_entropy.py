"""The fused CPU LM head + cross-entropy: its loss and gradients equal Paddle's plain matmul + softmax
cross-entropy at the tiny preset's width with the real 151,936-column vocabulary."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddlemix.models.qwen_vl.configuration import get_preset
from paddlemix.models.qwen_vl.linear_cross_entropy import linear_cross_entropy


@pytest.fixture(scope="module")
def head():
    """Tiny-preset head weight (real vocabulary), 150 hidden states and their targets, as numpy."""
    config = get_preset("tiny")
    rng = np.random.default_rng(3)
    weight = (rng.standard_normal([config.hidden_size, config.vocab_size]) * 0.05).astype(np.float32)
    states = rng.standard_normal([150, config.hidden_size]).astype(np.float32)
    targets = rng.integers(0, config.vocab_size, 150)
    targets[10:20] = 151645  # a repeated target (<|im_end|>) sums several rows into one weight column
    # Some rows whose target is already the most likely id, so the softmax is far from uniform there.
    weight[:, targets[:5]] += 3.0 * states[:5].T / np.linalg.norm(states[:5], axis=1)
    return states, weight, targets


def loss_and_grads(fn, states, weight, targets, scale):
    x = paddle.to_tensor(states, stop_gradient=False)
    w = paddle.to_tensor(weight, stop_gradient=False)
    loss = fn(x, w, paddle.to_tensor(targets))
    (loss * scale).backward()
    return float(loss), x.grad.numpy(), w.grad.numpy()


def plain(x, w, t):
    return F.cross_entropy(paddle.matmul(x, w), t.reshape([-1, 1]), reduction="mean")


@pytest.mark.parametrize("block_rows", [64, 150, 7, 256])
def test_loss_and_gradients_equal_the_plain_path(head, block_rows):
    states, weight, targets = head
    want = loss_and_grads(plain, states, weight, targets, 2.5)
    got = loss_and_grads(lambda x, w, t: linear_cross_entropy(x, w, t, block_rows), states, weight, targets, 2.5)
    assert got[0] == pytest.approx(want[0], rel=1e-6)
    for mine, theirs in zip(got[1:], want[1:]):
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * scale)


def test_loss_matches_a_float64_oracle(head):
    states, weight, targets = head
    logits = states.astype(np.float64) @ weight.astype(np.float64)
    peak = logits.max(1, keepdims=True)
    lse = peak[:, 0] + np.log(np.exp(logits - peak).sum(1))
    want = np.mean(lse - logits[np.arange(len(targets)), targets])
    got = linear_cross_entropy(paddle.to_tensor(states), paddle.to_tensor(weight), paddle.to_tensor(targets))
    assert float(got) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("logit_scale", [0.5, 6.0])
def test_gradients_match_a_float64_oracle(head, logit_scale):
    """Scale 0.5 keeps every logit small enough for exp() without the max shift; at scale 6 the bound
    is far above it (logits up to ~210, where an unshifted exp() overflows), so the shifted path runs.
    There Paddle's own float32 path is 6e-5 of the largest gradient off float64, so the oracle is
    float64 NumPy, not Paddle (at scale 0.5 Paddle's is 1e-3 off, this head 1e-6)."""
    states, weight, targets = head
    states = (states * logit_scale).astype(np.float32)
    logits = states.astype(np.float64) @ weight.astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    probs[np.arange(len(targets)), targets] -= 1.0
    want = (probs @ weight.T.astype(np.float64) / len(targets), states.T.astype(np.float64) @ probs / len(targets))
    got = loss_and_grads(linear_cross_entropy, states, weight, targets, 1.0)
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    assert got[0] == pytest.approx(np.mean(lse - logits[np.arange(len(targets)), targets]), rel=1e-5)
    for mine, theirs in zip(got[1:], want):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.parametrize("where", ["states", "weight"])
def test_a_nan_input_gives_a_nan_loss_and_nan_gradients(head, where):
    """As float64 NumPy does (Paddle's CPU cross-entropy, measured here, returns a finite loss
    then). The head's exp kernel does not look for NaN: the head sends such blocks to NumPy's."""
    states, weight, targets = (array.copy() for array in head)
    if where == "states":
        states[3, 5] = np.nan
    else:
        weight[7, 1000] = np.nan
    with np.errstate(invalid="ignore"):
        logits = states.astype(np.float64) @ weight.astype(np.float64)
        assert np.isnan(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(targets)), targets]).any()
    loss, grad_states, grad_weight = loss_and_grads(linear_cross_entropy, states, weight, targets, 1.0)
    assert np.isnan(loss) and np.isnan(grad_states).any() and np.isnan(grad_weight).any()


def test_frozen_weight_gets_no_gradient(head):
    states, weight, targets = head
    x = paddle.to_tensor(states[:4], stop_gradient=False)
    w = paddle.to_tensor(weight)  # stop_gradient=True, as under LoRA
    linear_cross_entropy(x, w, paddle.to_tensor(targets[:4])).backward()
    assert w.grad is None
    assert x.grad.shape == [4, weight.shape[0]]


def test_bad_targets_and_empty_input_are_errors(head):
    states, weight, _ = head
    with pytest.raises(ValueError, match=r"\[0, 151936\)"):
        linear_cross_entropy(paddle.to_tensor(states[:2]), paddle.to_tensor(weight), paddle.to_tensor([1, 151936]))
    with pytest.raises(ValueError, match="at least one row"):
        linear_cross_entropy(paddle.to_tensor(states[:0]), paddle.to_tensor(weight), paddle.to_tensor(np.zeros(0, int)))
