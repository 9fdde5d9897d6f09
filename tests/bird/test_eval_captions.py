"""GC/MII caption metrics equal a direct pycocoevalcap run on each modality's records.

One scored fixture is shared by the module: Java (PTB tokenizer, METEOR) starts in seconds.
"""

import contextlib
import io
import json
import subprocess
from unittest import mock

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from paddlemix.bird.metrics.captions import bleu_from_sums
from paddlemix.bird.metrics.java import ptb_tokenize, spice_unavailable_reason
from paddlemix.bird.metrics.keys import CAPTION_METRICS
from paddlemix.bird.metrics.records import group_by_modality
from paddlemix.cli import run
from paddlemix.tools.eval import main

pytestmark = pytest.mark.slow  # pycocoevalcap's Java scorers, started many times

CAPTIONS = [
    ("ct", "The liver is enlarged, with a hypodense lesion.", "The liver appears enlarged with a lesion."),
    ("ct", "A small cyst in the left kidney.", "A small cyst in the left kidney."),
    ("ct", "The spleen is normal in size.", ""),
    ("ct", 'He said "fine" -- it\'s the "aorta".', "It's the aorta, he said."),
    ("mr", "A hyperintense mass in the right frontal lobe.", "<ref>mass</ref><box>(10,20),(30,40)</box> in the frontal lobe"),
    ("mr", "The ventricles are mildly dilated.", "Ventricles are dilated."),
    ("mr", "No abnormality is seen.", "No abnormality seen; the brain is normal."),
    ("fundus", "The optic disc is pale; size 1.5 mm (approx.).", "The optic disc looks pale."),
    ("fundus", "Größe 5×3 cm, naïve lesion at 12 o'clock.", "lesion at 12 o'clock"),
    ("fundus", "Hemorrhages are scattered\nacross the retina.", "Scattered hemorrhages across the retina."),
]
RECORDS = [
    dict(id=i, image=f"{m}_00--ds--case{i}--z_0001.png", question="Describe the region.", annotation=a, response=r)
    for i, (m, a, r) in enumerate(CAPTIONS)
]


def direct_pycocoevalcap(records, meteor):
    """What an upstream script computes for one group: tokenise, then Bleu, Meteor, Rouge, Cider."""
    gts = {i: [{"caption": r["annotation"]}] for i, r in enumerate(records)}
    res = {i: [{"caption": r["response"]}] for i, r in enumerate(records)}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its statistics
        bleu, _ = Bleu(4).compute_score(gts, res)
    return {
        "BLEU-1": bleu[0],
        "BLEU-2": bleu[1],
        "BLEU-3": bleu[2],
        "BLEU-4": bleu[3],
        "METEOR": meteor.compute_score(gts, res)[0],
        "ROUGE-L": Rouge().compute_score(gts, res)[0],
        "CIDEr": Cider().compute_score(gts, res)[0],
    }


@pytest.fixture(scope="module")
def pycoco_meteor():
    # Started first: its Java loads the paraphrase table while our scorer runs.
    return Meteor()


@pytest.fixture(scope="module")
def scored(pycoco_meteor, tmp_path_factory):
    """GC scored through the command line, from a file that also holds RO records (--task selects)."""
    tmp = tmp_path_factory.mktemp("gc")
    pred_file, out_json = tmp / "pred_mixed.jsonl", tmp / "metrics_GC.json"
    with open(pred_file, "w", encoding="utf-8") as handle:
        for record in RECORDS:
            handle.write(json.dumps(dict(record, task="GC")) + "\n")
        handle.write(json.dumps(dict(RECORDS[0], task="RO")) + "\n")
    java_starts = []
    real_popen = subprocess.Popen

    def counting_popen(cmd, *args, **kwargs):
        if cmd and str(cmd[0]).endswith("java"):
            java_starts.append(cmd)
        return real_popen(cmd, *args, **kwargs)

    argv = ["--task", "GC", "--pred_file", str(pred_file), "--out_json", str(out_json), "--bootstrap", "40", "--seed", "3"]
    with mock.patch("subprocess.Popen", counting_popen), contextlib.redirect_stdout(io.StringIO()) as printed:
        assert run(main, argv) == 0
    with open(out_json, encoding="utf-8") as handle:
        out = json.load(handle)
    return out, java_starts, printed.getvalue()


@pytest.fixture(scope="module")
def direct(pycoco_meteor):
    meteor = pycoco_meteor
    groups = group_by_modality(RECORDS)
    per_modality = {m: direct_pycocoevalcap([RECORDS[i] for i in idx], meteor) for m, idx in groups.items()}
    return per_modality, direct_pycocoevalcap(RECORDS, meteor)


def test_per_modality_equals_direct_pycocoevalcap(scored, direct):
    out, _, _ = scored
    per_modality, _ = direct
    assert list(out["per_modality"]) == ["ct", "mr", "fundus"]
    for modality, expected in per_modality.items():
        got = out["per_modality"][modality]
        assert got["n"] == len(group_by_modality(RECORDS)[modality])
        for name, value in expected.items():
            assert got[name] == value, (modality, name)


def test_micro_equals_direct_run_on_all_records_and_macro_is_the_mean(scored, direct):
    out, _, _ = scored
    per_modality, pooled = direct
    for name, value in pooled.items():
        assert out["micro"][name] == value, name
        assert out["macro"][name] == pytest.approx(np.mean([per_modality[m][name] for m in per_modality]), abs=1e-15)


SIX = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L")


