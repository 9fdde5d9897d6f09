"""The vectorised exp + row sums of the CPU head against float64 NumPy, on the values a softmax of
the real vocabulary meets: logits without a shift (|x| < 40), max-shifted ones (x <= 0, far below),
and the edges of the kernel's range reduction."""

import math

import numpy as np
import pytest

from paddlemix.models.qwen_vl import cpu_kernels
from paddlemix.models.qwen_vl.cpu_kernels import exp_and_row_sums


def test_the_installed_environment_runs_the_numba_kernel():
    # requirements.txt pins Numba; without it the NumPy fallback runs and the head is ~2x slower
    assert cpu_kernels.HAVE_NUMBA


def _check(values, threads=1, value_rtol=1.2e-7, sum_rtol=1e-6):
    # 1.2e-7 is one float32 ulp at the bottom of a binade (NumPy's own exp is off by up to 2.1e-7)
    want = np.exp(values.astype(np.float64))
    got = values.copy()
    sums = np.full(values.shape[0], np.nan, dtype=np.float32)
    exp_and_row_sums(got, sums, threads)
    np.testing.assert_allclose(got, want, rtol=value_rtol, atol=0)
    np.testing.assert_allclose(sums, want.sum(axis=1), rtol=sum_rtol, atol=0)
    return got, sums


def test_values_and_row_sums_of_real_vocabulary_width_logits():
    rng = np.random.default_rng(0)
    # 151,936 columns: not a multiple of the kernel's 2,048-value spans
    _check((rng.standard_normal([3, 151936]) * 6).astype(np.float32))


def test_max_shifted_rows_reach_far_below_zero():
    rng = np.random.default_rng(1)
    shifted = -np.abs(rng.standard_normal([4, 5000]) * 20).astype(np.float32)
    shifted[:, 0] = 0.0  # each row's maximum
    _check(shifted)


def test_the_edges_of_the_range_reduction():
    # multiples of ln 2 and the half-way points between them, where the nearest integer n changes
    ks = np.arange(-125, 127, dtype=np.float64)
    edges = np.concatenate([ks * math.log(2), (ks + 0.5) * math.log(2), [-87.0, 0.0, 88.0, 1e-30, -1e-30]])
    values = np.concatenate([np.nextafter(edges, -np.inf), edges, np.nextafter(edges, np.inf)])
    values = values[(values >= -87.0) & (values <= 88.0)].astype(np.float32)
    _check(values.reshape(-1, 1))  # one value a row: its sum is itself


def test_values_below_the_clamp_are_tiny_and_positive():
    values = np.array([[-90.0, -200.0, -1e4, -np.inf, 0.0]], dtype=np.float32)
    sums = np.empty(1, dtype=np.float32)
    exp_and_row_sums(values, sums)
    assert np.all(values[0, :4] > 0) and np.all(values[0, :4] < 2e-38)
    assert values[0, 4] == 1.0 and sums[0] == pytest.approx(1.0, abs=1e-37)


def test_blocks_that_may_hold_nan_or_inf_take_numpys_exp():
    values = np.array([[0.5, np.nan, 1.0], [1.0, 2.0, np.inf]], dtype=np.float32)
    sums = np.empty(2, dtype=np.float32)
    exp_and_row_sums(values, sums, finite=False)
    assert np.isnan(values[0, 1]) and np.isnan(sums[0])
    assert values[1, 2] == np.inf and sums[1] == np.inf
    assert values[0, 0] == np.exp(np.float32(0.5))


def test_two_threads_give_the_same_bits_as_one():
    rng = np.random.default_rng(2)
    values = (rng.standard_normal([7, 3001]) * 4).astype(np.float32)
    one, sums_one = _check(values, threads=1)
    two, sums_two = _check(values, threads=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(sums_one, sums_two)


def test_rejects_what_it_cannot_update_in_place():
    with pytest.raises(ValueError, match="C-contiguous 2-D float32"):
        exp_and_row_sums(np.zeros((2, 3)), np.zeros(2, dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous 2-D float32"):
        exp_and_row_sums(np.zeros((3, 2), dtype=np.float32).T, np.zeros(2, dtype=np.float32))
