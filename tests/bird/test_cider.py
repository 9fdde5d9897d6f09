"""paddlemix.bird.cider equals pycocoevalcap's CiderScorer exactly, group by group."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocoevalcap.cider.cider_scorer import CiderScorer

from paddlemix.bird.cider import group_scores, prepare

WORDS = ["the", "liver", "is", "enlarged", "left", "kidney", "a", "lesion", "in", "upper"]
sentences = st.lists(st.sampled_from(WORDS), min_size=0, max_size=14).map(" ".join)


def pycocoevalcap_scores(hyps, refs, idx):
    scorer = CiderScorer(n=4, sigma=6.0)
    for i in idx:
        scorer += (hyps[i], [refs[i]])
    return scorer.compute_score()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(sentences, sentences.filter(bool)), min_size=1, max_size=25), st.integers(1, 4))
def test_bit_identical_to_pycocoevalcap(pairs, n_groups):
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    records = prepare(hyps, refs)
    groups = [np.arange(len(pairs))] + [np.arange(g, len(pairs), n_groups) for g in range(n_groups)]
    for idx in groups:
        if len(idx) == 0:
            continue
        score, rows = group_scores(records, idx)
        want_score, want_rows = pycocoevalcap_scores(hyps, refs, idx)
        assert score == want_score
        assert np.array_equal(rows, want_rows)


def test_a_hand_checked_pair():
    # One record, hypothesis == reference: every n-gram is in every (the one) reference, so
    # idf = log(1) - log(1) = 0, every vector is zero and CIDEr is 0 (pycocoevalcap agrees).
    score, rows = group_scores(prepare(["the liver"], ["the liver"]), [0])
    assert score == 0.0 and rows.tolist() == [0.0]