def test_mbmr_is_the_mean_of_bleu1_to_4_meteor_rougel_computed_directly(scored, direct):
    out, _, _ = scored
    per_modality, pooled = direct
    for modality, expected in per_modality.items():
        want = sum(expected[k] for k in SIX) / 6
        assert out["per_modality"][modality]["mBMR"] == pytest.approx(want, abs=1e-12), modality
    assert out["micro"]["mBMR"] == pytest.approx(sum(pooled[k] for k in SIX) / 6, abs=1e-12)
    # Each metric averaged over modalities first, then the six averaged (ClinKD's eval_MII.py).
    macro_parts = [np.mean([per_modality[m][k] for m in per_modality]) for k in SIX]
    assert out["macro"]["mBMR"] == pytest.approx(np.mean(macro_parts), abs=1e-12)
    assert "BLEU-1, BLEU-2, BLEU-3, BLEU-4, METEOR and ROUGE-L" in out["definitions"]["mBMR"]
    assert "2502.05928" in out["definitions"]["mBMR"] and "eval_MII.py" in out["definitions"]["mBMR"]


def test_one_java_start_per_program(scored):
    _, java_starts, _ = scored
    programs = sorted("meteor" if "-jar" in cmd else "ptb" for cmd in java_starts)
    assert programs == ["meteor", "ptb"]


def test_exact_keys_table_and_spice_reason(scored):
    out, _, printed = scored
    assert out["task"] == "GC" and out["n"] == len(RECORDS) and out["pred_file"] == "pred_mixed.jsonl"
    assert {"task", "n", "per_modality", "macro", "micro", "spice_unavailable_reason", "ci95"} <= set(out)
    lines = printed.splitlines()
    assert lines[1].split() == ["modality", "n"] + list(CAPTION_METRICS) + ["mBMR"]
    assert [line.split()[0] for line in lines[2:5]] == ["ct", "mr", "fundus"]
    assert lines[6].split()[0] == "macro" and lines[7].split()[0] == "micro"
    for scores in out["per_modality"].values():
        assert list(scores) == ["n"] + list(CAPTION_METRICS) + ["mBMR"]
    assert list(out["macro"]) == list(CAPTION_METRICS) + ["mBMR"] == list(out["micro"])
    reason = spice_unavailable_reason()
    if reason is None:
        pytest.skip("Stanford CoreNLP is installed here: SPICE runs")
    assert out["micro"]["SPICE"] is None and out["macro"]["SPICE"] is None
    assert out["spice_unavailable_reason"] == reason and "stanford-corenlp-3.6.0" in reason


def test_bootstrap_intervals_bracket_the_estimates(scored):
    out, _, _ = scored
    assert out["bootstrap"]["n"] == 40
    for key in ("macro", "micro"):
        assert set(out["ci95"][key]) == set(CAPTION_METRICS) - {"SPICE"}
        for name, (lo, hi) in out["ci95"][key].items():
            assert lo <= hi
            # Corpus BLEU / METEOR of a resample need not bracket the full-sample value on 10
            # records, but they stay in range.
            assert 0.0 <= lo and (name == "CIDEr" or hi <= 1.0)


def test_pooled_statistics_reproduce_corpus_bleu_and_meteor(scored, direct):
    """The bootstrap's additive statistics give back the corpus scores on the full sample.

    score_captions checks this itself (it would add a warning); BLEU is re-checked here by hand.
    """
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    out, _, _ = scored
    assert "warning" not in out["bootstrap"]
    _, pooled = direct
    n = len(RECORDS)
    tokens = ptb_tokenize([r["annotation"] for r in RECORDS] + [r["response"] for r in RECORDS])
    stats = []
    for ref, hyp in zip(tokens[:n], tokens[n:]):
        cooked = BleuScorer(hyp, [ref], n=4).ctest[0]
        stats.append([cooked["testlen"], cooked["reflen"][0]] + cooked["guess"] + cooked["correct"])
    bleu = bleu_from_sums(np.asarray(stats, dtype=float).sum(axis=0, keepdims=True))[0]
    assert bleu == pytest.approx([pooled[f"BLEU-{k}"] for k in range(1, 5)], rel=1e-12)


def test_tokenizer_keeps_records_aligned_across_line_breaks():
    texts = ["a\rb", "MARK one", "c\u2028d\x0ce", "MARK two", "f\x85g\x0bh", "MARK three", ""]
    out = ptb_tokenize(texts)
    assert out[1::2] == ["mark one", "mark two", "mark three"]
    assert out[0] == "a b" and out[-1] == ""


def test_degenerate_long_response_is_bounded_named_and_the_file_still_scored(pycoco_meteor):
    """A looping ~21k-word MII response used to exhaust METEOR's Java heap and lose the whole file."""
    from paddlemix.bird.metrics.captions import MAX_CAPTION_WORDS, score_captions

    loop = "the liver shows a hypodense lesion near the portal vein " * 2100  # 23,100 words
    records = [dict(RECORDS[0], id="normal"), dict(RECORDS[1], id="looping", response=loop)]
    out = score_captions(records, task="MII")
    assert out["word_limit"]["limit"] == MAX_CAPTION_WORDS
    assert out["word_limit"]["responses_cut"] == ["looping"] and out["word_limit"]["references_cut"] == []
    # What the scorers saw for the looping record: its first MAX_CAPTION_WORDS tokens, scored directly.
    bounded = dict(records[1], response=" ".join(loop.split()[:MAX_CAPTION_WORDS]))
    expected = direct_pycocoevalcap([records[0], bounded], pycoco_meteor)
    for key in ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
        assert out["micro"][key] == pytest.approx(expected[key], abs=1e-6), key
