"""pycocoevalcap's caption statistics, bit-identical and cheaper: BLEU's cooked records, ROUGE-L,
and CIDEr-D of several groups of the same records (per modality and pooled).

Each record's n-grams are counted once (:func:`prepare`) and serve BLEU and CIDEr in every group.
BLEU: the cooked test and reference are the very structures pycocoevalcap's ``cook_test`` /
``cook_refs`` build, so its own ``BleuScorer.compute_score`` pools them. ROUGE-L: the longest
common subsequence by a bit-parallel algorithm (the same integer as pycocoevalcap's table), then
its arithmetic. CIDEr-D (n=4, sigma=6): pycocoevalcap rebuilds every record's tf-idf vectors
with a NumPy scalar ``log`` per n-gram, ``defaultdict`` vectors and NumPy scalar arithmetic; the
per-modality and the pooled (micro) scores need the same records under different document
frequencies, so here the logarithm is taken once per distinct document frequency (with the same
``np.log``) and the arithmetic is the same IEEE operations in the same order on Python floats.
The results are identical, not merely close (tested against pycocoevalcap itself).
"""

import contextlib
import gc
import math
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np

N = 4
SIGMA = 6.0

Counts = Dict[Tuple[str, ...], int]


def ngram_counts_by_length(words: Sequence[str], n: int = N) -> List[Counts]:
    """Counts of the k-grams of ``words`` for k = 1..n, one dict per k, each in order of first
    occurrence: together exactly pycocoevalcap's ``precook`` (which counts k = 1..n in turn)."""
    return [Counter(zip(*(words[i:] for i in range(k)))) for k in range(1, n + 1)]


@contextlib.contextmanager
def _no_cyclic_gc():
    """Millions of small tuples, lists and dicts and none in a cycle: the cyclic collector would
    only rescan them (a third of the time spent here)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Record:
    """One record's n-grams, counted once and reused for every group it is scored in."""

    __slots__ = ("hyp", "ref", "shared", "length_delta", "bleu_test", "bleu_refs")

    def __init__(self, hyp: str, ref: str, n: int = N):
        hyp_words, ref_words = hyp.split(), ref.split()
        hyp_counts, ref_counts = ngram_counts_by_length(hyp_words, n), ngram_counts_by_length(ref_words, n)
        # BLEU, as pycocoevalcap's cook_refs([ref]) and cook_test(hyp, ...) (eff=None) return them.
        testlen = len(hyp_words)
        self.bleu_refs = ([len(ref_words)], {gram: tf for counts in ref_counts for gram, tf in counts.items()})
        self.bleu_test = {
            "reflen": self.bleu_refs[0],
            "testlen": testlen,
            "guess": [max(0, testlen - k + 1) for k in range(1, n + 1)],
            "correct": [sum(min(r.get(gram, 0), tf) for gram, tf in h.items()) for h, r in zip(hyp_counts, ref_counts)],
        }
        self.hyp = [(gram, k, float(tf)) for k, counts in enumerate(hyp_counts) for gram, tf in counts.items()]
        self.ref = [(gram, k, float(tf)) for k, counts in enumerate(ref_counts) for gram, tf in counts.items()]
        # The hypothesis n-grams the reference shares, in hypothesis order: only they add to the
        # cosine (the others add exactly 0.0).
        self.shared = [(gram, k, tf, float(ref_counts[k][gram])) for gram, k, tf in self.hyp if gram in ref_counts[k]]
        # pycocoevalcap's "length" is the bigram count (its n == 1), not the word count.
        self.length_delta = float(max(0, len(hyp_words) - 1) - max(0, len(ref_words) - 1))


def prepare(hyps: Sequence[str], refs: Sequence[str], n: int = N) -> List[_Record]:
    """The tokenised hypotheses and references (one reference each) ready for :func:`group_scores`
    and :func:`bleu_scorer`."""
    with _no_cyclic_gc():
        return [_Record(h, r, n) for h, r in zip(hyps, refs)]


def bleu_scorer(records: Sequence[_Record], idx: Sequence[int]):
    """pycocoevalcap's ``BleuScorer`` holding the records ``idx``: what adding a fresh
    ``BleuScorer(hyp, [ref])`` per record builds, without counting the n-grams again."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    scorer = BleuScorer(n=N)
    scorer.crefs = [records[i].bleu_refs for i in idx]
    scorer.ctest = [records[i].bleu_test for i in idx]
    return scorer


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (Hyyrö's bit-parallel form:
    one big-integer step per token of ``b``)."""
    masks: Dict[str, int] = {}
    for i, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l(hyp: str, ref: str, beta: float = 1.2) -> float:
    """pycocoevalcap's ``Rouge().calc_score([hyp], [ref])``: the same tokens (``split(" ")``) and
    the same arithmetic on the same LCS length."""
    token_c, token_r = hyp.split(" "), ref.split(" ")
    lcs = lcs_length(token_r, token_c)
    prec = lcs / float(len(token_c))
    rec = lcs / float(len(token_r))
    if prec != 0 and rec != 0:
        return ((1 + beta**2) * prec * rec) / float(rec + beta**2 * prec)
    return 0.0


def _norms(items, weight: Dict[Tuple[str, ...], float], default: float, n: int) -> List[float]:
    norm = [0.0] * n
    for gram, k, tf in items:
        norm[k] += (tf * weight.get(gram, default)) ** 2  # pycocoevalcap's pow(v, 2), not v * v
    # IEEE square roots are correctly rounded: math.sqrt gives np.sqrt's value.
    return [math.sqrt(v) for v in norm]


def group_scores(records: Sequence[_Record], idx: Sequence[int], n: int = N, sigma: float = SIGMA) -> Tuple[float, np.ndarray]:
    """CIDEr-D of the records ``idx`` (one reference each, see :func:`prepare`): the corpus score
    and per-record scores, with document frequencies from those records' references."""
    with _no_cyclic_gc():
        return _group_scores(records, idx, n, sigma)


def _group_scores(records, idx, n, sigma):
    document_frequency: Counter = Counter()
    for i in idx:
        document_frequency.update(gram for gram, _, _ in records[i].ref)
    if len(idx) < max(document_frequency.values()):
        raise AssertionError("document frequency exceeds the number of records")
    ref_len = float(np.log(float(len(idx))))
    # ref_len - log(df) per n-gram, the factor pycocoevalcap multiplies each term frequency by;
    # an n-gram no reference has gets df 1, log 0, so ref_len.
    logs: Dict[float, float] = {}
    weight = {}
    for gram, count in document_frequency.items():
        count = float(count)
        if count not in logs:
            logs[count] = ref_len - float(np.log(max(1.0, count)))
        weight[gram] = logs[count]
    penalty_scale = 2 * sigma**2
    scores = []
    for i in idx:
        record = records[i]
        norm = _norms(record.hyp, weight, ref_len, n)
        norm_ref = _norms(record.ref, weight, ref_len, n)
        val = [0.0] * n
        for gram, k, tf, tf_ref in record.shared:
            w = weight[gram]
            value, other = tf * w, tf_ref * w
            val[k] += min(value, other) * other
        penalty = np.e ** (-(record.length_delta**2) / penalty_scale)
        total = -0.0  # np.mean of a short array: a plain left-to-right sum from -0.0, then / n
        for k in range(n):
            if norm[k] != 0 and norm_ref[k] != 0:
                val[k] /= norm[k] * norm_ref[k]
            total += val[k] * penalty
        scores.append(total / n * 10.0)  # pycocoevalcap also divides by len(refs), here 1
    scores = np.array(scores)
    return float(np.mean(scores)), scores
