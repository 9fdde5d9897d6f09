"""Qwen-VL's vision tower: a ViT (OpenCLIP ViT-bigG layout) and the one-layer cross-attention resampler.

Pixels [N, 3, H, W] -> patches [N, g*g, width] -> ViT blocks -> resampler -> [N, n_queries, output_dim],
the features that replace the ids between ``<img>`` and ``</img>``.

Parameter names mirror the Hugging Face checkpoint under ``transformer.visual.`` (``conv1``,
``positional_embedding``, ``ln_pre``, ``transformer.resblocks.{i}.{ln_1,attn.in_proj,attn.out_proj,
ln_2,mlp.c_fc,mlp.c_proj}``, ``attn_pool.{query,pos_embed,kv_proj,attn.in_proj_weight,
attn.in_proj_bias,attn.out_proj,ln_q,ln_kv}``, ``ln_post``, ``proj``). Linear weights are stored the
Paddle way, [in, out]; the converter transposes the PyTorch [out, in] tensors.
"""

import hashlib
import math
from typing import Any, Dict, List

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = [
    "FrozenFeatureCache",
    "QWenVisionTransformer",
    "Resampler",
    "VisionBlock",
    "sincos_pos_embed_2d",
    "resize_pos_embed",
]

LN_EPS = 1e-6
# Query/key scale of the spatial initialisation: at 4 a demo query's attention centres 2.9 patches
# from its own cell (uniform: 8.3), measured by benchmarks/study_resampler_locality.py.
SPATIAL_INIT_SCALE = 4.0
# Factor on the sin-cos table (values in [-1, 1]) that the layout initialisation puts in the ViT's
# positional table.
LAYOUT_POS_SCALE = 1.0


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos table [grid*grid, embed_dim] (MAE style, as the Qwen-VL resampler uses).

    Row r*grid + c: the first half encodes the column c, the second half the row r; each half is
    [sin(p * w_k), cos(p * w_k)] with w_k = 10000 ** (-k / (embed_dim / 4)).
    """
    if embed_dim % 4:
        raise ValueError(f"sin-cos embedding width must be a multiple of 4, got {embed_dim}")
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter, dtype=np.float64) / quarter)  # [D/4]
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")

    def encode(pos):  # [g*g] -> [g*g, D/2]
        angles = pos.reshape(-1, 1).astype(np.float64) * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1).astype(np.float32)


def resize_pos_embed(pos_embed: paddle.Tensor, num_positions: int) -> paddle.Tensor:
    """A square positional table [L, C] resized to [num_positions, C] (bicubic, corners not aligned,
    computed in float32), as the published model does for every 448px image (16x16 -> 32x32)."""
    src = math.isqrt(pos_embed.shape[0])
    tgt = math.isqrt(num_positions)
    if tgt * tgt != num_positions:
        raise ValueError(f"cannot place a square positional grid on {num_positions} positions")
    if src == tgt:
        return pos_embed
    grid = pos_embed.astype("float32").reshape([1, src, src, -1]).transpose([0, 3, 1, 2])  # [1, C, s, s]
    grid = F.interpolate(grid, size=(tgt, tgt), mode="bicubic", align_corners=False)  # [1, C, t, t]
    return grid.transpose([0, 2, 3, 1]).reshape([tgt * tgt, -1]).astype(pos_embed.dtype)  # [t*t, C]


class VisionAttention(nn.Layer):
    """Multi-head self-attention with one fused projection whose output is laid out per head as
    [q_h | k_h | v_h] (the published checkpoint's layout, not PyTorch MultiheadAttention's)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.in_proj = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x):  # x: [N, L, C]
        n, length, _ = x.shape
        qkv = self.in_proj(x).reshape([n, length, self.heads, 3 * self.head_dim])  # [N, L, h, 3d]
        q, k, v = qkv.split(3, axis=-1)  # each [N, L, h, d]
        out = F.scaled_dot_product_attention(q, k, v)  # [N, L, h, d]; scale 1/sqrt(d), no mask
        return self.out_proj(out.reshape([n, length, -1]))  # [N, L, C]


