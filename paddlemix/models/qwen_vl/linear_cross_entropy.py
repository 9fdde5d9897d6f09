"""The LM head and its softmax cross-entropy as one CPU operation that never keeps the full logits.

``linear_cross_entropy(states, weight, targets)`` equals
``F.cross_entropy(paddle.matmul(states, weight), targets, reduction="mean")`` in value and in its
gradients with respect to ``states`` and ``weight``. With the real 151,936-column vocabulary and a
small hidden size that head is most of a CPU training step, and Paddle's CPU matmul, softmax and
cross-entropy kernels run it several times slower than NumPy's BLAS and vectorised ``exp`` do on the
same cores (``benchmarks/bench_lm_head.py``). So on CPU the forward pass computes, a block of rows
at a time, the logits, their log-sum-exp, the loss and both gradients in NumPy (the idea behind
Liger-Kernel's FusedLinearCrossEntropy and Apple's Cut Cross-Entropy: the gradient of the loss is
``softmax - onehot``, known as soon as a row's logits are); backward only scales the stored
gradients by the incoming one. Elsewhere (GPU) the plain Paddle path runs.
"""

import threading

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

from .cpu_kernels import as_numpy, as_tensor, cpu_threads, exp_and_row_sums

__all__ = ["linear_cross_entropy", "linear_cross_entropy_numpy"]

# Rows per block. One block holds rows x vocab float32 logits (311 MB at 512 rows, kept between
# calls); a demo batch (68-276 labelled positions, up to 1,020 at its length) is one block or two.
# Measured (``linear_cross_entropy_numpy``, two threads): 276 rows take 257 ms as blocks of 256 + 20
# and 189 ms as one block (the second block's small matmuls and weight-gradient sum cost the
# difference); 223 rows 173 vs 159 ms.
DEFAULT_BLOCK_ROWS = 512
# When |row| * (largest column norm) bounds every logit of a block inside +-40, exp() needs no max
# shift: each value lies in (4e-18, 2.4e17), so a row sum over 151,936 columns stays below 4e22, far
# from float32's 3.4e38 and from 0. Trained demo models measure 27-35 (the shifted path runs above).
_NO_SHIFT_BOUND = 40.0
# The logits block is kept between calls, one per thread, for the thread's life (it grows to the
# largest block asked for, at most DEFAULT_BLOCK_ROWS rows unless a caller asks for more): a fresh
# array costs its page faults on every step (~50 ms at 400 rows measured, more than its exp).
_BUFFERS = threading.local()


def _logits_buffer(rows: int, vocab: int) -> np.ndarray:
    """A C-contiguous [rows, vocab] float32 view of this thread's reused logits buffer."""
    buffer = getattr(_BUFFERS, "logits", None)
    if buffer is None or buffer.shape[1] != vocab or buffer.shape[0] < rows:
        buffer = _BUFFERS.logits = np.empty((rows, vocab), dtype=np.float32)
    return buffer[:rows]


