"""Vision tower pieces against numpy: the sin-cos table, positional resizing, the resampler."""

import numpy as np
import paddle
import pytest
from qwen_vl_reference import bicubic_resize, resampler, sincos_2d, vision_tower

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
