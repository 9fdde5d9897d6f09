"""CpuAdamW against Paddle's own AdamW: same parameters, same state, same checkpoints."""

import numpy as np
import paddle
import pytest

from paddlemix.models.qwen_vl.cpu_adamw import BLOCK, CpuAdamW

VOCAB, WIDTH, OUT = 3000, 16, 200


def _model(seed=0):
    paddle.seed(seed)
    return paddle.nn.LayerList([paddle.nn.Embedding(VOCAB, WIDTH), paddle.nn.Linear(WIDTH, OUT), paddle.nn.LayerNorm(WIDTH)])


def _optimizer(cls, model, clip=1.0, weight_decay=0.0, **kwargs):
    decay = {p.name for n, p in model.named_parameters() if "bias" not in n}
    return cls(
        learning_rate=paddle.optimizer.lr.CosineAnnealingDecay(0.05, 10),
        parameters=model.parameters(),
        beta2=0.95,
        weight_decay=weight_decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(clip) if clip else None,
        apply_decay_param_fun=lambda name: name in decay,
        **kwargs,
    )


def _train(model, opt, steps, start=0):
    """Steps on id batches that reach further into the vocabulary each step (ids 50+ never appear)."""
    for i in range(start, start + steps):
        ids = paddle.to_tensor(np.random.default_rng(i).integers(0, 20 + 5 * i, (8, 5)))
        out = model[1](model[2](model[0](ids)))
        (out**2).mean().scale(50.0).backward()
        opt.step()
        opt.clear_grad()
        opt._learning_rate.step()


def _values(model):
    return [p.numpy() for p in model.parameters()]


def _close(a, b, lr=0.05):
    """Equal to float32 rounding: every value within 1e-4 of one learning-rate step of the reference
    (measured: within 1.4e-5 here, 5.5e-5 on the larger layer). A wrong formula (the epsilon not
    scaled by the bias correction, the clip missing or applied twice, a moment skipped) moves values
    by a sizeable fraction of a step."""
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert np.abs(x - y).max() <= 1e-4 * lr


@pytest.mark.parametrize("clip, weight_decay", [(1.0, 0.0), (0.01, 0.1), (None, 0.0)])
def test_updates_equal_paddles_adamw(clip, weight_decay):
    reference, fused = _model(), _model()
    _train(reference, _optimizer(paddle.optimizer.AdamW, reference, clip, weight_decay), 6)
    _train(fused, _optimizer(CpuAdamW, fused, clip, weight_decay), 6)
    _close(_values(fused), _values(reference))
    assert not np.array_equal(_values(fused)[0], _model().parameters()[0].numpy())  # it trained


def test_state_dict_has_paddles_keys_and_values():
    reference, fused = _model(), _model()
    a, b = _optimizer(paddle.optimizer.AdamW, reference), _optimizer(CpuAdamW, fused)
    _train(reference, a, 3)
    _train(fused, b, 3)
    sa, sb = a.state_dict(), b.state_dict()
    # parameter names differ between the two models (embedding_0 / embedding_1): compare by position
    ka, kb = [k for k in sa if hasattr(sa[k], "numpy")], [k for k in sb if hasattr(sb[k], "numpy")]
    assert [k.split(".", 1)[1] for k in ka] == [k.split(".", 1)[1] for k in kb]
    for x, y in zip(ka, kb):
        ref = sa[x].numpy()
        np.testing.assert_allclose(sb[y].numpy(), ref, rtol=1e-4, atol=1e-5 * float(np.abs(ref).max()))


def test_rows_without_a_gradient_are_left_untouched():
    model = _model()
    before = model[0].weight.numpy()
    opt = _optimizer(CpuAdamW, model)
    _train(model, opt, 4)
    used = np.zeros(VOCAB, dtype=bool)
    for i in range(4):  # the ids _train drew
        used[np.random.default_rng(i).integers(0, 20 + 5 * i, (8, 5))] = True
    after = model[0].weight.numpy()
    assert np.array_equal(after[~used], before[~used])
    assert (after[used] != before[used]).all(axis=1).all()
    moment = opt._get_accumulator_master(opt._moment1_acc_str, model[0].weight).numpy()
    assert not moment[~used].any() and moment[used].any(axis=1).all()
    assert np.array_equal(opt._active[model[0].weight.name], used)


