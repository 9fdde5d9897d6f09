"""Vision tower pieces against numpy: the sin-cos table, positional resizing, the resampler."""

import numpy as np
import paddle
import pytest
from tests.models.qwen_vl.qwen_vl_reference import bicubic_resize, resampler, sincos_2d, vision_tower

from paddlemix.models.qwen_vl.vision import resize_pos_embed, sincos_pos_embed_2d


def test_sincos_table_values():
    table = sincos_pos_embed_2d(16, 3)
    np.testing.assert_allclose(table, sincos_2d(16, 3), atol=1e-6)
    # Row 5 = grid row 1, column 2; the first half encodes the column: sin(2 * 1), cos(2 * 1), ...
    assert table[5, 0] == pytest.approx(np.sin(2.0), abs=1e-6)
    assert table[5, 4] == pytest.approx(np.cos(2.0), abs=1e-6)
    assert table[5, 8] == pytest.approx(np.sin(1.0), abs=1e-6)


@pytest.mark.parametrize("src, tgt", [(4, 8), (16, 32), (8, 5)])
def test_resize_matches_pytorch_bicubic(src, tgt):
    table = np.random.default_rng(src * tgt).standard_normal([src * src, 6]).astype(np.float32)
    got = resize_pos_embed(paddle.to_tensor(table), tgt * tgt).numpy()
    want = bicubic_resize(table.reshape(src, src, 6).transpose(2, 0, 1), tgt).transpose(1, 2, 0).reshape(tgt * tgt, 6)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_resize_keeps_same_size_table():
    table = paddle.randn([16, 4])
    assert resize_pos_embed(table, 16) is table
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(table, 15)


def _torch_layout_state(visual_module, prefix):
    """The Paddle module's parameters renamed/transposed into the PyTorch layout the reference reads."""
    linear = ("in_proj.weight", "out_proj.weight", "c_fc.weight", "c_proj.weight", "kv_proj.weight", "in_proj_weight")
    return {
        prefix + name: (p.numpy().T if name.endswith(linear) else p.numpy()).astype(np.float64)
        for name, p in visual_module.named_parameters()
    }


def test_resampler_and_tower_match_numpy(tiny_model, tiny_config, tiny_pixels):
    visual = tiny_model.transformer.visual
    state = _torch_layout_state(visual, "transformer.visual.")
    x = np.random.default_rng(0).standard_normal([2, 256, tiny_config.visual["width"]])
    got = visual.attn_pool(paddle.to_tensor(x, dtype="float32")).numpy()
    np.testing.assert_allclose(got, resampler(state, x, tiny_config.resampler_heads), rtol=1e-4, atol=1e-4)

    want = vision_tower(
        state, tiny_pixels[:2].astype(np.float64), tiny_config.visual["heads"], tiny_config.resampler_heads
    )
    got = visual(paddle.to_tensor(tiny_pixels[:2])).numpy()
    assert got.shape == (2, tiny_config.image_span, tiny_config.hidden_size)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_tower_rejects_non_square_pixels(tiny_model):
    with pytest.raises(ValueError, match="n_images, 3, S, S"):
        tiny_model.transformer.visual(paddle.zeros([1, 3, 224, 112]))


def _attention_weights(pool, x):
    """The resampler's attention [N, heads, Q, L] for features x [N, L, kv_dim], computed in numpy
    from the module's parameters (the published resampler's equations)."""
    from tests.models.qwen_vl.qwen_vl_reference import layer_norm, resize_table, softmax

    sd = {name: p.numpy().astype(np.float64) for name, p in pool.named_parameters()}
    e, heads = pool.attn.embed_dim, pool.attn.num_heads
    kv = x @ sd["kv_proj.weight"] if "kv_proj.weight" in sd else x  # Paddle layout [in, out]
    kv = layer_norm(kv, sd["ln_kv.weight"], sd["ln_kv.bias"])
    q = layer_norm(sd["query"], sd["ln_q.weight"], sd["ln_q.bias"]) + sd["pos_embed"]
    k = kv + resize_table(sd["pos_embed"], x.shape[1])
    w, b = sd["attn.in_proj_weight"], sd["attn.in_proj_bias"]
    d = e // heads
    qh = (q @ w[:, :e] + b[:e]).reshape(-1, heads, d).transpose(1, 0, 2)  # [h, Q, d]
    kh = (k @ w[:, e : 2 * e] + b[e : 2 * e]).reshape(x.shape[0], -1, heads, d).transpose(0, 2, 1, 3)
    return softmax(qh[None] @ kh.transpose(0, 1, 3, 2) / np.sqrt(d))


