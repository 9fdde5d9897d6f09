"""Paddle's AdamW with its CPU update done outside Paddle: one pass over each parameter by a Numba
kernel (NumPy, a cache-sized block at a time, where Numba is missing), the global-norm clip folded
in, and embedding rows that never had a gradient left alone.

With the real 151,936-id vocabulary and a narrow model almost every parameter sits in the token
embedding and the LM head (19.4 of the demo's 19.7 million). Paddle's CPU step walks each of them
several times: the clip's squared norm and its in-place multiply, the ``adamw_`` kernel, and the
zero-filling of every gradient by ``clear_grad``, after which the next backward adds into the zeros.
:class:`CpuAdamW` computes the same update (``paddle.optimizer.AdamW``'s formula, on the optimizer's
own moment and beta-power accumulators, so checkpoints and ``set_state_dict`` are unchanged) in one
pass, and frees gradients instead of zeroing them. The update reads and writes 28 bytes a value and
is bound by memory; the Numba kernel (``cpu_kernels.adamw_rows``, the NumPy blocks' float32
operations in their order, equal to the bit) splits the two large matrices over the NumPy side's
threads (``cpu_kernels.cpu_threads``), which sit idle while the optimizer runs:
``benchmarks/bench_lm_head.py adamw`` measured 67-86 ms a demo step on two threads against 89-102
for the NumPy blocks.

A sparse gradient (Paddle's SelectedRows, what a ``sparse`` embedding hands back: a row of values
per id occurrence) is summed per id and updates the rows the dense gradient would update, without
the zero-filled table the dense one costs.

A deferred parameter (:meth:`CpuAdamW.defer`: the LM head, about half of the optimizer's time)
is updated on a background thread after ``step`` returns, while the next batch runs through the
vision tower and the decoder; its readers wait first (:func:`finish_update`). The values are the
immediate update's to the bit.

Rows of a 2-D parameter whose gradient and both moments are zero (the embedding rows of ids no batch
has held yet) have an AdamW update of exactly zero without weight decay, so they are skipped: the
demo's text uses a few thousand of the 151,936 ids. Anything this path does not cover (GPU
tensors, other dtypes, parameter groups, AMSGrad, master weights, learning-rate ratios, a clip other
than ``ClipGradByGlobalNorm``) runs Paddle's own step.
"""

import ctypes
import math
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, Iterable, List, Tuple

import numpy as np
import paddle
from paddle.base import framework
from paddle.nn import ClipGradByGlobalNorm

from .cpu_kernels import HAVE_NUMBA, adamw_rows, adamw_sparse_rows, cpu_threads, merge_rows


__all__ = ["CpuAdamW", "finish_update"]

# Values per block: three float32 blocks of the parameter, gradient and moments (128 KB each) and two
# scratch blocks stay in a core's L2 cache through the dozen NumPy calls of one update.
BLOCK = 1 << 15
# Above this share of active rows the row gather costs more than it saves: update every row.
_ROW_PATH_MAX_SHARE = 0.5
_EVERY_ROW = np.zeros(0, dtype=bool)  # adamw_rows' "no row is skipped"


