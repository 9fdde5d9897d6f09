"""Qwen-VL's forward pass in plain numpy (float64), written from the published PyTorch code.

Works on a Hugging Face style state dict: names as in the published checkpoint and PyTorch layouts
(``nn.Linear`` weights [out, in]). Used by the tests as an independent reference for the Paddle
model and the checkpoint converter, so it shares no code with ``paddlemix``.
"""

import math

import numpy as np

EPS = 1e-6
# Published Qwen-VL token ids (docs/ARCHITECTURE.md, "Special tokens").
ENDOFTEXT, IM_START, IM_END = 151643, 151644, 151645
IMG_START, IMG_END, IMG_PAD = 151857, 151858, 151859


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def rms_norm(x, w):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + EPS) * w


def linear(x, w, b=None):  # torch layout: w [out, in]
    y = x @ w.T
    return y if b is None else y + b


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x):  # exact (erf) GELU, torch.nn.GELU()
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def silu(x):
    return x / (1.0 + np.exp(-x))


def _cubic_weights(t, a=-0.75):
    """Keys' cubic convolution weights for offsets -1, 0, 1, 2 (PyTorch's bicubic, A = -0.75)."""

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.array([far(t + 1), near(t), near(1 - t), far(2 - t)])


def bicubic_resize(grid, size):
    """[C, s, s] -> [C, size, size] like torch.nn.functional.interpolate(mode="bicubic",
    align_corners=False): half-pixel source coordinates, borders clamped."""
    channels, src, _ = grid.shape
    scale = src / size
    taps = []
    for out in range(size):
        x = (out + 0.5) * scale - 0.5
        x0 = math.floor(x)
        idx = [min(max(x0 + k, 0), src - 1) for k in (-1, 0, 1, 2)]
        taps.append((idx, _cubic_weights(x - x0)))
    rows = np.zeros([size, src])
    for out, (idx, w) in enumerate(taps):
        for i, wi in zip(idx, w):
            rows[out, i] += wi
    return np.einsum("ys,csz,xz->cyx", rows, grid, rows)


def resize_table(table, positions):
    """A square positional table [L, C] resized to [positions, C] (as get_abs_pos)."""
    src, tgt = math.isqrt(table.shape[0]), math.isqrt(positions)
    if src == tgt:
        return table
    grid = table.reshape(src, src, -1).transpose(2, 0, 1)
    return bicubic_resize(grid, tgt).transpose(1, 2, 0).reshape(tgt * tgt, -1)


