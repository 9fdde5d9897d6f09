"""What the NumPy CPU paths of the model (the fused LM head, the attention core) share: zero-copy
views between Paddle and NumPy, the thread count and pool they split work over, and a vectorised
``exp`` with row sums.

``exp_and_row_sums`` is where the fused head spends its elementwise time: one ``exp`` per logit,
rows x 151,936 of them a step. On this project's 2-core machines NumPy's float32 ``exp`` and row sum
take 2.5-2.8 ns a value; the Numba kernel below, 0.62-0.76 ns on one thread and 0.36-0.45 on two
(``benchmarks/bench_lm_head.py exp``, 223 rows, three runs). It is the textbook reduction: ``x = n ln2 + f``
with ``n`` the nearest integer to ``x / ln2`` (ln 2 split in two parts so ``f`` carries no rounding
of ``n ln2``), ``exp(f)`` by its degree-7 Taylor polynomial on ``|f| <= ln2 / 2`` (truncation below
6e-9 relative) and ``2^n`` written straight into a float's exponent bits; each 2,048-value span is
then summed in float32 and the spans in float64. Inputs are clamped to [-87, 88] so ``2^n`` stays a
normal float: below -87 the result is of order 1e-38 instead of 0, which no row sum of a softmax (>=
1 after the max shift) can see. Measured on 25 M values in [-87, 88] against float64 (the same
benchmark): at most 0.94 ulp off, 7.9e-8 relative (NumPy's own ``exp``: 2.49 ulp, 2.1e-7). Without Numba the NumPy functions
run instead.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict

import numpy as np
import paddle

__all__ = ["as_numpy", "as_tensor", "cpu_threads", "thread_pool", "exp_and_row_sums", "adamw_rows", "merge_rows",
           "adamw_sparse_rows", "HAVE_NUMBA"]

_POOLS: Dict[int, ThreadPoolExecutor] = {}


def as_numpy(tensor: paddle.Tensor) -> np.ndarray:
    """A float32 NumPy view of a CPU tensor (DLPack, no copy unless it has another dtype)."""
    tensor = tensor.detach()
    return np.from_dlpack(tensor if tensor.dtype == paddle.float32 else tensor.astype("float32"))


def as_tensor(array: np.ndarray, dtype) -> paddle.Tensor:
    """A Paddle tensor over ``array`` (DLPack, no copy), cast when ``dtype`` differs."""
    tensor = paddle.utils.dlpack.from_dlpack(array)
    return tensor if tensor.dtype == dtype else tensor.astype(dtype)


def cpu_threads() -> int:
    """The threads of the NumPy side of the CPU roads (the head's row blocks and exp kernel): NumPy's
    BLAS threads (``OPENBLAS_NUM_THREADS``) when set, else Paddle's (``OMP_NUM_THREADS``; Paddle's
    default is one)."""
    return max(1, int(os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1))


def thread_pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per thread count (the head calls it once per block of rows a step)."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="paddlemix_cpu")
    return _POOLS[threads]


def _numpy_exp_and_row_sums(block: np.ndarray, sums: np.ndarray) -> None:
    np.exp(block, out=block)
    np.sum(block, axis=1, out=sums)


try:  # Numba is in requirements.txt; the NumPy functions keep the head working without it
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only where Numba is missing
    HAVE_NUMBA = False
    _exp_rows = _numpy_exp_and_row_sums
    _adamw_rows = _merge_rows = _adamw_sparse_rows = None
else:
    HAVE_NUMBA = True
    _LOG2E = np.float32(1.4426950408889634)
    _LN2_HIGH = np.float32(0.693359375)  # ln 2 = high + low; n * high is exact for |n| < 2^12
    _LN2_LOW = np.float32(-2.1219444005469057e-4)
    _SPAN = 2048  # values summed in float32 before the row total (in float64) takes them

    def _jit(**options):
        """``njit`` with its compiled code cached beside this file (or in the user's cache); where
        neither can be written, Numba refuses the cache and the kernels compile in each process."""

        def decorate(function):
            try:
                return njit(cache=True, **options)(function)
            except RuntimeError:  # "cannot cache function ...: no locator available"
                return njit(**options)(function)

        return decorate

    @intrinsic
    def _float_with_bits(typingctx, bits):
        """The float32 whose bit pattern is the int32 ``bits`` (LLVM's bitcast; it vectorises)."""

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(types.int32), codegen

    # Fused multiply-adds only: reordering would undo the two-part reduction by ln 2 (LLVM may fold
    # x - n*high - n*low into x - n*ln2). NaN is not looked for (a per-value test halves the speed):
    # it comes out clamped, so callers hand only finite values (the head checks its norms first).
    @_jit(fastmath={"contract"}, nogil=True, error_model="numpy", boundscheck=False)
    def _exp_span(values):
        for j in range(values.shape[0]):
            x = min(max(values[j], np.float32(-87.0)), np.float32(88.0))
            n = np.floor(x * _LOG2E + np.float32(0.5))
            f = x - n * _LN2_HIGH - n * _LN2_LOW
            p = np.float32(1.0 / 5040.0)
            p = p * f + np.float32(1.0 / 720.0)
            p = p * f + np.float32(1.0 / 120.0)
            p = p * f + np.float32(1.0 / 24.0)
            p = p * f + np.float32(1.0 / 6.0)
            p = p * f + np.float32(0.5)
            p = p * f + np.float32(1.0)
            p = p * f + np.float32(1.0)
            e = p * _float_with_bits((np.int32(n) + np.int32(127)) << 23)
            values[j] = e

    # Reordered additions let LLVM keep eight running sums in an AVX2 register (over one span, in
    # float32; the row total over spans is float64).
    @_jit(fastmath={"reassoc", "contract"}, nogil=True, error_model="numpy", boundscheck=False)
    def _sum_span(values):
        total = np.float32(0.0)
        for j in range(values.shape[0]):
            total += values[j]
        return total

    @_jit(nogil=True, boundscheck=False)
    def _exp_rows(block, sums):
        width = block.shape[1]
        for i in range(block.shape[0]):
            total = 0.0
            for start in range(0, width, _SPAN):
                span = block[i, start : start + _SPAN]
                _exp_span(span)
                total += _sum_span(span)
            sums[i] = total

    # No fastmath: the float32 operations of CpuAdamW's NumPy block update, in its order, one value
    # at a time (the same results to the bit), so the parameter, gradient and moments are read and
    # written once instead of once per NumPy call.
    @_jit(nogil=True, boundscheck=False, inline="always")
    def _adamw_value(p, m, v, j, gj, keep, beta1, beta2, g1, g2, eps_t, lr_t):
        mj = m[j] * beta1 + gj * g1
        vj = v[j] * beta2 + (gj * gj) * g2
        m[j] = mj
        v[j] = vj
        pj = p[j] * keep if keep != 1 else p[j]
        p[j] = pj - (mj / (np.sqrt(vj) + eps_t)) * lr_t

    # Is any of a row's gradient values nonzero (-0.0 is not)? An OR of the bits without the sign
    # vectorises; a compare-and-break loop read 1.8 GB/s.
    @_jit(nogil=True, boundscheck=False, inline="always")
    def _any_nonzero(bits):
        nonzero = np.uint32(0)
        for j in range(bits.shape[0]):
            nonzero |= bits[j]
        return (nonzero & np.uint32(0x7FFFFFFF)) != 0

    @_jit(nogil=True, boundscheck=False)
    def _adamw_rows(p, g, bits, m, v, seen, width, keep, beta1, beta2, g1, g2, eps_t, lr_t):
        rows = p.shape[0] // width
        skip = seen.shape[0] == rows
        for r in range(rows):
            a = r * width
            if skip and not seen[r]:
                if not _any_nonzero(bits[a : a + width]):
                    continue
                seen[r] = True
            for j in range(a, a + width):
                _adamw_value(p, m, v, j, g[j], keep, beta1, beta2, g1, g2, eps_t, lr_t)

    # A sparse embedding gradient (Paddle's SelectedRows: one row of values per id occurrence) summed
    # per id in occurrence order, as Paddle's dense embedding gradient adds them into zeros.
    @_jit(nogil=True, boundscheck=False)
    def _merge_rows(ids, values, index, merged):
        count = 0
        for i in range(ids.shape[0]):
            k = index[ids[i]]
            if k < 0:
                k = index[ids[i]] = count
                count += 1
                for j in range(values.shape[1]):
                    merged[k, j] = values[i, j]
            else:
                for j in range(values.shape[1]):
                    merged[k, j] += values[i, j]
        return count

    # _adamw_rows with the gradient as merged rows: row r's is merged[index[first + r]], or zero
    # where index is -1 (a seen row without a gradient this step still moves by its moments).
    @_jit(nogil=True, boundscheck=False)
    def _adamw_sparse_rows(p, m, v, seen, width, first, index, merged, bits, keep, beta1, beta2, g1, g2, eps_t, lr_t):
        rows = p.shape[0] // width
        zero = np.float32(0.0)
        for r in range(rows):
            k = index[first + r]
            if not seen[r]:
                if k < 0 or not _any_nonzero(bits[k]):
                    continue
                seen[r] = True
            a = r * width
            for j in range(width):
                _adamw_value(p, m, v, a + j, merged[k, j] if k >= 0 else zero, keep, beta1, beta2, g1, g2, eps_t, lr_t)


# Below this many values a parameter's update is not split over threads.
_ADAMW_SPLIT = 1 << 20


def _constants(keep, beta1, beta2, g1, g2, eps_t, lr_t):
    f = np.float32
    return (f(keep), f(beta1), f(beta2), f(g1), f(g2), f(eps_t), f(lr_t))


def _by_row_parts(rows: int, width: int, threads: int, update) -> None:
    """``update(first_row, end_row)`` over the rows, split over ``threads`` threads when the
    parameter holds a million values or more."""
    parts = min(threads, rows) if rows * width >= _ADAMW_SPLIT else 1
    if parts <= 1:
        update(0, rows)
        return
    bounds = np.linspace(0, rows, parts + 1).astype(np.int64)
    list(thread_pool(threads).map(lambda k: update(int(bounds[k]), int(bounds[k + 1])), range(parts)))


def adamw_rows(p, g, m, v, seen, width, keep, beta1, beta2, g1, g2, eps_t, lr_t, threads: int = 1) -> bool:
    """AdamW in place on flat float32 ``p`` (parameter), ``m``, ``v`` (moments) from ``g`` (gradient),
    seen as rows of ``width`` values, by the Numba kernel; the float32 constants are those of
    ``cpu_adamw._Step``. ``seen`` (bool per row, or empty: every row) skips rows with no gradient so
    far and marks rows whose gradient has a nonzero value. Parameters of a million values or more are
    split by rows over ``threads`` threads (the update is bound by memory, and one core does not
    saturate it: 9.7 million values took 21-30 ms on two threads, 38-58 ms on one). False (nothing
    done) without Numba."""
    if _adamw_rows is None:  # pragma: no cover - exercised only where Numba is missing
        return False
    constants = _constants(keep, beta1, beta2, g1, g2, eps_t, lr_t)
    every_row = seen.shape[0] == 0
    if every_row:  # any cut is a row boundary: rows of one value
        width = 1
    bits = g.view(np.uint32)

    def update(first, end):
        a, b = first * width, end * width
        _adamw_rows(p[a:b], g[a:b], bits[a:b], m[a:b], v[a:b], seen if every_row else seen[first:end],
                    b - a if every_row else width, *constants)

    _by_row_parts(p.shape[0] // width, width, threads, update)
    return True


def merge_rows(ids: np.ndarray, values: np.ndarray, rows: int):
    """A sparse row gradient (``ids`` [k] row ids with repeats, ``values`` [k, width] float32) summed
    per row: (index [rows] int32, -1 for rows without a gradient, else the row's place in merged;
    merged [n, width]), or None without Numba."""
    if _merge_rows is None:  # pragma: no cover - exercised only where Numba is missing
        return None
    index = np.full(rows, -1, dtype=np.int32)
    merged = np.empty_like(values)
    count = _merge_rows(ids.astype(np.int64, copy=False), values, index, merged)
    return index, merged[:count]


def adamw_sparse_rows(p, m, v, seen, width, index, merged, keep, beta1, beta2, g1, g2, eps_t, lr_t,
                      threads: int = 1) -> bool:
    """:func:`adamw_rows` for a gradient given as :func:`merge_rows` gives it (``seen`` per row is
    required): rows never seen and without a gradient now are skipped, the others updated as the
    dense gradient would update them. False without Numba."""
    if _adamw_sparse_rows is None:  # pragma: no cover - exercised only where Numba is missing
        return False
    constants = _constants(keep, beta1, beta2, g1, g2, eps_t, lr_t)
    merged = np.ascontiguousarray(merged)
    bits = merged.view(np.uint32)

    def update(first, end):
        a, b = first * width, end * width
        _adamw_sparse_rows(p[a:b], m[a:b], v[a:b], seen[first:end], width, first, index, merged, bits, *constants)

    _by_row_parts(p.shape[0] // width, width, threads, update)
    return True


def exp_and_row_sums(block: np.ndarray, sums: np.ndarray, threads: int = 1, finite: bool = True) -> None:
    """``block`` [r, V] float32 (C-contiguous) becomes ``exp(block)`` in place and ``sums`` [r]
    float32 its row sums; rows are split over ``threads`` threads (the kernels release the GIL).
    ``finite=False`` says the block may hold NaN or inf: NumPy's exp runs, which keeps them."""
    if block.dtype != np.float32 or not block.flags.c_contiguous or block.ndim != 2:
        raise ValueError("exp_and_row_sums takes a C-contiguous 2-D float32 array")
    if not finite:
        _numpy_exp_and_row_sums(block, sums)
        return
    rows = block.shape[0]
    bounds = np.linspace(0, rows, min(threads, rows) + 1).astype(int)
    parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if len(parts) <= 1:
        _exp_rows(block, sums)
    else:
        list(thread_pool(threads).map(lambda part: _exp_rows(block[part], sums[part]), parts))
