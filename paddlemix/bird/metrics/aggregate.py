"""Summaries shared by every task: per modality, macro and micro means, bootstrap intervals, mBMR.

``macro`` is the unweighted mean over the modalities present (the paper's headline number),
``micro`` pools all records. A metric is an :class:`AdditiveMetric`: per-record vectors whose
sums over a sample determine it, which is what lets the bootstrap resample sums.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .keys import MBMR, MBMR_PARTS
from .params import Params


@dataclass
class AdditiveMetric:
    """A metric that is a function of per-record vectors summed over a sample.

    ``finish(sums, count)`` maps summed vectors of shape (R, k) and the sample size to R values.
    ``micro_rows`` replaces ``rows`` when the pooled sample needs other per-record vectors
    (CIDEr's document frequencies are those of the pool). Bootstrap resamples these sums.
    """

    rows: np.ndarray
    finish: Callable[[np.ndarray, int], np.ndarray]
    micro_rows: Optional[np.ndarray] = None


def ratio(sums: np.ndarray, count: int) -> np.ndarray:
    """Column 0 over column 1 (NaN where both are 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def ratio_or_zero(sums: np.ndarray, count: int) -> np.ndarray:
    """Column 0 over column 1, 0 where column 1 is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 1] > 0, sums[:, 0] / np.where(sums[:, 1] > 0, sums[:, 1], 1.0), 0.0)


def mean(sums: np.ndarray, count: int) -> np.ndarray:
    """The mean of column 0 over the sample."""
    return sums[:, 0] / count


def nan_to_none(value) -> Optional[float]:
    value = float(value)
    return None if math.isnan(value) else value


def mean_over_modalities(per_modality: Dict[str, dict], names: Sequence[str]) -> Dict[str, Optional[float]]:
    """The macro value of each metric: its unweighted mean over modalities, None if any is None."""
    macro = {}
    for name in names:
        values = [scores[name] for scores in per_modality.values()]
        macro[name] = None if not values or any(v is None for v in values) else float(np.mean(values))
    return macro


def add_mbmr(scores: dict) -> dict:
    """Add ``mBMR`` (mean of BLEU-1..4, METEOR, ROUGE-L) to a dict holding those six.

    Applied to a macro dict it is the mean of the six macro values: each metric is averaged over
    modalities first, as ClinKD's ``eval_MII.py`` does (the mean is linear, so this also equals
    the macro mean of per-modality mBMR)."""
    parts = [scores.get(k) for k in MBMR_PARTS]
    scores[MBMR] = None if any(v is None for v in parts) else float(sum(parts) / len(parts))
    return scores


def bootstrap_intervals(
    metrics: Dict[str, AdditiveMetric], groups: Dict[str, np.ndarray], reps: int, seed: int = 0
) -> Dict[str, Dict[str, List[float]]]:
    """95% percentile intervals of macro and micro over ``reps`` bootstrap resamples.

    Resampling is stratified: each modality's records are drawn with replacement from that
    modality, so every replicate keeps every modality and its size (the macro mean stays a mean
    over the same modalities).
    """
    rng = np.random.default_rng(seed)
    # (reps, n_m) counts of how often each record is drawn: 8 bytes per record and resample.
    weights = {
        m: rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=reps).astype(np.float64)
        for m, idx in groups.items()
    }
    total = sum(len(idx) for idx in groups.values())
    intervals: Dict[str, Dict[str, List[float]]] = {"macro": {}, "micro": {}}
    for name, metric in metrics.items():
        per_modality = []
        pooled = 0.0
        for m, idx in groups.items():
            per_modality.append(metric.finish(weights[m] @ metric.rows[idx], len(idx)))
            micro_rows = metric.rows if metric.micro_rows is None else metric.micro_rows
            pooled = pooled + weights[m] @ micro_rows[idx]
        macro = np.mean(np.stack(per_modality), axis=0)
        micro = metric.finish(pooled, total)
        for key, values in (("macro", macro), ("micro", micro)):
            lo, hi = np.nanpercentile(values, [2.5, 97.5])
            intervals[key][name] = [float(lo), float(hi)]
    return intervals


def summarise(n_records: int, groups: Dict[str, np.ndarray], metrics: Dict[str, AdditiveMetric], params: Params) -> dict:
    """``n``, ``per_modality``, ``macro``, ``micro`` (and ``ci95`` under ``params.bootstrap``) of additive metrics."""
    per_modality = {}
    for m, idx in groups.items():
        scores = {"n": int(len(idx))}
        for name, metric in metrics.items():
            sums = metric.rows[idx].sum(axis=0, keepdims=True)
            scores[name] = nan_to_none(metric.finish(sums, len(idx))[0])
        per_modality[m] = scores
    micro = {}
    all_idx = np.concatenate(list(groups.values())) if groups else np.zeros(0, dtype=np.int64)
    for name, metric in metrics.items():
        sums = metric.rows[all_idx].sum(axis=0, keepdims=True)
        micro[name] = nan_to_none(metric.finish(sums, len(all_idx))[0]) if len(all_idx) else None
    out = {
        "n": n_records,
        "per_modality": per_modality,
        "macro": mean_over_modalities(per_modality, list(metrics)),
        "micro": micro,
    }
    if params.bootstrap and groups:
        out["ci95"] = bootstrap_intervals(metrics, groups, params.bootstrap, params.seed)
    return out


def bootstrap_info(params: Params, extra: str = "") -> dict:
    """The ``bootstrap`` entry of a metrics file: how the intervals were drawn."""
    method = (
        "percentile 95% interval over resamples of records drawn with replacement within each "
        "modality (stratified)" + extra
    )
    return {"bootstrap": {"n": params.bootstrap, "seed": params.seed, "method": method}}