def sincos_2d(dim, grid):
    """MAE's get_2d_sincos_pos_embed: first half from the column index, second from the row."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
    out = np.zeros([grid * grid, dim])
    for r in range(grid):
        for c in range(grid):
            for half, pos in enumerate((c, r)):
                out[r * grid + c, half * dim // 2 : half * dim // 2 + dim // 4] = np.sin(pos * omega)
                out[r * grid + c, half * dim // 2 + dim // 4 : (half + 1) * dim // 2] = np.cos(pos * omega)
    return out


def vision_block(sd, prefix, x, heads):
    """VisualAttentionBlock: x [N, L, C]; the fused in_proj output is [heads, 3 * head_dim] per token."""
    n, length, width = x.shape
    d = width // heads
    h = layer_norm(x, sd[prefix + "ln_1.weight"], sd[prefix + "ln_1.bias"])
    qkv = linear(h, sd[prefix + "attn.in_proj.weight"], sd[prefix + "attn.in_proj.bias"]).reshape(
        n, length, heads, 3 * d
    )
    q, k, v = (qkv[..., i * d : (i + 1) * d].transpose(0, 2, 1, 3) for i in range(3))  # [N, h, L, d]
    att = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)) @ v
    x = x + linear(
        att.transpose(0, 2, 1, 3).reshape(n, length, width),
        sd[prefix + "attn.out_proj.weight"],
        sd[prefix + "attn.out_proj.bias"],
    )
    h = layer_norm(x, sd[prefix + "ln_2.weight"], sd[prefix + "ln_2.bias"])
    h = gelu(linear(h, sd[prefix + "mlp.c_fc.weight"], sd[prefix + "mlp.c_fc.bias"]))
    return x + linear(h, sd[prefix + "mlp.c_proj.weight"], sd[prefix + "mlp.c_proj.bias"])


def resampler(sd, x, heads):
    """Resampler with torch.nn.MultiheadAttention: x [N, L, width] -> [N, Q, E]."""
    p = "transformer.visual.attn_pool."
    pos = sd[p + "pos_embed"]
    e = pos.shape[1]
    kv = linear(x, sd[p + "kv_proj.weight"]) if p + "kv_proj.weight" in sd else x
    kv = layer_norm(kv, sd[p + "ln_kv.weight"], sd[p + "ln_kv.bias"])
    q = layer_norm(sd[p + "query"], sd[p + "ln_q.weight"], sd[p + "ln_q.bias"]) + pos  # [Q, E]
    k = kv + resize_table(pos, x.shape[1])
    w, b = sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"]
    q = linear(q, w[:e], b[:e])
    k = linear(k, w[e : 2 * e], b[e : 2 * e])
    v = linear(kv, w[2 * e :], b[2 * e :])
    d = e // heads
    qh = q.reshape(-1, heads, d).transpose(1, 0, 2)  # [h, Q, d]
    kh = k.reshape(k.shape[0], -1, heads, d).transpose(0, 2, 1, 3)  # [N, h, L, d]
    vh = v.reshape(v.shape[0], -1, heads, d).transpose(0, 2, 1, 3)
    att = softmax(qh[None] @ kh.transpose(0, 1, 3, 2) / math.sqrt(d)) @ vh  # [N, h, Q, d]
    out = att.transpose(0, 2, 1, 3).reshape(x.shape[0], -1, e)
    return linear(out, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"])


def vision_tower(sd, pixels, heads, resampler_heads):
    """VisionTransformer.forward: pixels [N, 3, S, S] -> features [N, Q, E]."""
    v = "transformer.visual."
    w = sd[v + "conv1.weight"]  # [width, 3, p, p]
    width, _, p, _ = w.shape
    n, _, s, _ = pixels.shape
    g = s // p
    patches = pixels.reshape(n, 3, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(n, g * g, 3 * p * p)
    x = patches @ w.reshape(width, -1).T  # [N, g*g, width], patch (row, col) at row * g + col
    x = x + resize_table(sd[v + "positional_embedding"], g * g)
    x = layer_norm(x, sd[v + "ln_pre.weight"], sd[v + "ln_pre.bias"])
    i = 0
    while f"{v}transformer.resblocks.{i}.ln_1.weight" in sd:
        x = vision_block(sd, f"{v}transformer.resblocks.{i}.", x, heads)
        i += 1
    x = resampler(sd, x, resampler_heads)
    x = layer_norm(x, sd[v + "ln_post.weight"], sd[v + "ln_post.bias"])
    return x @ sd[v + "proj"]


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def qwen_block(sd, prefix, x, heads, base=10000.0):
    """QWenBlock without cache: x [S, H] (one sequence), positions 0..S-1, causal attention."""
    seq, hidden = x.shape
    d = hidden // heads
    h = rms_norm(x, sd[prefix + "ln_1.weight"])
    qkv = linear(h, sd[prefix + "attn.c_attn.weight"], sd[prefix + "attn.c_attn.bias"])
    q, k, v = (t.reshape(seq, heads, d) for t in np.split(qkv, 3, axis=-1))
    inv_freq = 1.0 / base ** (np.arange(0, d, 2) / d)
    freqs = np.arange(seq)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)[:, None, :]  # [S, 1, d]
    q = q * np.cos(emb) + rotate_half(q) * np.sin(emb)
    k = k * np.cos(emb) + rotate_half(k) * np.sin(emb)
    scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
    scores = np.where(np.tril(np.ones([seq, seq], dtype=bool)), scores, -np.inf)
    att = np.einsum("hqk,khd->qhd", softmax(scores), v).reshape(seq, hidden)
    x = x + linear(att, sd[prefix + "attn.c_proj.weight"])
    h = rms_norm(x, sd[prefix + "ln_2.weight"])
    mlp = linear(h, sd[prefix + "mlp.w1.weight"]) * silu(linear(h, sd[prefix + "mlp.w2.weight"]))
    return x + linear(mlp, sd[prefix + "mlp.c_proj.weight"])


def qwen_vl_logits(sd, input_ids, pixels, heads, vision_heads, resampler_heads, img_start_id):
    """Whole-model logits for one sequence [S] with its images [n, 3, S, S]; also returns the hidden
    state after every decoder block (for block-level comparisons)."""
    ids = np.asarray(input_ids)
    x = sd["transformer.wte.weight"][ids].astype(np.float64)
    if pixels is not None and len(pixels):
        features = vision_tower(sd, pixels, vision_heads, resampler_heads)
        starts = np.flatnonzero(ids == img_start_id)
        ends = np.flatnonzero(ids == img_start_id + 1)
        for feature, a, b in zip(features, starts, ends):
            x[a + 1 : b] = feature
    states = [x]
    i = 0
    while f"transformer.h.{i}.ln_1.weight" in sd:
        x = qwen_block(sd, f"transformer.h.{i}.", x, heads)
        states.append(x)
        i += 1
    x = rms_norm(x, sd["transformer.ln_f.weight"])
    return x @ sd["lm_head.weight"].T, states