def test_a_resumed_optimizer_continues_as_the_straight_run():
    straight = _model()
    opt = _optimizer(CpuAdamW, straight)
    _train(straight, opt, 6)

    first = _model()
    opt1 = _optimizer(CpuAdamW, first)
    _train(first, opt1, 3)
    state = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in opt1.state_dict().items()}
    resumed = _model(seed=1)  # other weights, then the saved ones
    for p, q in zip(resumed.parameters(), first.parameters()):
        p.set_value(q.numpy())
    opt2 = _optimizer(CpuAdamW, resumed)
    renamed = {}
    for key, value in state.items():
        for p, q in zip(first.parameters(), resumed.parameters()):
            if isinstance(key, str) and key.startswith(p.name + "_"):
                key = q.name + key[len(p.name):]
                break
        renamed[key] = paddle.to_tensor(value) if isinstance(value, np.ndarray) else value
    opt2.set_state_dict(renamed)  # moments, beta powers and the scheduler's step
    assert opt2.get_lr() == opt.get_lr() or opt2._learning_rate.last_epoch == 3
    _train(resumed, opt2, 3, start=3)
    _close(_values(resumed), _values(straight))


def test_large_parameters_are_updated_in_blocks():
    """A parameter of several blocks and a partial last one equals the reference too."""

    def build():
        paddle.seed(3)
        return paddle.nn.LayerList([paddle.nn.Linear(64, (9 * BLOCK) // 64 + 7)])

    def train(cls):
        model = build()
        opt = cls(learning_rate=0.01, parameters=model.parameters(), grad_clip=paddle.nn.ClipGradByGlobalNorm(0.5))
        for i in range(3):
            x = paddle.to_tensor(np.random.default_rng(i).standard_normal((4, 64)).astype("float32"))
            (model[0](x) ** 2).mean().backward()
            opt.step()
            opt.clear_grad()
        return _values(model)

    _close(train(CpuAdamW), train(paddle.optimizer.AdamW), lr=0.01)


def test_clear_grad_frees_the_gradients():
    model = _model()
    opt = _optimizer(CpuAdamW, model)
    model[1](model[0](paddle.to_tensor([[1, 2]]))).sum().backward()
    assert model[1].weight.grad is not None
    opt.step()
    opt.clear_grad()
    assert all(p.grad is None for p in model.parameters())


def test_what_numpy_does_not_cover_runs_paddles_step():
    """AMSGrad is not in the NumPy path: the same optimizer then runs Paddle's kernel."""
    reference, fused = _model(), _model()
    _train(reference, _optimizer(paddle.optimizer.AdamW, reference, amsgrad=True), 4)
    opt = _optimizer(CpuAdamW, fused, amsgrad=True)
    assert opt._numpy_pairs() is None
    _train(fused, opt, 4)
    for x, y in zip(_values(fused), _values(reference)):
        assert np.array_equal(x, y)  # the very same kernel


def test_an_adopted_paddle_adamw_steps_as_cpu_adamw():
    """CpuAdamW.adopt (what the trainer does to PaddleNLP's AdamW) keeps the settings and runs the
    NumPy step: the same values as Paddle's own AdamW."""
    reference, adopted = _model(), _model()
    _train(reference, _optimizer(paddle.optimizer.AdamW, reference), 4)
    opt = CpuAdamW.adopt(_optimizer(paddle.optimizer.AdamW, adopted))
    assert isinstance(opt, CpuAdamW) and opt._numpy_pairs() is not None
    _train(adopted, opt, 4)
    _close(_values(adopted), _values(reference))
    assert opt._active  # the NumPy path ran (its row masks exist)
    with pytest.raises(TypeError, match="takes a paddle.optimizer.AdamW"):
        CpuAdamW.adopt(paddle.optimizer.SGD(parameters=adopted.parameters()))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_the_numba_kernel_equals_the_numpy_block_update_to_the_bit(threads, decay):
    """One kernel pass per value (the default where Numba is installed) against the NumPy blocks, on a
    parameter large enough to be split over threads; with rows, the never-seen rows stay as they are."""
    from paddlemix.models.qwen_vl.cpu_adamw import _Step, _update_all
    from paddlemix.models.qwen_vl.cpu_kernels import HAVE_NUMBA, adamw_rows

    assert HAVE_NUMBA
    rows, width = 20_011, 64  # 1.28 million values, a partial last block
    rng = np.random.default_rng(7)
    p = rng.standard_normal(rows * width).astype("float32")
    g = (rng.standard_normal(rows * width) * 1e-3).astype("float32")
    m = (rng.standard_normal(rows * width) * 1e-3).astype("float32")
    v = (np.abs(rng.standard_normal(rows * width)) * 1e-6).astype("float32")
    idle = rng.random(rows) < 0.3  # rows that never had a gradient: zero gradient and moments
    for a in (g, m, v):
        a.reshape(rows, width)[idle] = 0.0
    g.reshape(rows, width)[5, 3] = 0.0  # a zero inside an active row does not make it idle
    s = _Step(3e-3, 0.9, 0.95, 1e-8, 0.9**4, 0.95**4, decay, 0.7)
    expected = [a.copy() for a in (p, g, m, v)]
    _update_all(expected, s)
    constants = (s.keep, s.beta1, s.beta2, s.g1, s.g2, s.eps_t, s.lr_t)

    dense = [a.copy() for a in (p, g, m, v)]
    assert adamw_rows(*dense, np.zeros(0, dtype=bool), dense[0].size, *constants, threads=threads)
    for got, want in zip(dense, expected):
        assert np.array_equal(got, want)

    if decay == 0.0:  # the row path is taken only without weight decay
        by_rows = [a.copy() for a in (p, g, m, v)]
        seen = np.zeros(rows, dtype=bool)
        assert adamw_rows(*by_rows, seen, width, *constants, threads=threads)
        assert np.array_equal(seen, ~idle)
        for got, want in zip(by_rows, expected):
            assert np.array_equal(got, want)
        assert np.array_equal(by_rows[0].reshape(rows, width)[idle], p.reshape(rows, width)[idle])


def test_without_numba_the_numpy_blocks_update_the_same(monkeypatch):
    """The NumPy path (where Numba is missing) against Paddle's AdamW, rows skipped as with Numba."""
    from paddlemix.models.qwen_vl import cpu_adamw

    monkeypatch.setattr(cpu_adamw, "HAVE_NUMBA", False)
    test_updates_equal_paddles_adamw(1.0, 0.0)
    test_updates_equal_paddles_adamw(0.01, 0.1)
    test_rows_without_a_gradient_are_left_untouched()


def _sparse_model(seed=0):
    model = _model(seed)
    model[0]._sparse = True  # SelectedRows gradients: a row per id occurrence, repeats included
    return model


@pytest.mark.parametrize("numba", [True, False])
def test_a_sparse_embedding_gradient_updates_as_the_dense_one(monkeypatch, numba):
    """A sparse embedding (its gradient Paddle's SelectedRows) under CpuAdamW against Paddle's AdamW on
    the dense gradient: same values, the never-used rows untouched, the same rows marked seen."""
    from paddlemix.models.qwen_vl import cpu_adamw

    monkeypatch.setattr(cpu_adamw, "HAVE_NUMBA", numba)
    reference, sparse = _model(), _sparse_model()
    _train(reference, _optimizer(paddle.optimizer.AdamW, reference), 6)
    opt = _optimizer(CpuAdamW, sparse)
    before = sparse[0].weight.numpy()
    ids = paddle.to_tensor([[3, 3, 7]])
    sparse[1](sparse[0](ids)).sum().backward()
    assert sparse[0].weight._grad_ivar().is_selected_rows() and opt._numpy_pairs() is not None
    opt.clear_grad()
    _train(sparse, opt, 6)
    _close(_values(sparse), _values(reference))
    used = np.zeros(VOCAB, dtype=bool)
    for i in range(6):
        used[np.random.default_rng(i).integers(0, 20 + 5 * i, (8, 5))] = True
    assert np.array_equal(sparse[0].weight.numpy()[~used], before[~used])
    if numba:
        assert np.array_equal(opt._active[sparse[0].weight.name], used)


def test_the_sparse_kernel_equals_the_dense_kernel_to_the_bit():
    """Merged repeats and the sparse update against the dense gradient Paddle's embedding would give
    (repeats added into zeros in occurrence order) and the dense kernel, split over two threads."""
    from paddlemix.models.qwen_vl.cpu_adamw import _Step
    from paddlemix.models.qwen_vl.cpu_kernels import adamw_rows, adamw_sparse_rows, merge_rows

    rows, width = 20_011, 64
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 4000, 3000)  # with repeats
    values = rng.standard_normal((ids.size, width)).astype("float32")
    dense = np.zeros((rows, width), dtype=np.float32)
    for i, r in enumerate(ids):
        dense[r] += values[i]
    p = rng.standard_normal(rows * width).astype("float32")
    m = (rng.standard_normal(rows * width) * 1e-3).astype("float32")
    v = (np.abs(rng.standard_normal(rows * width)) * 1e-6).astype("float32")
    seen = rng.random(rows) < 0.1  # rows with moments from earlier steps
    m.reshape(rows, width)[~seen] = 0.0
    v.reshape(rows, width)[~seen] = 0.0
    s = _Step(3e-3, 0.9, 0.95, 1e-8, 0.9**4, 0.95**4, 0.0, 0.7)
    constants = (s.keep, s.beta1, s.beta2, s.g1, s.g2, s.eps_t, s.lr_t)
    index, merged = merge_rows(ids, values, rows)
    assert merged.shape[0] == np.unique(ids).size
    assert np.array_equal(merged[index[ids]], dense[ids])
    want = [a.copy() for a in (p, dense.reshape(-1), m, v)]
    want_seen = seen.copy()
    adamw_rows(*want, want_seen, width, *constants, threads=2)
    got = [a.copy() for a in (p, m, v)]
    got_seen = seen.copy()
    adamw_sparse_rows(*got, got_seen, width, index, merged, *constants, threads=2)
    assert np.array_equal(got_seen, want_seen)
    for a, b in zip(got, (want[0], want[2], want[3])):
        assert np.array_equal(a, b)


def _wide_model(seed=0):
    """_model with a Linear of 16 x 60,000 (960,000 values): its update takes long enough that the
    next step's reader finds it still running."""
    paddle.seed(seed)
    return paddle.nn.LayerList([paddle.nn.Embedding(VOCAB, WIDTH), paddle.nn.Linear(WIDTH, 60_000), paddle.nn.LayerNorm(WIDTH)])


def _train_reading_after_the_update(model, opt, steps):
    """_train, the Linear's weight read only after finish_update (the contract of CpuAdamW.defer);
    returns how many steps left its update pending when the optimizer's step returned."""
    from paddlemix.models.qwen_vl import cpu_adamw

    pending = 0
    for i in range(steps):
        ids = paddle.to_tensor(np.random.default_rng(i).integers(0, 20 + 5 * i, (8, 5)))
        states = model[2](model[0](ids))
        cpu_adamw.finish_update(model[1].weight)
        (model[1](states) ** 2).mean().scale(50.0).backward()
        opt.step()
        pending += model[1].weight.name in cpu_adamw._PENDING
        opt.clear_grad()
        opt._learning_rate.step()
    return pending


def test_a_deferred_update_equals_the_immediate_one_to_the_bit():
    """CpuAdamW.defer: the Linear's update runs on the background thread after step returns (its
    gradient freed meanwhile), and values, moments and beta powers equal the immediate update's."""
    from paddlemix.models.qwen_vl.cpu_kernels import HAVE_NUMBA

    assert HAVE_NUMBA
    immediate, deferred = _wide_model(), _wide_model()
    opt_now = _optimizer(CpuAdamW, immediate)
    opt_later = _optimizer(CpuAdamW, deferred)
    opt_later.defer([deferred[1].weight])
    assert _train_reading_after_the_update(immediate, opt_now, 6) == 0
    assert _train_reading_after_the_update(deferred, opt_later, 6) == 6
    opt_later.state_dict()  # waits for the last update
    for got, want in zip(_values(deferred), _values(immediate)):
        assert np.array_equal(got, want)
    accumulators = ("_moment1_acc_str", "_moment2_acc_str", "_beta1_pow_acc_str", "_beta2_pow_acc_str")
    for now, later in zip(immediate.parameters(), deferred.parameters()):
        for name in accumulators:
            want = opt_now._get_accumulator_master(getattr(opt_now, name), now).numpy()
            got = opt_later._get_accumulator_master(getattr(opt_later, name), later).numpy()
            assert np.array_equal(got, want), (later.name, name)


def test_a_failed_deferred_update_is_raised_to_its_reader(monkeypatch):
    import threading

    from paddlemix.models.qwen_vl import cpu_adamw

    real = cpu_adamw.adamw_rows

    def failing_in_the_background(*args):
        if threading.current_thread().name.startswith("paddlemix_adamw"):
            raise RuntimeError("kernel failed")
        return real(*args)

    monkeypatch.setattr(cpu_adamw, "adamw_rows", failing_in_the_background)
    model = _wide_model()
    opt = _optimizer(CpuAdamW, model)
    opt.defer([model[1].weight])
    model[1](model[2](model[0](paddle.to_tensor([[1, 2]])))).sum().backward()
    opt.step()
    with pytest.raises(RuntimeError, match="kernel failed"):
        cpu_adamw.finish_update(model[1].weight)
    assert not cpu_adamw._PENDING
    opt.finish_updates()  # nothing left to wait for