def _cell_geometry(queries, patches):
    """For a sqrt(Q) query grid over a sqrt(L) patch grid: the [Q, L] distances (in patches) from each
    query's cell centre to each patch centre, and which patches lie in the query's own cell."""
    qg, pg = int(np.sqrt(queries)), int(np.sqrt(patches))
    cell = pg / qg
    qr, qc = np.divmod(np.arange(queries), qg)
    pr, pc = np.divmod(np.arange(patches), pg)
    distance = np.hypot((qr[:, None] + 0.5) * cell - (pr[None] + 0.5), (qc[:, None] + 0.5) * cell - (pc[None] + 0.5))
    own = (pr[None] // cell == qr[:, None]) & (pc[None] // cell == qc[:, None])
    return distance, own


def test_spatial_init_attends_to_the_own_cell():
    from paddlemix.models.qwen_vl.vision import Resampler

    paddle.seed(3)
    # 4x4 queries over 8x8 patches, one head as in the demo preset (output_dim 64 // 128 -> 1 head).
    pool = Resampler(n_queries=16, embed_dim=64, num_heads=1, kv_dim=24)
    # Images whose patches share most of their content (as a scan's do), with patch-to-patch variation.
    rng = np.random.default_rng(1)
    x = rng.standard_normal([2, 1, 24]) + 0.25 * rng.standard_normal([2, 64, 24])
    distance, own = _cell_geometry(16, 64)
    uniform = distance.mean()

    def attended_distance():
        return float((_attention_weights(pool, x) * distance).sum(-1).mean())

    random_start = attended_distance()
    pool.init_spatial()
    spatial = attended_distance()
    # Random projections attend nearly uniformly; the spatial start centres on the query's own cell.
    assert random_start > 0.9 * uniform
    assert spatial < 0.5 * uniform
    # With content-free features (all zero: keys are positions alone) every query's strongest patch
    # lies in its own 2x2 cell.
    strongest = _attention_weights(pool, np.zeros([1, 64, 24]))[0, 0].argmax(-1)  # [Q]
    assert all(own[i, strongest[i]] for i in range(16))
    np.testing.assert_array_equal(pool.query.numpy(), 0.0)


def test_spatial_init_same_size_grid_by_hand():
    """Queries and patches on the same 3x3 grid, zero features, one head: the logit of query i for
    patch j is S^2 * pos_i . pos_j / sqrt(E), and pos_i . pos_i = E / 2 (sin^2 + cos^2 per pair)."""
    from paddlemix.models.qwen_vl.vision import SPATIAL_INIT_SCALE, Resampler

    pool = Resampler(n_queries=9, embed_dim=8, num_heads=1, kv_dim=8)
    pool.init_spatial()
    weights = _attention_weights(pool, np.zeros([1, 9, 8]))[0, 0]  # [Q, L]
    pos = sincos_2d(8, 3)
    logits = SPATIAL_INIT_SCALE**2 * (pos @ pos.T) / np.sqrt(8)
    assert logits[4, 4] == pytest.approx(SPATIAL_INIT_SCALE**2 * 4 / np.sqrt(8))
    want = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(weights, want / want.sum(1, keepdims=True), atol=1e-6)
    np.testing.assert_array_equal(weights.argmax(1), np.arange(9))


def _cell_readout_error(visual, pixels):
    """Mean absolute error, in grid cells, of a least-squares read-out of each output token's query
    row and column from the token, fitted on the first half of the images and scored on the rest."""
    with paddle.no_grad():
        tokens = visual(paddle.to_tensor(pixels)).numpy()  # [N, Q, E]
    n, q, _ = tokens.shape
    grid = int(np.sqrt(q))
    cells = np.stack(np.divmod(np.arange(q), grid), 1).astype(np.float64)  # [Q, 2] (row, column)
    x = np.concatenate([tokens, np.ones([n, q, 1])], -1).astype(np.float64)
    fit, held = x[: n // 2].reshape(-1, x.shape[-1]), x[n // 2 :].reshape(-1, x.shape[-1])
    w = np.linalg.solve(fit.T @ fit + 1e-3 * np.eye(fit.shape[1]), fit.T @ np.tile(cells, (n // 2, 1)))
    return float(np.abs(held @ w - np.tile(cells, (n - n // 2, 1))).mean())


def test_layout_init_makes_the_tower_say_where_each_token_is():
    """The layout start puts the sin-cos table in the ViT's positional table and lays out the
    resampler; each output token then tells its grid cell, which the random start's tokens do not."""
    from paddlemix.models.qwen_vl.configuration import get_preset
    from paddlemix.models.qwen_vl.vision import LAYOUT_POS_SCALE, QWenVisionTransformer

    config = get_preset("demo")
    paddle.seed(7)
    visual = QWenVisionTransformer(config.visual, config.resampler_heads)
    visual.eval()
    size = config.visual["image_size"]
    # Scan-like images: a bright disc of random centre and radius on a dark, noisy background.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    discs = [((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) for cy, cx, r in rng.uniform([0.3, 0.3, 0.1], [0.7, 0.7, 0.3], [16, 3])]
    pixels = np.stack([np.repeat((d * 1.5 - 0.7 + 0.3 * rng.standard_normal(d.shape))[None], 3, 0) for d in discs])
    pixels = pixels.astype(np.float32)
    chance = float(np.abs(np.arange(8) - 3.5).mean())  # 2.0 cells: the grid's mean distance to its middle
    random_error = _cell_readout_error(visual, pixels)
    visual.init_layout()
    layout_error = _cell_readout_error(visual, pixels)
    assert random_error > 0.8 * chance
    assert layout_error < 0.5 * random_error
    table = visual.positional_embedding.numpy()
    np.testing.assert_allclose(table, LAYOUT_POS_SCALE * sincos_2d(table.shape[1], 8), atol=1e-6)
    np.testing.assert_array_equal(visual.attn_pool.query.numpy(), 0.0)  # the resampler's spatial start


def test_frozen_feature_cache_returns_the_towers_features_and_computes_each_image_once(tiny_model, tiny_pixels):
    from paddlemix.models.qwen_vl.vision import FrozenFeatureCache

    visual = tiny_model.transformer.visual
    calls = []
    original = visual.forward

    def counted(pixel_values):
        calls.append(pixel_values.shape[0])
        return original(pixel_values)

    a, b, c = tiny_pixels
    cache = FrozenFeatureCache(max_bytes=2**30)
    visual.forward = counted
    try:
        first = cache(visual, paddle.to_tensor(np.stack([a, b, a]))).numpy()
        second = cache(visual, paddle.to_tensor(np.stack([c, b]))).numpy()
    finally:
        del visual.forward
    assert calls == [2, 1]  # a and b once, then only c
    assert (cache.misses, cache.hits) == (3, 2)
    with paddle.no_grad():
        want = visual(paddle.to_tensor(tiny_pixels)).numpy()  # one fresh batch [a, b, c]
    np.testing.assert_allclose(first, want[[0, 1, 0]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(second, want[[2, 1]], rtol=1e-5, atol=1e-5)

    # A budget of one image's features: the first image is kept, the others are recomputed each time.
    one = int(np.prod(want.shape[1:])) * 4
    small = FrozenFeatureCache(max_bytes=one)
    small(visual, paddle.to_tensor(tiny_pixels))
    again = small(visual, paddle.to_tensor(tiny_pixels)).numpy()
    assert (small.held_bytes, small.misses, small.hits) == (one, 5, 1)
    np.testing.assert_allclose(again, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="positive byte budget"):
        FrozenFeatureCache(0)


def test_feature_cache_sees_a_trainable_tower_and_leaves_the_loss_unchanged(tiny_model, make_prompt, tiny_pixels):
    from paddlemix.models.qwen_vl.vision import FrozenFeatureCache

    layer = paddle.nn.Linear(2, 2)
    assert FrozenFeatureCache.trainable_parameters(layer) == ["weight", "bias"]
    layer.bias.stop_gradient = True
    assert FrozenFeatureCache.trainable_parameters(layer) == ["weight"]

    ids = [make_prompt([11, 12], "a.png", [13, 14, 15]), make_prompt([21, 22], "b.png", [23, 24, 25])]
    labels = [[-100] * (len(row) - 2) + row[-2:] for row in ids]
    batch = dict(input_ids=paddle.to_tensor(ids), images=paddle.to_tensor(tiny_pixels[:2]),
                 labels=paddle.to_tensor(labels), use_cache=False, return_dict=True)
    with paddle.no_grad():
        plain = float(tiny_model(**batch).loss)
        tiny_model.transformer.image_feature_cache = FrozenFeatureCache(2**30)
        try:
            cached = [float(tiny_model(**batch).loss) for _ in range(2)]
            cache = tiny_model.transformer.image_feature_cache
        finally:
            tiny_model.transformer.image_feature_cache = None
    assert (cache.misses, cache.hits) == (2, 2)
    assert cached == pytest.approx([plain, plain], rel=1e-6)
