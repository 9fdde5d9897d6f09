"""paddlemix.bird.metrics.coco_scores equals pycocoevalcap's BLEU, ROUGE-L and CIDEr exactly, group by group."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.rouge.rouge import Rouge, my_lcs

from paddlemix.bird.metrics.coco_scores import bleu_scorer, group_scores, lcs_length, prepare, rouge_l

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
        bleu = BleuScorer(n=4)
        for i in idx:
            bleu += BleuScorer(hyps[i], [refs[i]], n=4)
        want = bleu.compute_score(option="closest", verbose=0)
        assert bleu_scorer(records, idx).compute_score(option="closest", verbose=0) == want
    rouge = Rouge()
    for h, r in pairs:
        assert rouge_l(h, r) == rouge.calc_score([h], [r])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("abcd"), max_size=12), st.lists(st.sampled_from("abcd"), max_size=12))
def test_lcs_equals_the_dynamic_programme(a, b):
    assert lcs_length(a, b) == my_lcs(a, b)
    assert lcs_length(["a", "b", "c", "b"], ["b", "c", "a", "b"]) == 3  # "bcb"


def test_a_hand_checked_pair():
    # One record, hypothesis == reference: every n-gram is in every (the one) reference, so
    # idf = log(1) - log(1) = 0, every vector is zero and CIDEr is 0 (pycocoevalcap agrees).
    score, rows = group_scores(prepare(["the liver"], ["the liver"]), [0])
    assert score == 0.0 and rows.tolist() == [0.0]
