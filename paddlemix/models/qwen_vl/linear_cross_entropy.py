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

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

__all__ = ["linear_cross_entropy", "linear_cross_entropy_numpy"]

# Rows per block. One block holds rows x vocab float32 logits (155 MB at 256 rows); a demo batch
# (a few hundred labelled positions) is one or two blocks. Measured with
# ``benchmarks/bench_lm_head.py head``: 256-row blocks beat 64-row ones (which fit the last-level
# cache but pay three small-inner-dimension matmuls and a gradient accumulation per block).
DEFAULT_BLOCK_ROWS = 256
# When |row| * (largest column norm) bounds every logit of a block inside +-40, exp() needs no max
# shift: each value lies in (4e-18, 2.4e17), so a row sum over 151,936 columns stays below 4e22, far
# from float32's 3.4e38 and from 0. Trained demo models measure 27-35 (the shifted path runs above).
_NO_SHIFT_BOUND = 40.0
_POOLS: Dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per thread count (a step calls the head once per block of rows)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="linear_cross_entropy")
    return _POOLS[threads]


def cpu_threads() -> int:
    """The threads Paddle's CPU kernels get (``OMP_NUM_THREADS``; Paddle's default is one)."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))


def _exp_and_sum(logits: np.ndarray, sums: np.ndarray) -> None:
    """``logits`` [r, V] becomes ``exp(logits)`` in place and ``sums`` [r] its row sums. NumPy releases
    the GIL inside ufuncs, so row slices of one block run in threads."""
    np.exp(logits, out=logits)
    np.sum(logits, axis=1, out=sums)


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
    grad_weight = np.zeros_like(weight) if weight_grad else None
    largest_column = float(np.sqrt(np.einsum("hv,hv->v", weight, weight).max()))
    total = 0.0
    for start in range(0, n, block_rows):
        rows = states[start : start + block_rows]  # [r, H]
        ids = targets[start : start + block_rows]
        r = rows.shape[0]
        logits = rows @ weight  # [r, V], becomes E' in place
        picked = (np.arange(r), ids)
        target_logit = logits[picked].astype(np.float64)
        if float(np.sqrt(np.einsum("rh,rh->r", rows, rows).max())) * largest_column < _NO_SHIFT_BOUND:
            shift = np.zeros(r, dtype=np.float64)
        else:
            peak = logits.max(axis=1)
            np.subtract(logits, peak[:, None], out=logits)
            shift = peak.astype(np.float64)
        sums = np.empty(r, dtype=np.float32)
        bounds = np.linspace(0, r, min(threads, r) + 1).astype(int)
        parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        if len(parts) == 1:
            _exp_and_sum(logits, sums)
        else:
            list(_pool(threads).map(lambda part: _exp_and_sum(logits[part], sums[part]), parts))
        total += float(np.sum(np.log(sums.astype(np.float64)) + shift - target_logit))
        logits[picked] -= sums
        inverse = (1.0 / sums)[:, None]
        np.matmul(logits, weight.T, out=grad_states[start : start + r])
        grad_states[start : start + r] *= inverse
        if weight_grad:
            grad_weight += (rows * inverse).T @ logits
    if weight_grad:
        grad_weight /= n
    grad_states /= n
    return total / n, grad_states, grad_weight


def _as_numpy(tensor: paddle.Tensor) -> np.ndarray:
    """A float32 NumPy view of a CPU tensor (DLPack, no copy of the 151,936-column weight)."""
    tensor = tensor.detach()
    return np.from_dlpack(tensor if tensor.dtype == paddle.float32 else tensor.astype("float32"))


def _as_tensor(array: np.ndarray, dtype) -> paddle.Tensor:
    tensor = paddle.utils.dlpack.from_dlpack(array)
    return tensor if tensor.dtype == dtype else tensor.astype(dtype)


class _LinearCrossEntropy(PyLayer):
    @staticmethod
    def forward(ctx, states, weight, targets, block_rows):
        loss, grad_states, grad_weight = linear_cross_entropy_numpy(
            _as_numpy(states), _as_numpy(weight), targets, block_rows, cpu_threads(), not weight.stop_gradient
        )
        ctx.grads = [
            None if tensor.stop_gradient else _as_tensor(grad, tensor.dtype)
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
