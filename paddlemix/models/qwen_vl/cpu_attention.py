"""The decoder's attention core on CPU as one NumPy operation: scores, mask, softmax, weighted values.

PaddleNLP's QWen attention (``QWenAttention._attn``) runs, per layer, a scaled batched matmul, the
mask add, a float32 softmax and a second matmul, and their gradients, as separate Paddle CPU
kernels. At the demo's width (4 heads of 16, a few hundred positions) those kernels are slow next to
NumPy's BLAS and vectorised loops on the same values: ``benchmarks/bench_lm_head.py step`` times the
difference. :func:`attention_core` computes the same thing (the query scaled before its matmul, as
PaddleNLP does; the mask added; a max-shifted softmax) and, in backward, the softmax's gradient
``P * (dP - sum(dP * P))`` and the three matmul gradients. The mask is taken as given (no gradient).

In a training forward (no KV cache) :class:`CpuQWenAttention` goes further and takes everything
between the fused query/key/value projection and the output projection: the head split, PaddleNLP's
rotary embedding (``x * cos + rotate_half(x) * sin``, its tables indexed by the position ids) of
query and key, the core and the head merge are one NumPy operation, whose rotary gradient is
``d * cos + rotate_half^T(d * sin)``. PaddleNLP runs that part as about twenty small Paddle kernels
a layer and as many gradient kernels (slices, concats, multiplies of ~0.5-1 ms each on CPU).
"""

import math

import numpy as np
import paddle
from paddle.autograd import PyLayer
from paddlenlp.transformers.qwen.modeling import QWenAttention

from .cpu_kernels import as_numpy

__all__ = ["attention_core", "CpuQWenAttention"]


def _heads_first(tensor: paddle.Tensor) -> np.ndarray:
    """[B, S, heads, D] Paddle tensor -> contiguous [B, heads, S, D] NumPy array (a copy: NumPy's
    batched matmul calls BLAS only on slices whose rows are contiguous or transposed-contiguous)."""
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    return np.ascontiguousarray(as_numpy(tensor).transpose(0, 2, 1, 3))


def _back_to_tensor(array: np.ndarray) -> paddle.Tensor:
    """[B, heads, S, D] NumPy -> contiguous [B, S, heads, D] float32 tensor."""
    return paddle.to_tensor(np.ascontiguousarray(array.transpose(0, 2, 1, 3)))


