"""GC / MII / QA caption scores: pycocoevalcap's BLEU-1..4, METEOR, ROUGE-L, CIDEr and SPICE, plus mBMR.

Computed on PTB-tokenised text exactly as a direct pycocoevalcap run on each modality's records
would compute them, but each Java program starts once per file (:mod:`.java`) and each record's
n-grams are counted once (:mod:`.coco_scores`). Reading order: tokenise and bound the texts,
score every group (each modality, then the pool), add METEOR and SPICE, summarise, bootstrap.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..tasks import GC, check_task
from . import coco_scores
from .aggregate import AdditiveMetric, add_mbmr, bootstrap_info, bootstrap_intervals, mean, mean_over_modalities, nan_to_none
from .java import JavaScorers, meteor_pooling_rows
from .keys import CAPTION_METRICS
from .params import Params
from .records import as_text, group_by_modality

CAPTION_DEFINITIONS = {
    "BLEU-1..4": "pycocoevalcap Bleu(4), corpus level over the group, reference length 'closest'",
    "METEOR": "pycocoevalcap METEOR 1.5 (-l en -norm), corpus score over the group",
    "ROUGE-L": "pycocoevalcap Rouge (beta 1.2), mean of per-record scores (paddlemix.bird.metrics.coco_scores, the same values)",
    "CIDEr": (
        "pycocoevalcap Cider (CIDEr-D, sigma 6), document frequencies from the group's references "
        "(computed by paddlemix.bird.metrics.coco_scores, bit-identical to pycocoevalcap's CiderScorer)"
    ),
    "SPICE": "pycocoevalcap Spice, mean of per-record F-scores; null when Stanford CoreNLP is not installed",
    "mBMR": (
        "the paper's summary score, which it does not define: the mean of BLEU-1, BLEU-2, BLEU-3, BLEU-4, "
        "METEOR and ROUGE-L of the same group (macro: of their macro values), as ClinKD (arXiv 2502.05928, "
        "the follow-up that scores Med-GRIT-270k with BiRD's scripts) computes it in test_metric/eval_MII.py; "
        "the six components are listed next to it; no bootstrap interval"
    ),
    "scope": (
        "text is PTB-tokenised (lower-cased, punctuation removed) as pycocoevalcap does; per-modality "
        "values equal a direct pycocoevalcap run on that modality's records (what upstream reports), "
        "micro is one run over all records, macro the unweighted mean over modalities present"
    ),
}

# Words of a tokenised caption the scorers see. A degenerate response (a loop of ~21k words) makes
# METEOR's aligner run out of Java heap and lose the whole file; no real caption is this long.
MAX_CAPTION_WORDS = 1000

# A group of records to score: a modality, or None for the pooled (micro) group, and its indices.
Group = Tuple[Optional[str], np.ndarray]


def bound_captions(texts: Sequence[str], ids: Sequence, limit: int = MAX_CAPTION_WORDS) -> Tuple[List[str], List[str]]:
    """``texts`` (tokenised, space-separated) cut to their first ``limit`` words, and the ids of those cut."""
    bounded, cut = [], []
    for text, rid in zip(texts, ids):
        words = text.split(" ")
        if len(words) > limit:
            text = " ".join(words[:limit])
            cut.append(str(rid))
        bounded.append(text)
    return bounded, cut


def bleu_from_sums(sums: np.ndarray) -> np.ndarray:
    """Corpus BLEU-1..4 from summed statistics (testlen, reflen, guess 1-4, correct 1-4), as pycocoevalcap."""
    small, tiny = 1e-9, 1e-15
    testlen, reflen = sums[:, 0], sums[:, 1]
    guess, correct = sums[:, 2:6], sums[:, 6:10]
    out = np.empty((len(sums), 4))
    bleu = np.ones(len(sums))
    for k in range(4):
        bleu = bleu * ((correct[:, k] + tiny) / (guess[:, k] + small))
        out[:, k] = bleu ** (1.0 / (k + 1))
    ratio = (testlen + tiny) / (reflen + small)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return out * brevity[:, None]


def _bleu_stats(cooked: dict) -> List[float]:
    # pycocoevalcap's "closest" reference length (one reference here, so it is that one's length).
    testlen = cooked["testlen"]
    reflen = min((abs(length - testlen), length) for length in cooked["reflen"])[1]
    return [testlen, reflen] + list(cooked["guess"]) + list(cooked["correct"])


@dataclass
class CaptionRows:
    """The per-record statistics the group scores come from; the bootstrap re-pools them."""

    cooked: list  # coco_scores.prepare's records: BLEU's cooked n-grams and CIDEr's vectors
    rouge: np.ndarray  # (n,) ROUGE-L per record
    cider: Dict[Optional[str], np.ndarray]  # per group: CIDEr per record with that group's document frequencies
    meteor_stats: Optional[List[str]] = None  # METEOR's statistics line per record
    spice: Optional[np.ndarray] = None  # (n,) SPICE per record; None when SPICE did not run


def _tokenised(records: Sequence[dict], java: JavaScorers) -> Tuple[List[str], List[str], dict]:
    """Hypotheses and references as the scorers see them (PTB tokens, bounded), and the ``word_limit`` entry."""
    n = len(records)
    tokens = java.tokenize([as_text(r.get("annotation")) for r in records] + [as_text(r.get("response")) for r in records])
    ids = [r.get("id", i) for i, r in enumerate(records)]
    refs, refs_cut = bound_captions(tokens[:n], ids)
    hyps, hyps_cut = bound_captions(tokens[n:], ids)
    word_limit = {
        "limit": MAX_CAPTION_WORDS,
        "note": "every scorer saw at most the first `limit` PTB tokens of a response or reference",
        "responses_cut": hyps_cut,
        "references_cut": refs_cut,
    }
    return hyps, refs, word_limit


def _python_scores(groups: Sequence[Group], hyps: Sequence[str], refs: Sequence[str]) -> Tuple[Dict[Optional[str], dict], CaptionRows]:
    """BLEU-1..4, ROUGE-L and CIDEr of every group.

    Every record is cooked once; each group's scorer then pools the cooked records, which is what
    a fresh pycocoevalcap scorer fed only that group's records computes."""
    cooked = coco_scores.prepare(hyps, refs)
    rows = CaptionRows(cooked, np.asarray([coco_scores.rouge_l(h, r) for h, r in zip(hyps, refs)], dtype=np.float64), {})
    results: Dict[Optional[str], dict] = {}
    for name, idx in groups:
        bleu_scores, _ = coco_scores.bleu_scorer(cooked, idx).compute_score(option="closest", verbose=0)
        if any(refs[i] for i in idx):
            cider_score, rows.cider[name] = coco_scores.group_scores(cooked, idx)
        else:  # no reference n-gram at all: pycocoevalcap itself would fail on max([])
            cider_score, rows.cider[name] = 0.0, np.zeros(len(idx))
        results[name] = {f"BLEU-{k + 1}": float(bleu_scores[k]) for k in range(4)}
        results[name]["ROUGE-L"] = float(np.mean(rows.rouge[idx]))
        results[name]["CIDEr"] = float(cider_score)
    return results, rows


