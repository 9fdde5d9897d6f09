"""The decoder's attention core on CPU as one NumPy operation: scores, mask, softmax, weighted values.

PaddleNLP's QWen attention (``QWenAttention._attn``) runs, per layer, a scaled batched matmul, the
mask add, a float32 softmax and a second matmul, and their gradients, as separate Paddle CPU
kernels. At the demo's width (4 heads of 16, a few hundred positions) those kernels are slow next to
NumPy's BLAS and vectorised loops on the same values: ``benchmarks/bench_lm_head.py step`` times the
difference. :func:`attention_core` computes the same thing (the query scaled before its matmul, as
PaddleNLP does; the mask added; a max-shifted softmax) and, in backward, the softmax's gradient
``P * (dP - sum(dP * P))`` and the three matmul gradients. The mask is taken as given (no gradient).
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


class _AttentionCore(PyLayer):
    @staticmethod
    def forward(ctx, query, key, value, mask):
        q, k, v = _heads_first(query), _heads_first(key), _heads_first(value)
        scale = np.float32(1.0 / math.sqrt(q.shape[-1]))
        scaled_q = q * scale
        probs = np.matmul(scaled_q, k.transpose(0, 1, 3, 2))  # [B, h, S, S_kv], becomes P in place
        probs += as_numpy(mask)
        probs -= probs.max(axis=-1, keepdims=True)
        np.exp(probs, out=probs)
        probs /= probs.sum(axis=-1, keepdims=True)
        ctx.saved = (scaled_q, k, v, probs, scale)
        # the probabilities go out without a copy (PaddleNLP hands them on only for output_attentions)
        return _back_to_tensor(np.matmul(probs, v)), paddle.utils.dlpack.from_dlpack(probs)

    @staticmethod
    def backward(ctx, grad_out, grad_probs=None):
        scaled_q, k, v, probs, scale = ctx.saved
        d_out = _heads_first(grad_out)
        d_v = np.matmul(probs.transpose(0, 1, 3, 2), d_out)
        d_scores = np.matmul(d_out, v.transpose(0, 1, 3, 2))  # dP, becomes dS in place
        if grad_probs is not None:
            d_scores += as_numpy(grad_probs)
        d_scores -= np.einsum("bhij,bhij->bhi", d_scores, probs)[..., None]
        d_scores *= probs
        d_q = np.matmul(d_scores, k)
        d_q *= scale
        d_k = np.matmul(d_scores.transpose(0, 1, 3, 2), scaled_q)
        return _back_to_tensor(d_q), _back_to_tensor(d_k), _back_to_tensor(d_v), None


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
    :func:`attention_core` where it can; everything else is PaddleNLP's."""

    def _attn(self, query, key, value, attention_mask=None):
        if _uses_numpy(self, query, attention_mask):
            return attention_core(query, key, value, attention_mask)
        return super()._attn(query, key, value, attention_mask)