def linear_cross_entropy_numpy(
    states: np.ndarray,
    weight: np.ndarray,
    targets: np.ndarray,
    block_rows: int,
    threads: int = 1,
    weight_grad: bool = True,
):
    """Mean cross-entropy of ``softmax(states @ weight)`` against ``targets`` and its gradients.

    states [n, H] float32, weight [H, V] float32, targets [n] ints in [0, V). Returns
    (loss, d loss / d states [n, H], d loss / d weight [H, V] or None when ``weight_grad`` is off);
    n must be >= 1. The matmuls use BLAS's threads; exp and the row sums are split by rows over
    ``threads`` threads.

    With ``E = exp(logits - shift)`` and row sums ``s``, the gradient of a row's loss is
    ``(E - s * onehot) / s``. The division is not made over the vocabulary: ``1 / s`` scales the
    [r, H] sides of the two matmuls (``(E' @ W.T) / s`` and ``(states / s).T @ E'``, ``E'`` being ``E``
    with ``s`` taken off each target entry, as the plain path takes 1 off the softmax). The per-row
    shift (the row maximum) is skipped when ``|row| * max column norm`` bounds every logit of the
    block below :data:`_NO_SHIFT_BOUND`, which saves two passes over the logits.
    """
    n = states.shape[0]
    grad_states = np.empty_like(states)
    grad_weight = np.empty_like(weight) if weight_grad else None
    largest_column = float(np.sqrt(np.einsum("hv,hv->v", weight, weight).max()))
    total = 0.0
    buffer = _logits_buffer(min(block_rows, n), weight.shape[1])
    for start in range(0, n, block_rows):
        rows = states[start : start + block_rows]  # [r, H]
        ids = targets[start : start + block_rows]
        r = rows.shape[0]
        logits = buffer[:r]  # [r, V], becomes E' in place
        np.matmul(rows, weight, out=logits)
        picked = (np.arange(r), ids)
        target_logit = logits[picked].astype(np.float64)
        bound = float(np.sqrt(np.einsum("rh,rh->r", rows, rows).max())) * largest_column  # NaN if any is
        if bound < _NO_SHIFT_BOUND:
            shift = np.zeros(r, dtype=np.float64)
        else:
            peak = logits.max(axis=1)
            np.subtract(logits, peak[:, None], out=logits)
            shift = peak.astype(np.float64)
        sums = np.empty(r, dtype=np.float32)
        exp_and_row_sums(logits, sums, threads, finite=bool(np.isfinite(bound)))
        total += float(np.sum(np.log(sums.astype(np.float64)) + shift - target_logit))
        logits[picked] -= sums
        inverse = (1.0 / (sums * np.float32(n)))[:, None]  # the softmax's 1 / s and the mean's 1 / n
        block_grad = grad_states[start : start + r]
        np.matmul(logits, weight.T, out=block_grad)
        block_grad *= inverse
        if weight_grad:
            if start == 0:
                np.matmul((rows * inverse).T, logits, out=grad_weight)
            else:
                grad_weight += (rows * inverse).T @ logits
    return total / n, grad_states, grad_weight


class _LinearCrossEntropy(PyLayer):
    @staticmethod
    def forward(ctx, states, weight, targets, block_rows):
        loss, grad_states, grad_weight = linear_cross_entropy_numpy(
            as_numpy(states), as_numpy(weight), targets, block_rows, cpu_threads(), not weight.stop_gradient
        )
        ctx.grads = [
            None if tensor.stop_gradient else as_tensor(grad, tensor.dtype)
            for tensor, grad in ((states, grad_states), (weight, grad_weight))
        ]
        return paddle.to_tensor(loss, dtype="float32")

    @staticmethod
    def backward(ctx, grad_loss):
        scale = float(grad_loss)
        # The loss is usually the final output (incoming gradient 1): hand the gradients on uncopied.
        return tuple(g if g is None or scale == 1.0 else g * scale for g in ctx.grads)


def linear_cross_entropy(
    states: paddle.Tensor, weight: paddle.Tensor, targets: paddle.Tensor, block_rows: int = DEFAULT_BLOCK_ROWS
) -> paddle.Tensor:
    """Mean cross-entropy of ``states @ weight`` (states [n, H], weight [H, V]) against ``targets``
    [n] (no ignored ids: select the labelled rows first). A float32 scalar."""
    if states.shape[0] == 0:
        raise ValueError("linear_cross_entropy needs at least one row; select labelled positions first")
    if not states.place.is_cpu_place():
        logits = paddle.matmul(states, weight).astype("float32")
        return F.cross_entropy(logits, targets.reshape([-1, 1]), reduction="mean")
    ids = targets.numpy().reshape([-1]).astype(np.int64)
    vocab = weight.shape[1]
    if ids.min() < 0 or ids.max() >= vocab:
        raise ValueError(f"target ids must lie in [0, {vocab}); got {ids.min()}..{ids.max()}")
    return _LinearCrossEntropy.apply(states, weight, ids, block_rows)