def score_captions(records: Sequence[dict], task: str = GC, params: Params = Params()) -> dict:
    """GC / MII / QA caption metrics of records: per modality, macro and micro."""
    task = check_task(task)
    if not records:
        raise ValueError(f"no {task} records to score")
    n = len(records)
    modalities = group_by_modality(records)
    groups: List[Group] = list(modalities.items()) + [(None, np.arange(n))]
    with JavaScorers() as java:
        hyps, refs, word_limit = _tokenised(records, java)
        meteor = java.meteor_in_background(hyps, refs, [idx for _, idx in groups])
        results, rows = _python_scores(groups, hyps, refs)
        rows.meteor_stats, meteor_corpus = meteor.result()
        rows.spice, spice_reason = java.spice({i: [refs[i]] for i in range(n)}, {i: [hyps[i]] for i in range(n)})
        for (name, idx), corpus in zip(groups, meteor_corpus):
            results[name]["METEOR"] = corpus
            results[name]["SPICE"] = None if rows.spice is None else nan_to_none(np.mean(rows.spice[idx]))
        per_modality = {
            m: add_mbmr({"n": int(len(idx)), **{k: results[m][k] for k in CAPTION_METRICS}}) for m, idx in modalities.items()
        }
        out = {
            "task": task,
            "n": n,
            "per_modality": per_modality,
            "macro": add_mbmr(mean_over_modalities(per_modality, CAPTION_METRICS)),
            "micro": add_mbmr({k: results[None][k] for k in CAPTION_METRICS}),
        }
        if params.bootstrap:
            out["ci95"], warning = _caption_intervals(modalities, rows, results[None], java, params)
    out["spice_unavailable_reason"] = spice_reason
    out["word_limit"] = word_limit
    out["definitions"] = dict(CAPTION_DEFINITIONS)
    if params.bootstrap:
        out.update(
            bootstrap_info(
                params,
                "; BLEU and METEOR re-pool the resampled n-gram / alignment statistics, ROUGE-L, CIDEr "
                "and SPICE average resampled per-record scores (CIDEr's document frequencies fixed)",
            )
        )
        if warning:
            out["bootstrap"]["warning"] = warning
    return out