class VisionBlock(nn.Layer):
    """Pre-LayerNorm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) with an exact GELU."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, epsilon=LN_EPS)
        self.attn = VisionAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width, epsilon=LN_EPS)
        hidden = int(width * mlp_ratio)  # 1664 * 4.9231 -> 8192
        self.mlp = nn.Sequential(
            ("c_fc", nn.Linear(width, hidden)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(hidden, width))
        )

    def forward(self, x):  # [N, L, C] -> [N, L, C]
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class VisionBlocks(nn.Layer):
    """The block stack; exists so parameter names read ``transformer.resblocks.{i}``."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.resblocks = nn.LayerList([VisionBlock(width, heads, mlp_ratio) for _ in range(layers)])

    def forward(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class CrossAttention(nn.Layer):
    """Multi-head attention with PyTorch ``nn.MultiheadAttention``'s parameters: a fused
    ``in_proj_weight`` whose columns are [W_q | W_k | W_v] (stored [E, 3E]), ``in_proj_bias`` and
    ``out_proj``. Queries, keys and values may differ (here: queries vs. image patches)."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = self.create_parameter(
            [embed_dim, 3 * embed_dim], default_initializer=nn.initializer.XavierUniform()
        )
        self.in_proj_bias = self.create_parameter([3 * embed_dim], is_bias=True)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, query, key, value):  # query [N, Q, E], key/value [N, L, E] -> [N, Q, E]
        e = self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        q = paddle.matmul(query, w[:, :e]) + b[:e]
        k = paddle.matmul(key, w[:, e : 2 * e]) + b[e : 2 * e]
        v = paddle.matmul(value, w[:, 2 * e :]) + b[2 * e :]

        def heads(t):  # [N, S, E] -> [N, S, h, E/h]
            return t.reshape([t.shape[0], t.shape[1], self.num_heads, e // self.num_heads])

        out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))  # [N, Q, h, E/h]
        return self.out_proj(out.reshape([out.shape[0], out.shape[1], e]))


class Resampler(nn.Layer):
    """Compresses a patch sequence to ``n_queries`` vectors with one cross-attention layer.

    queries = ln_q(query) + pos_embed                  [Q, E]  (sin-cos of a sqrt(Q) grid)
    keys    = ln_kv(kv_proj(x)) + resized pos_embed    [N, L, E]
    values  = ln_kv(kv_proj(x))                        [N, L, E]
    """

    def __init__(self, n_queries: int, embed_dim: int, num_heads: int, kv_dim: int):
        super().__init__()
        grid = math.isqrt(n_queries)
        # A fixed table, stored in the checkpoint (so it is a parameter) but never trained.
        self.pos_embed = self.create_parameter(
            [n_queries, embed_dim],
            default_initializer=nn.initializer.Assign(sincos_pos_embed_2d(embed_dim, grid)),
        )
        self.pos_embed.stop_gradient = True
        self.query = self.create_parameter(
            [n_queries, embed_dim], default_initializer=nn.initializer.TruncatedNormal(std=0.02)
        )
        # The published code skips the projection when widths already match.
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias_attr=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = CrossAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, epsilon=LN_EPS)
        self.ln_kv = nn.LayerNorm(embed_dim, epsilon=LN_EPS)

    def init_spatial(self, scale: float = SPATIAL_INIT_SCALE) -> None:
        """Re-initialise so that query i attends to the patches under its own grid cell.

        The learned queries become zero (``ln_q`` of zero is its bias, zero at construction, so a
        query is its sin-cos position) and the query and key projections ``scale`` times the
        identity without bias: the logit of query i for patch j is
        ``scale^2 * pos_i . (x_j + pos_j) / sqrt(head_dim)``, largest where the patch's position
        matches the query's. The value and output projections keep their random initialisation.
        A random start instead attends almost uniformly (``benchmarks/study_resampler_locality.py``).
        Meant for one head (the demo and tiny presets): heads split the sin-cos dimensions, whose first
        half encodes the column and second the row, so with two heads each sees one coordinate only.
        """
        e = self.attn.embed_dim
        weight = self.attn.in_proj_weight.numpy()
        weight[:, : 2 * e] = np.concatenate([np.eye(e), np.eye(e)], axis=1) * scale
        bias = self.attn.in_proj_bias.numpy()
        bias[: 2 * e] = 0.0
        self.attn.in_proj_weight.set_value(weight)
        self.attn.in_proj_bias.set_value(bias)
        self.query.set_value(np.zeros(self.query.shape, dtype=weight.dtype))

    def forward(self, x):  # x: [N, L, kv_dim] -> [N, Q, E]
        key_pos = resize_pos_embed(self.pos_embed, x.shape[1])  # [L, E]
        x = self.ln_kv(self.kv_proj(x))  # [N, L, E]
        q = self.ln_q(self.query) + self.pos_embed  # [Q, E]
        q = q.unsqueeze(0).expand([x.shape[0], -1, -1])  # [N, Q, E]
        return self.attn(q, x + key_pos, x)


class QWenVisionTransformer(nn.Layer):
    """Pixels [N, 3, S, S] (CLIP-normalised) -> image features [N, n_queries, output_dim]."""

    def __init__(self, visual: Dict[str, Any], resampler_heads: int):
        super().__init__()
        width, output_dim = visual["width"], visual["output_dim"]
        self.patch_size = visual["patch_size"]
        self.conv1 = nn.Conv2D(3, width, kernel_size=self.patch_size, stride=self.patch_size, bias_attr=False)
        self.positional_embedding = self.create_parameter(
            [visual["pos_embed_size"], width], default_initializer=nn.initializer.Normal(std=width**-0.5)
        )
        self.ln_pre = nn.LayerNorm(width, epsilon=LN_EPS)
        self.transformer = VisionBlocks(width, visual["layers"], visual["heads"], visual["mlp_ratio"])
        self.attn_pool = Resampler(visual["n_queries"], output_dim, resampler_heads, kv_dim=width)
        self.ln_post = nn.LayerNorm(output_dim, epsilon=LN_EPS)
        # A bare matrix applied as x @ proj (same orientation in PyTorch and Paddle).
        self.proj = self.create_parameter(
            [output_dim, output_dim], default_initializer=nn.initializer.Normal(std=output_dim**-0.5)
        )

    @property
    def dtype(self):
        return self.conv1.weight.dtype

    def init_layout(self, pos_scale: float = LAYOUT_POS_SCALE) -> None:
        """Start the tower so that its output tokens say where they are: the positional table becomes
        the smooth 2-D sin-cos table times ``pos_scale`` and the resampler attends by position
        (:meth:`Resampler.init_spatial`). A random table gives every patch an unrelated vector, which
        no linear read-out turns into a row and a column; a pretrained ViT's learned table is smooth
        in the same way."""
        size, width = self.positional_embedding.shape
        table = sincos_pos_embed_2d(width, math.isqrt(size))
        self.positional_embedding.set_value((table * pos_scale).astype(np.float32))
        self.attn_pool.init_spatial()

    def forward(self, pixel_values):  # [N, 3, S, S]
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3 or pixel_values.shape[2] != pixel_values.shape[3]:
            raise ValueError(f"images must be [n_images, 3, S, S] pixel tensors, got shape {list(pixel_values.shape)}")
        x = self.conv1(pixel_values.astype(self.dtype))  # [N, width, g, g]
        x = x.flatten(2).transpose([0, 2, 1])  # [N, g*g, width]
        x = x + resize_pos_embed(self.positional_embedding, x.shape[1])
        x = self.ln_pre(x)
        x = self.transformer(x)  # [N, g*g, width]
        x = self.attn_pool(x)  # [N, Q, output_dim]
        x = self.ln_post(x)
        return paddle.matmul(x, self.proj)  # [N, Q, output_dim]


class FrozenFeatureCache:
    """A frozen vision tower's features, remembered per image for a training run.

    With every vision weight frozen (and no dropout in the tower) an image's features are the same at
    every step, yet training recomputes them for each record that shows the image (a demo image is in
    six records on average, and every epoch shows it again). ``cache(visual, pixel_values)`` returns
    what ``visual(pixel_values)`` returns, computing only the images it has not seen (keyed by a hash
    of their pixels) and keeping features until ``max_bytes`` are held; later images are computed
    every time. Features computed in another batch can differ from a fresh computation in the last
    float bits (BLAS blocking depends on the batch), not more.
    """

    def __init__(self, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError(f"FrozenFeatureCache needs a positive byte budget, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.held_bytes = 0
        self.hits = 0
        self.misses = 0
        self._features: Dict[bytes, paddle.Tensor] = {}

    @staticmethod
    def trainable_parameters(visual: nn.Layer) -> List[str]:
        """Names of the tower's trainable parameters: a cache only holds when this is empty."""
        return [name for name, param in visual.named_parameters() if not param.stop_gradient]

    def __call__(self, visual: nn.Layer, pixel_values: paddle.Tensor) -> paddle.Tensor:
        pixels = pixel_values.numpy()
        keys = [
            hashlib.blake2b(f"{image.shape}{image.dtype}".encode() + image.tobytes(), digest_size=16).digest()
            for image in pixels
        ]
        missing = []  # the first record of each image not yet held
        for i, key in enumerate(keys):
            if key not in self._features and all(keys[j] != key for j in missing):
                missing.append(i)
        computed = {}
        if missing:
            with paddle.no_grad():
                fresh = visual(paddle.to_tensor(pixels[missing], place=pixel_values.place))
            size = int(np.prod(fresh.shape[1:])) * fresh.element_size()
            for row, i in enumerate(missing):
                computed[keys[i]] = fresh[row].clone()
                if self.held_bytes + size <= self.max_bytes:
                    self._features[keys[i]] = computed[keys[i]]
                    self.held_bytes += size
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return paddle.stack([computed.get(key, self._features.get(key)) for key in keys])
