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

# Rows per block: the block's logits (rows x vocab float32) stay near the 32 MiB last-level cache of
# the CPU this was measured on, and a demo batch (a few hundred labelled positions) is a few blocks.
DEFAULT_BLOCK_ROWS = 64
_POOLS: Dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per thread count (a step calls the head once per block of rows)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="linear_cross_entropy")
    return _POOLS[threads]


def cpu_threads() -> int:
    """The threads Paddle's CPU kernels get (``OMP_NUM_THREADS``; Paddle's default is one)."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS") or 1))


def _softmax_minus_onehot(logits: np.ndarray, targets: np.ndarray) -> float:
    """Turn ``logits`` [r, V] into ``softmax(logits) - onehot(targets)`` in place; returns the summed
    cross-entropy of the rows. NumPy releases the GIL inside ufuncs, so row slices run in threads."""
    picked = (np.arange(logits.shape[0]), targets)
    peak = logits.max(axis=1, keepdims=True)
    target_logit = logits[picked]
    np.subtract(logits, peak, out=logits)
    np.exp(logits, out=logits)
    norm = logits.sum(axis=1, keepdims=True)
    logits /= norm
    logits[picked] -= 1.0
    return float(np.sum(np.log(norm[:, 0]) + peak[:, 0] - target_logit, dtype=np.float64))


def linear_cross_entropy_numpy(
    states: np.ndarray, weight: np.ndarray, targets: np.ndarray, block_rows: int, threads: int = 1
):
    """Mean cross-entropy of ``softmax(states @ weight)`` against ``targets`` and its gradients.

    states [n, H] float32, weight [H, V] float32, targets [n] ints in [0, V). Returns
    (loss, d loss / d states [n, H], d loss / d weight [H, V]); n must be >= 1. The matmuls use
    BLAS's threads; the element-wise softmax work is split by rows over ``threads`` threads.
    """
    n = states.shape[0]
    grad_states = np.empty_like(states)
    grad_weight = np.zeros_like(weight)
    partial = np.empty_like(weight)
    total = 0.0
    for start in range(0, n, block_rows):
        rows = states[start : start + block_rows]  # [r, H]
        logits = rows @ weight  # [r, V], becomes softmax - onehot in place
        ids = targets[start : start + block_rows]
        bounds = np.linspace(0, rows.shape[0], min(threads, rows.shape[0]) + 1).astype(int)
        slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        if len(slices) == 1:
            total += _softmax_minus_onehot(logits, ids)
        else:
            total += sum(_pool(threads).map(lambda part: _softmax_minus_onehot(logits[part], ids[part]), slices))
        np.matmul(logits, weight.T, out=grad_states[start : start + block_rows])
        np.matmul(rows.T, logits, out=partial)
        grad_weight += partial
    grad_states /= n
    grad_weight /= n
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
            _as_numpy(states), _as_numpy(weight), targets, block_rows, cpu_threads()
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