def _caption_intervals(
    modalities: Dict[str, np.ndarray], rows: CaptionRows, micro: dict, java: JavaScorers, params: Params
) -> Tuple[dict, Optional[str]]:
    """Bootstrap intervals of the caption metrics, and a warning if pooling misses the corpus scores."""
    n = len(rows.cooked)
    cider_by_record = np.zeros(n)
    for m, idx in modalities.items():
        cider_by_record[idx] = rows.cider[m]
    bleu_rows = np.asarray([_bleu_stats(record.bleu_test) for record in rows.cooked], dtype=np.float64)
    additive = {
        f"BLEU-{k + 1}": AdditiveMetric(bleu_rows, lambda sums, count, k=k: bleu_from_sums(sums)[:, k]) for k in range(4)
    }
    additive["METEOR"] = AdditiveMetric(meteor_pooling_rows(rows.meteor_stats), lambda sums, count: java.meteor_of_pooled(sums))
    additive["ROUGE-L"] = AdditiveMetric(rows.rouge[:, None], mean)
    additive["CIDEr"] = AdditiveMetric(cider_by_record[:, None], mean, micro_rows=rows.cider[None][:, None])
    if rows.spice is not None:
        additive["SPICE"] = AdditiveMetric(rows.spice[:, None], mean)
    gaps = _pooling_gap(additive, micro, n)
    warning = None
    if gaps:
        warning = (
            "pooled statistics do not reproduce the corpus score of "
            + ", ".join(f"{k} (off by {v:.2e})" for k, v in gaps.items())
            + "; their intervals are approximate"
        )
    return bootstrap_intervals(additive, modalities, params.bootstrap, params.seed), warning


def _pooling_gap(additive: Dict[str, AdditiveMetric], corpus: dict, n: int) -> Dict[str, float]:
    """Corpus scores that the summed per-record statistics fail to reproduce (a self-check of
    the pooling rules the bootstrap relies on, BLEU's and METEOR's)."""
    gaps = {}
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR"):
        metric = additive[name]
        value = float(metric.finish(metric.rows.sum(axis=0, keepdims=True), n)[0])
        gap = abs(value - corpus[name])
        if gap > 1e-9 * max(1.0, abs(corpus[name])):
            gaps[name] = gap
    return gaps