def _probabilities(scaled_q: np.ndarray, k: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """softmax(scaled_q k^T + mask) over the keys, [B, h, S, S_kv] (max-shifted, float32)."""
    probs = np.matmul(scaled_q, k.transpose(0, 1, 3, 2))  # becomes P in place
    probs += mask
    probs -= probs.max(axis=-1, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def _core_backward(scaled_q, k, v, probs, scale, d_out, d_probs=None):
    """Gradients of ``probs @ v`` (``probs`` from :func:`_probabilities`) with respect to the
    unscaled query, the key and the value, given ``d_out`` [B, h, S, D] (and ``d_probs``)."""
    d_v = np.matmul(probs.transpose(0, 1, 3, 2), d_out)
    d_scores = np.matmul(d_out, v.transpose(0, 1, 3, 2))  # dP, becomes dS in place
    if d_probs is not None:
        d_scores += d_probs
    d_scores -= np.einsum("bhij,bhij->bhi", d_scores, probs)[..., None]
    d_scores *= probs
    d_q = np.matmul(d_scores, k)
    d_q *= scale
    d_k = np.matmul(d_scores.transpose(0, 1, 3, 2), scaled_q)
    return d_q, d_k, d_v


class _AttentionCore(PyLayer):
    @staticmethod
    def forward(ctx, query, key, value, mask):
        q, k, v = _heads_first(query), _heads_first(key), _heads_first(value)
        scale = np.float32(1.0 / math.sqrt(q.shape[-1]))
        scaled_q = q * scale
        probs = _probabilities(scaled_q, k, as_numpy(mask))
        ctx.saved = (scaled_q, k, v, probs, scale)
        # the probabilities go out without a copy (PaddleNLP hands them on only for output_attentions)
        return _back_to_tensor(np.matmul(probs, v)), paddle.utils.dlpack.from_dlpack(probs)

    @staticmethod
    def backward(ctx, grad_out, grad_probs=None):
        scaled_q, k, v, probs, scale = ctx.saved
        d_probs = None if grad_probs is None else as_numpy(grad_probs)
        d_q, d_k, d_v = _core_backward(scaled_q, k, v, probs, scale, _heads_first(grad_out), d_probs)
        return _back_to_tensor(d_q), _back_to_tensor(d_k), _back_to_tensor(d_v), None


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """PaddleNLP's rotary embedding ``x * cos + rotate_half(x) * sin``, where rotate_half(x) is
    ``concat(-x2, x1)`` of x's two halves; a new contiguous array."""
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half] -= x[..., half:] * sin[..., :half]
    out[..., half:] += x[..., :half] * sin[..., half:]
    return out


def _rotate_backward(d: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """The gradient of :func:`_rotate` with respect to x, given d = dL/d(rotated x)."""
    half = d.shape[-1] // 2
    out = d * cos
    out[..., :half] += d[..., half:] * sin[..., half:]
    out[..., half:] -= d[..., :half] * sin[..., :half]
    return out


class _RotaryAttention(PyLayer):
    """From the fused query/key/value projection [B, S, 3 * h * D] to the attention's merged heads
    [B, S, h * D]: head split, rotary embedding of query and key, the core, head merge."""

    @staticmethod
    def forward(ctx, mixed, cos, sin, mask, num_heads):
        m = as_numpy(mixed)
        batch, seq, width = m.shape
        head_dim = width // (3 * num_heads)
        q, k, v = m.reshape(batch, seq, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)  # [B, h, S, D] views
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, S, D]
        scale = np.float32(1.0 / math.sqrt(head_dim))
        scaled_q = _rotate(q, cos, sin)
        scaled_q *= scale
        k = _rotate(k, cos, sin)
        v = np.ascontiguousarray(v)
        probs = _probabilities(scaled_q, k, as_numpy(mask))
        ctx.saved = (scaled_q, k, v, probs, scale, cos, sin)
        out = np.matmul(probs, v)  # [B, h, S, D]
        return paddle.to_tensor(np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(batch, seq, -1))

    @staticmethod
    def backward(ctx, grad_context):
        scaled_q, k, v, probs, scale, cos, sin = ctx.saved
        batch, heads, seq, head_dim = v.shape
        d_out = np.ascontiguousarray(as_numpy(grad_context).reshape(batch, seq, heads, head_dim).transpose(0, 2, 1, 3))
        d_q, d_k, d_v = _core_backward(scaled_q, k, v, probs, scale, d_out)
        d_mixed = np.empty((batch, seq, 3, heads, head_dim), dtype=np.float32)
        parts = d_mixed.transpose(2, 0, 3, 1, 4)
        parts[0] = _rotate_backward(d_q, cos, sin)
        parts[1] = _rotate_backward(d_k, cos, sin)
        parts[2] = d_v
        return paddle.to_tensor(d_mixed.reshape(batch, seq, -1)), None


def attention_core(query, key, value, mask):
    """softmax(query k^T / sqrt(D) + mask) v for query [B, S, h, D], key and value [B, S_kv, h, D]
    and an additive float32 mask broadcastable to [B, h, S, S_kv]. Returns (output [B, S, h, D],
    attention probabilities [B, h, S, S_kv]); differentiable in query, key and value."""
    if not mask.stop_gradient:
        raise ValueError("attention_core takes the mask as a constant; it has stop_gradient False")
    out, probs = _AttentionCore.apply(query, key, value, mask)
    return out, probs


def _uses_numpy(attention, query, mask) -> bool:
    """The NumPy core runs for float32 CPU attention with a mask and no attention dropout in training."""
    dropout = attention.attn_dropout.p if hasattr(attention.attn_dropout, "p") else 0.0
    return (
        query.place.is_cpu_place()
        and query.dtype == paddle.float32
        and mask is not None
        and mask.dtype == paddle.float32
        and not attention.config.use_flash_attention
        and not (attention.training and dropout > 0)
    )


class CpuQWenAttention(QWenAttention):
    """PaddleNLP's ``QWenAttention`` (the same parameters and names) whose core runs
    :func:`attention_core` where it can. A training forward without a cache goes further: from
    the fused projection on, head split, rotary embedding, core and head merge are one NumPy
    operation (PaddleNLP runs the rotary embedding as ~20 small Paddle ops and their gradients a
    layer, slices and concats costing ~1 ms each on CPU); everything else is PaddleNLP's."""

    def forward(
        self,
        hidden_states,
        layer_past=None,
        attention_mask=None,
        position_ids=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        output_attentions=False,
        use_cache=False,
    ):
        fused = (
            self.training
            and layer_past is None
            and not use_cache
            and not output_attentions
            and not self.enable_recompute
            and not self.config.use_long_sequence_strategies
            and not self.config.use_fused_rope
            and self.rotary_ndims is None
            and _uses_numpy(self, hidden_states, attention_mask)
        )
        if not fused:
            return super().forward(
                hidden_states, layer_past, attention_mask, position_ids, encoder_hidden_states,
                encoder_attention_mask, output_attentions, use_cache,
            )
        batch, seq = hidden_states.shape[:2]
        # PaddleNLP's tables for this length (in training its NTK factor is the cached one)
        cos, sin = self.rotary_emb(hidden_states, seq, ntk_alpha=self._ntk_cached)
        cos, sin = as_numpy(cos)[0, :, 0], as_numpy(sin)[0, :, 0]  # [S, D]
        positions = np.broadcast_to(np.arange(seq), (batch, seq)) if position_ids is None else position_ids.numpy()
        context = _RotaryAttention.apply(
            self.c_attn(hidden_states), cos[positions], sin[positions], attention_mask, self.num_heads
        )
        return self.c_proj(context), None

    def _attn(self, query, key, value, attention_mask=None):
        if _uses_numpy(self, query, attention_mask):
            return attention_core(query, key, value, attention_mask)
        return super()._attn(query, key, value, attention_mask)