def _view(tensor: paddle.Tensor) -> np.ndarray:
    """A writable float32 NumPy view of a contiguous CPU tensor's memory (NumPy's DLPack import is
    read-only). The tensor must outlive the view."""
    count = int(np.prod(tensor.shape)) if len(tensor.shape) else 1
    pointer = ctypes.cast(tensor.data_ptr(), ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(pointer, shape=(count,))


# Deferred updates (``CpuAdamW.defer``): parameter name -> the background update still running.
_PENDING: Dict[str, Future] = {}
_BACKGROUND: List[ThreadPoolExecutor] = []  # one worker, made on first use


def finish_update(param: paddle.Tensor) -> None:
    """Wait for ``param``'s deferred update, if one is running (re-raising its error). Whoever reads
    a deferred parameter calls this first; it returns at once when nothing is pending."""
    future = _PENDING.pop(param.name, None)
    if future is not None:
        future.result()


def _background() -> ThreadPoolExecutor:
    if not _BACKGROUND:
        _BACKGROUND.append(ThreadPoolExecutor(1, thread_name_prefix="paddlemix_adamw"))
    return _BACKGROUND[0]


class _Step:
    """One update's constants, in float32 arithmetic as Paddle's kernel computes them (its float32
    ``1 - beta2`` and ``1 - beta2_pow`` cancel exactly at the first step; float64 constants would not).
    The beta powers are those before this step."""

    def __init__(self, lr, beta1, beta2, epsilon, beta1_pow, beta2_pow, decay, scale):
        f = np.float32
        b1, b2, b1p, b2p = f(beta1), f(beta2), f(beta1_pow), f(beta2_pow)
        correction = np.sqrt(f(1) - b2p)
        self.beta1, self.beta2 = b1, b2
        self.lr_t = f(lr) * correction / (f(1) - b1p)
        self.eps_t = f(epsilon) * correction
        self.keep = f(1) - f(lr) * f(decay)  # decoupled weight decay: the parameter is scaled first
        self.g1 = (f(1) - b1) * f(scale)  # the clip's factor folded into both moments' inputs
        self.g2 = (f(1) - b2) * f(scale) * f(scale)


def _update_block(p, g, m, v, s: _Step, t1, t2) -> None:
    """AdamW on one block, in place: p, m, v updated from g; t1 and t2 scratch of the same length."""
    if s.keep != 1.0:
        p *= s.keep
    np.multiply(g, s.g1, out=t1)
    m *= s.beta1
    m += t1
    np.multiply(g, g, out=t2)
    t2 *= s.g2
    v *= s.beta2
    v += t2
    np.sqrt(v, out=t2)
    t2 += s.eps_t
    np.divide(m, t2, out=t2)
    t2 *= s.lr_t
    p -= t2


def _update_all(arrays, s: _Step) -> None:
    """Update flat (p, g, m, v) block by block in NumPy, on one thread (the path without Numba)."""
    p, g, m, v = arrays
    size = p.size
    t1 = np.empty(min(BLOCK, size), dtype=np.float32)
    t2 = np.empty_like(t1)
    for a in range(0, size, BLOCK):
        b = min(a + BLOCK, size)
        n = b - a
        _update_block(p[a:b], g[a:b], m[a:b], v[a:b], s, t1[:n], t2[:n])


class _RowGrad:
    """A sparse embedding's gradient (Paddle's SelectedRows: a row of values per id occurrence,
    repeats included) summed per row: ``index`` [rows] (-1, or the row's place in ``merged``)."""

    def __init__(self, param: paddle.Tensor, grad: paddle.Tensor):
        rows, width = int(param.shape[0]), int(param.shape[1])
        ids = np.asarray(grad.rows(), dtype=np.int64)
        values = np.ascontiguousarray(grad.value().numpy().reshape(-1, width), dtype=np.float32)
        self.rows, self.width = rows, width
        merged = merge_rows(ids, values, rows)
        if merged is None:  # without Numba: NumPy's unbuffered add, in occurrence order too
            unique, first = np.unique(ids, return_index=True)
            order = unique[np.argsort(first)]
            self.index = np.full(rows, -1, dtype=np.int32)
            self.index[order] = np.arange(order.size, dtype=np.int32)
            self.merged = np.zeros((order.size, width), dtype=np.float32)
            np.add.at(self.merged, self.index[ids], values)
        else:
            self.index, self.merged = merged

    def dense(self) -> np.ndarray:
        """The gradient as a flat dense array (rows without one are zero)."""
        out = np.zeros((self.rows, self.width), dtype=np.float32)
        held = self.index >= 0
        out[held] = self.merged[self.index[held]]
        return out.reshape(-1)


class CpuAdamW(paddle.optimizer.AdamW):
    """``paddle.optimizer.AdamW`` (same arguments, same state dict) whose CPU float32 step runs in
    Numba or NumPy; see the module docstring. ``clear_grad`` frees gradients by default."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._active: Dict[str, np.ndarray] = {}  # parameter name -> bool per row: had a gradient
        self._deferred: set = set()  # names of parameters whose update may finish in the background

    @classmethod
    def adopt(cls, optimizer: paddle.optimizer.AdamW) -> "CpuAdamW":
        """Turn an already built ``paddle.optimizer.AdamW`` into a CpuAdamW in place (its settings,
        parameters and state kept), so a trainer that builds its AdamW needs no copy of how."""
        if type(optimizer) is not paddle.optimizer.AdamW:
            raise TypeError(f"CpuAdamW.adopt takes a paddle.optimizer.AdamW, not {type(optimizer).__name__}")
        optimizer.__class__ = cls
        optimizer._active = {}
        optimizer._deferred = set()
        return optimizer

    # -- deferred updates -----------------------------------------------------------------------
    def defer(self, params: Iterable[paddle.Tensor]) -> None:
        """Let these parameters' dense updates run on a background thread after ``step`` returns, so
        they overlap the next step's forward pass. Only for parameters whose every reader calls
        :func:`finish_update` first (the model's LM head: ``QWenVLForCausalLM.forward`` waits before
        its loss or logits); this optimizer's own ``step``, ``state_dict`` and ``set_state_dict`` and
        :meth:`finish_updates` wait for all of them. The values are those of the immediate update, to
        the bit: the same kernel, on one thread. Without Numba the updates stay immediate."""
        self._deferred.update(p.name for p in params)

    def finish_updates(self) -> None:
        """Wait for every deferred update of this optimizer (re-raising the first error)."""
        errors = []
        for name in sorted(self._deferred):
            future = _PENDING.pop(name, None)
            if future is not None and future.exception() is not None:
                errors.append(future.exception())
        if errors:
            raise errors[0]

    def state_dict(self):
        self.finish_updates()
        return super().state_dict()

    # -- which steps the NumPy path takes -------------------------------------------------------
    def _numpy_pairs(self) -> List[Tuple[paddle.Tensor, paddle.Tensor]]:
        """The (parameter, gradient) pairs of this step, or None when Paddle's own step must run."""
        groups = self._param_groups or []
        if not framework.in_dygraph_mode() or (groups and isinstance(groups[0], dict)):
            return None
        if self._multi_precision or self._amsgrad or self._lr_ratio is not None:
            return None
        if not all(isinstance(x, float) for x in (self._beta1, self._beta2, self._epsilon)):
            return None
        if not isinstance(self._weight_decay, float):
            return None
        clip = self._grad_clip
        if clip is not None and (type(clip) is not ClipGradByGlobalNorm or clip.should_comm_on_shard_dim):
            return None
        pairs = []
        for p in self._parameter_list:
            if p.stop_gradient or p._grad_ivar() is None:
                continue
            g = p._grad_ivar()
            if not (p.place.is_cpu_place() and g.place.is_cpu_place()) or p.dtype != paddle.float32:
                return None
            if g.is_selected_rows():  # a sparse embedding's gradient
                if len(p.shape) != 2 or g.value().dtype != paddle.float32:
                    return None
            elif g.dtype != paddle.float32 or not g.is_contiguous():
                return None
            if p.optimize_attr.get("learning_rate", 1.0) != 1.0:
                return None
            pairs.append((p, g))
        return pairs

    def _clip_scale(self, views) -> Dict[str, float]:
        """The global-norm clip's factor per parameter name (absent: not clipped), as
        ``ClipGradByGlobalNorm`` computes it: clip_norm / max(global norm, clip_norm)."""
        clip = self._grad_clip
        clipped = [(p, g) for p, _, g in views if clip is not None and getattr(p, "need_clip", True)]
        if not clipped:
            return {}
        flat = [g.merged.reshape(-1) if isinstance(g, _RowGrad) else g for _, g in clipped]
        norm = math.sqrt(sum(float(np.dot(g, g)) for g in flat))
        factor = clip.clip_norm / max(norm, clip.clip_norm)
        if clip.auto_skip_clip and norm <= clip.clip_norm:
            factor = 1.0
        return {p.name: factor for p, _ in clipped}

    @paddle.no_grad()
    def step(self) -> None:
        self.finish_updates()  # the moments and values a deferred update writes are read again now
        pairs = self._numpy_pairs()
        if pairs is None:
            return super().step()
        if not pairs:
            return None
        self._create_accumulators(framework.default_main_program().global_block(), [p for p, _ in pairs])
        views = [(p, _view(p), _RowGrad(p, g) if g.is_selected_rows() else _view(g)) for p, g in pairs]
        scales = self._clip_scale(views)
        lr = float(self.get_lr())
        for p, pv, gv in views:
            self._update(p, pv, gv, lr, scales.get(p.name, 1.0))
        return None

    def _update(self, param, p: np.ndarray, g, lr: float, scale: float) -> None:
        """One parameter's AdamW step; a deferred one's dense Numba update is handed to the
        background thread (beta powers and the row marks are advanced here, as the kernel needs
        neither)."""
        get = self._get_accumulator_master
        m = _view(get(self._moment1_acc_str, param))
        v = _view(get(self._moment2_acc_str, param))
        beta1_pow = _view(get(self._beta1_pow_acc_str, param))
        beta2_pow = _view(get(self._beta2_pow_acc_str, param))
        decay = self._weight_decay
        if self._apply_decay_param_fun is not None and not self._apply_decay_param_fun(param.name):
            decay = 0.0
        s = _Step(lr, self._beta1, self._beta2, self._epsilon, float(beta1_pow[0]), float(beta2_pow[0]), decay, scale)
        by_rows = decay == 0.0 and len(param.shape) == 2
        if isinstance(g, _RowGrad) and not (HAVE_NUMBA and by_rows):
            g = g.dense()
        if isinstance(g, _RowGrad):
            adamw_sparse_rows(p, m, v, self._seen(param, m, v), int(param.shape[1]), g.index, g.merged, s.keep,
                              s.beta1, s.beta2, s.g1, s.g2, s.eps_t, s.lr_t, cpu_threads())
        elif HAVE_NUMBA:
            if p.size:
                seen = self._seen(param, m, v) if by_rows else _EVERY_ROW
                width = int(param.shape[1]) if by_rows else p.size
                constants = (s.keep, s.beta1, s.beta2, s.g1, s.g2, s.eps_t, s.lr_t)
                if param.name in self._deferred:
                    # The gradient is freed by clear_grad before the update ends: a DLPack array holds
                    # its memory (the kernel reads it through g, a view of the same bytes).
                    held = np.from_dlpack(param._grad_ivar().detach())
                    _PENDING[param.name] = _background().submit(
                        lambda: (held, adamw_rows(p, g, m, v, seen, width, *constants, 1))
                    )
                else:
                    adamw_rows(p, g, m, v, seen, width, *constants, cpu_threads())
        else:
            rows = self._rows_to_update(param, g, m, v) if by_rows else None
            if rows is None:
                _update_all((p, g, m, v), s)
            else:
                width = int(param.shape[1])
                block = [a.reshape(-1, width) for a in (p, g, m, v)]
                picked = [a[rows].reshape(-1) for a in block]  # copies of the active rows
                _update_all(picked, s)
                for whole, part in zip(block, picked):
                    whole[rows] = part.reshape(-1, width)
        beta1_pow[0] = beta1_pow[0] * np.float32(self._beta1)
        beta2_pow[0] = beta2_pow[0] * np.float32(self._beta2)

    def _seen(self, param, m: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Per row of a 2-D parameter: has it ever had a nonzero gradient (its moments are nonzero)?
        The first step after the optimizer was built (or its state loaded) reads it off the moments;
        the update marks the rows of each new gradient."""
        seen = self._active.get(param.name)
        if seen is None:
            rows, width = int(param.shape[0]), int(param.shape[1])
            seen = self._active[param.name] = (m.reshape(rows, width) != 0).any(axis=1)
            seen |= (v.reshape(rows, width) != 0).any(axis=1)
        return seen

    def _rows_to_update(self, param, g: np.ndarray, m: np.ndarray, v: np.ndarray):
        """(Without Numba.) Row indices of a 2-D parameter that ever had a nonzero gradient row (the
        others keep zero moments and get a zero update), or None to update every value."""
        rows, width = int(param.shape[0]), int(param.shape[1])
        seen = self._seen(param, m, v)
        seen |= (g.reshape(rows, width) != 0).any(axis=1)
        picked = np.flatnonzero(seen)
        return picked if picked.size <= _ROW_PATH_MAX_SHARE * rows else None

    def set_state_dict(self, state_dict):
        self.finish_updates()
        self._active.clear()  # re-read from the loaded moments at the next step
        return super().set_state_dict(state_dict)

    def clear_grad(self, set_to_zero: bool = False) -> None:
        """Free the gradients (Paddle's default zero-fills them, and the next backward adds into the
        zeros: two passes over the 151,936-row matrices for nothing)."""
        super().clear_grad(set_to_zero=set_to_zero)
