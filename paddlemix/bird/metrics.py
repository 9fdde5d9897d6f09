"""Scores for BiRD predictions: VG box recall, RO naming accuracy, GC/MII/QA caption metrics.

Every function works on plain prediction records (dicts as read from prediction JSONL, with at
least ``annotation`` and ``response``, and ``modality`` or ``image``) and imports neither paddle
nor paddlenlp, so any model's predictions can be scored where only numpy and pycocoevalcap are
installed. Each task is scored per modality, then summarised two ways: ``macro`` is the
unweighted mean over the modalities present (the paper's headline number) and ``micro`` pools all
records. Metric values are fractions in [0, 1] (CIDEr is unbounded), never percentages.

Caption metrics are pycocoevalcap's, computed on PTB-tokenised text exactly as a direct
pycocoevalcap run on each modality's records would compute them, but the two Java programs
(the PTB tokenizer and METEOR) start once per file instead of once per modality.
"""

import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import unicodedata
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .box_formats import DEFAULT_BOX_FORMAT, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, PIXEL_FORMATS, foreign_formats, read_boxes
from . import coco_scores
from .boxes import iou, parse_boxes
from .matching import match_boxes
from .tasks import GC, KNOWN_MODALITIES, RO, VG, check_task, modality_of

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
# The paper's "mBMR" is not spelled out; ClinKD (arXiv 2502.05928), the follow-up that scores
# Med-GRIT-270k with a copy of BiRD's scripts, computes it in its test_metric/eval_MII.py as the
# mean of these six, each first averaged over modalities.
MBMR = "mBMR"
MBMR_PARTS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L")
CLEAN_MODES = ("none", "upstream")


ACC_THRESHOLDS = (0.25, 0.5, 0.75)  # MedRegA's Acc@0.25/0.5/0.75, first box vs first box


def vg_metric_names(iou_threshold: float = 0.5) -> Tuple[str, ...]:
    """VG keys in report order; ``Recall`` and the one-to-one ``match_*`` scores carry the
    threshold in their name (``Recall@0.5`` at the default), the precision beside the recall."""
    t = f"{iou_threshold:g}"
    return (
        (f"Recall@{t}", f"match_precision@{t}", f"match_recall@{t}", f"match_F1@{t}")
        + tuple(f"Acc@{a:g}" for a in ACC_THRESHOLDS)
        + ("mIoU", "parse_failure_rate")
    )


def metric_names(task: str, iou_threshold: float = 0.5) -> Tuple[str, ...]:
    """The metric keys of one task, in the order reports show them."""
    task = check_task(task)
    if task == VG:
        return vg_metric_names(iou_threshold)
    if task == RO:
        return ("accuracy", "exact_match")
    return CAPTION_METRICS + (MBMR,)


def add_mbmr(scores: dict) -> dict:
    """Add ``mBMR`` (mean of BLEU-1..4, METEOR, ROUGE-L) to a dict holding those six.

    Applied to a macro dict it is the mean of the six macro values: each metric is averaged over
    modalities first, as ClinKD's ``eval_MII.py`` does (the mean is linear, so this also equals
    the macro mean of per-modality mBMR)."""
    parts = [scores.get(k) for k in MBMR_PARTS]
    scores[MBMR] = None if any(v is None for v in parts) else float(sum(parts) / len(parts))
    return scores


# ---------------------------------------------------------------------------------------------
# Records


def record_modality(record: dict) -> str:
    """The record's ``modality``, or the SA-Med2D prefix of its ``image`` when absent."""
    modality = record.get("modality")
    if isinstance(modality, str) and modality.strip():
        return modality.strip().lower()
    return modality_of(record.get("image", ""))


def modality_order(modalities) -> List[str]:
    """SA-Med2D modalities in their usual order, then any other prefix alphabetically."""
    present = set(modalities)
    known = [m for m in KNOWN_MODALITIES if m in present]
    return known + sorted(present - set(KNOWN_MODALITIES))


def group_by_modality(records: Sequence[dict]) -> Dict[str, np.ndarray]:
    """Record indices per modality (file order inside each group)."""
    groups: Dict[str, List[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record_modality(record), []).append(i)
    return {m: np.asarray(groups[m], dtype=np.int64) for m in modality_order(groups)}


def _text(value) -> str:
    # An absent or null response is an empty answer: scored as a miss, never a crash.
    return value if isinstance(value, str) else ""


# ---------------------------------------------------------------------------------------------
# Cleaning raw responses


def clean_upstream(text: str) -> str:
    """Reproduce what BiRD's upstream eval scripts do to a raw response before scoring.

    Upstream inference decoded with special tokens kept, so its scorers first: cut at the first
    ``.<|im_end|>`` (keeping the full stop), delete ``<|im_end|>`` followed by a newline, keep
    only the text between the first two newlines when there are two (drops a role line or prompt
    echo before the answer and whatever follows it), delete ``<|endoftext|>`` and strip
    surrounding whitespace.
    """
    text = _text(text)
    end = text.find(".<|im_end|>")
    if end >= 0:
        text = text[:end] + "."
    text = text.replace("<|im_end|>\n", "")
    first = text.find("\n")
    if first >= 0:
        second = text.find("\n", first + 1)
        if second >= 0:
            text = text[first + 1 : second]
    return text.replace("<|endoftext|>", "").strip()


def clean_response(text, mode: str = "none") -> str:
    """``none`` keeps the response as written; ``upstream`` applies :func:`clean_upstream`."""
    if mode == "none":
        return _text(text)
    if mode == "upstream":
        return clean_upstream(text)
    raise ValueError(f"unknown clean mode {mode!r}; expected one of {', '.join(CLEAN_MODES)}")


# ---------------------------------------------------------------------------------------------
# Summaries shared by every task: per modality, macro, micro, bootstrap intervals


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


def _ratio(sums: np.ndarray, count: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def _mean(sums: np.ndarray, count: int) -> np.ndarray:
    return sums[:, 0] / count


def _nan_to_none(value) -> Optional[float]:
    value = float(value)
    return None if math.isnan(value) else value


def _macro(per_modality: Dict[str, dict], names: Sequence[str]) -> Dict[str, Optional[float]]:
    macro = {}
    for name in names:
        values = [scores[name] for scores in per_modality.values()]
        macro[name] = None if not values or any(v is None for v in values) else float(np.mean(values))
    return macro


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


def _summarise_additive(
    records_n: int,
    groups: Dict[str, np.ndarray],
    metrics: Dict[str, AdditiveMetric],
    bootstrap: int,
    seed: int,
) -> dict:
    per_modality = {}
    for m, idx in groups.items():
        scores = {"n": int(len(idx))}
        for name, metric in metrics.items():
            sums = metric.rows[idx].sum(axis=0, keepdims=True)
            scores[name] = _nan_to_none(metric.finish(sums, len(idx))[0])
        per_modality[m] = scores
    micro = {}
    all_idx = np.concatenate(list(groups.values())) if groups else np.zeros(0, dtype=np.int64)
    for name, metric in metrics.items():
        sums = metric.rows[all_idx].sum(axis=0, keepdims=True)
        micro[name] = _nan_to_none(metric.finish(sums, len(all_idx))[0]) if len(all_idx) else None
    out = {"n": records_n, "per_modality": per_modality, "macro": _macro(per_modality, list(metrics)), "micro": micro}
    if bootstrap and groups:
        out["ci95"] = bootstrap_intervals(metrics, groups, bootstrap, seed)
    return out


def _bootstrap_info(bootstrap: int, seed: int, extra: str = "") -> dict:
    method = (
        "percentile 95% interval over resamples of records drawn with replacement within each "
        "modality (stratified)" + extra
    )
    return {"bootstrap": {"n": bootstrap, "seed": seed, "method": method}}


# ---------------------------------------------------------------------------------------------
# VG: visual grounding


@dataclass
class VGRecordScore:
    n_reference_boxes: int
    n_found: int  # reference boxes matched by some predicted box with IoU > threshold
    first_iou: float  # first predicted box vs first reference box; 0 without a predicted box
    hit: bool  # first_iou >= threshold
    parse_failure: bool  # no box read from the response, or a fragment that could not be read
    n_predicted_boxes: int = 0
    n_matched: int = 0  # one-to-one (Hungarian) pairs with IoU >= threshold
    other_formats: Tuple[str, ...] = ()  # markup of other box formats seen in the response


def vg_record_score(
    annotation,
    response,
    iou_threshold: float = 0.5,
    box_format: str = DEFAULT_BOX_FORMAT,
    width: Optional[float] = None,
    height: Optional[float] = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Optional[VGRecordScore]:
    """One VG record's numbers, or None when the reference has no box (the record is skipped).

    The reference is Med-GRIT's grid markup; the response is read in ``box_format`` (see
    :mod:`paddlemix.bird.box_formats`; pixel formats need ``width`` and ``height``)."""
    references = parse_boxes(annotation).boxes
    if not references:
        return None
    predicted = read_boxes(response, box_format, width, height, min_pixels, max_pixels)
    found = sum(1 for ref in references if any(iou(box, ref) > iou_threshold for box in predicted.boxes))
    first = iou(predicted.boxes[0], references[0]) if predicted.boxes else 0.0
    _, counts = match_boxes(predicted.boxes, references, iou_threshold)
    return VGRecordScore(
        n_reference_boxes=len(references),
        n_found=found,
        first_iou=first,
        hit=first >= iou_threshold,
        parse_failure=not predicted.ok,
        n_predicted_boxes=len(predicted.boxes),
        n_matched=counts.true_positives,
        other_formats=tuple(foreign_formats(response, box_format)),
    )


def vg_definitions(iou_threshold: float, box_format: str = DEFAULT_BOX_FORMAT) -> Dict[str, str]:
    recall, precision, match_recall, f1 = vg_metric_names(iou_threshold)[:4]
    t = f"{iou_threshold:g}"
    definitions = {
        recall: (
            f"upstream definition: found reference boxes / all reference boxes, where a reference box "
            f"is found when any box parsed from the response has IoU > {t} with it "
            "(strictly greater); a response without a box finds nothing. Extra predicted boxes cost "
            f"nothing, so read it beside {precision}"
        ),
        precision: (
            f"one-to-one (Hungarian) matching of predicted to reference boxes, a pair allowed at IoU >= {t}, "
            "most pairs first, then the largest total IoU: matched pairs / predicted boxes, both pooled over "
            "the group's records; 0 when the group predicts no box"
        ),
        match_recall: f"the same matching: matched pairs / reference boxes, pooled over the group's records",
        f1: "2 * matched / (predicted boxes + reference boxes), pooled over the group's records",
        "mIoU": "mean over records of IoU(first predicted box, first reference box); 0 when no box is parsed",
        "parse_failure_rate": (
            "fraction of records whose response yields no box, or contains a box-like fragment that "
            "could not be read (unclosed pair, non-numeric, degenerate or out-of-range corners)"
        ),
        "n_predicted_boxes / n_reference_boxes": "box counts per modality and in total, beside the scores",
        "box_format": (
            f"responses read as {box_format!r} (paddlemix.bird.box_formats) and put on the [0, 1000) grid of "
            "the reference; responses carrying markup of another format are counted per format in "
            "n_records_in_other_box_format and never re-read in it (qwen_vl's lenient bare (x,y),(x,y) pairs "
            "are still read)"
        ),
        "scope": (
            "records whose reference answer has no box are skipped (n_skipped_no_reference_box); "
            "per-modality n counts scored records; boxes are read leniently by paddlemix.bird.boxes "
            "(corners ordered, missing </box> and bare (x,y),(x,y) pairs accepted)"
        ),
    }
    for a in ACC_THRESHOLDS:
        definitions[f"Acc@{a:g}"] = f"per record: IoU(first predicted box, first reference box) >= {a:g} (RefCOCO / MedRegA convention)"
    return definitions


def _ratio_or_zero(sums: np.ndarray, count: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 1] > 0, sums[:, 0] / np.where(sums[:, 1] > 0, sums[:, 1], 1.0), 0.0)


def _image_size(record: dict, where: str) -> Tuple[float, float]:
    width, height = record.get("width"), record.get("height")
    if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
        raise ValueError(
            f"{where}: this box format is in pixels and needs the image size: give the record positive "
            "'width' and 'height' fields, or --image_root to read them from the image"
        )
    return float(width), float(height)


def score_vg(
    records: Sequence[dict],
    iou_threshold: float = 0.5,
    bootstrap: int = 0,
    seed: int = 0,
    box_format: str = DEFAULT_BOX_FORMAT,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict:
    """Visual grounding metrics of records (``annotation`` and ``response`` carry the boxes)."""
    names = vg_metric_names(iou_threshold)
    scored, rows = [], []
    skipped: Dict[str, int] = {}
    other_formats: Dict[str, int] = {}
    for k, record in enumerate(records):
        size = (None, None)
        if box_format in PIXEL_FORMATS:
            size = _image_size(record, f"record {k} (id {record.get('id', '?')})")
        result = vg_record_score(
            record.get("annotation"), _text(record.get("response")), iou_threshold, box_format, *size, min_pixels, max_pixels
        )
        if result is None:
            m = record_modality(record)
            skipped[m] = skipped.get(m, 0) + 1
            continue
        for name in result.other_formats:
            other_formats[name] = other_formats.get(name, 0) + 1
        scored.append(record)
        rows.append(
            [result.n_found, result.n_reference_boxes, result.n_matched, result.n_predicted_boxes, result.first_iou,
             float(result.parse_failure)]
            + [float(result.first_iou >= a) for a in ACC_THRESHOLDS]
        )
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 6 + len(ACC_THRESHOLDS))
    found, n_ref, matched, n_pred = (table[:, i : i + 1] for i in range(4))
    ones = np.ones((len(table), 1))
    metrics = {
        names[0]: AdditiveMetric(np.hstack([found, n_ref]), _ratio),
        names[1]: AdditiveMetric(np.hstack([matched, n_pred]), _ratio_or_zero),
        names[2]: AdditiveMetric(np.hstack([matched, n_ref]), _ratio),
        names[3]: AdditiveMetric(np.hstack([2 * matched, n_pred + n_ref]), _ratio),
    }
    for j, a in enumerate(ACC_THRESHOLDS):
        metrics[f"Acc@{a:g}"] = AdditiveMetric(np.hstack([table[:, 6 + j : 7 + j], ones]), _ratio)
    metrics["mIoU"] = AdditiveMetric(np.hstack([table[:, 4:5], ones]), _ratio)
    metrics["parse_failure_rate"] = AdditiveMetric(np.hstack([table[:, 5:6], ones]), _ratio)
    groups = group_by_modality(scored)
    out = {"task": VG}
    out.update(_summarise_additive(len(records), groups, metrics, bootstrap, seed))
    for m, idx in groups.items():
        out["per_modality"][m]["n_predicted_boxes"] = int(table[idx, 3].sum())
        out["per_modality"][m]["n_reference_boxes"] = int(table[idx, 1].sum())
    out["iou_threshold"] = iou_threshold
    out["box_format"] = box_format
    if box_format == "qwen25_vl":
        out["smart_resize"] = {"factor": 28, "min_pixels": min_pixels, "max_pixels": max_pixels}
    out["n_reference_boxes"] = int(table[:, 1].sum())
    out["n_predicted_boxes"] = int(table[:, 3].sum())
    out["n_skipped_no_reference_box"] = int(sum(skipped.values()))
    out["n_skipped_no_reference_box_per_modality"] = {m: skipped[m] for m in modality_order(skipped)}
    out["n_records_in_other_box_format"] = other_formats
    out["definitions"] = vg_definitions(iou_threshold, box_format)
    if bootstrap:
        out.update(_bootstrap_info(bootstrap, seed))
    return out


# ---------------------------------------------------------------------------------------------
# RO: referring object classification

_MARKUP_RE = re.compile(r"<box>.*?(?:</box>|$)|</?ref>|</?box>", re.S)


def ro_accuracy(annotation: str, response: str) -> bool:
    """Upstream's RO score: every word of the lower-cased reference occurs in the lower-cased response.

    Words are whitespace-separated and matched as substrings (``kidney`` is found in
    ``kidneys``), so it is lenient by design.
    """
    response = _text(response).lower()
    return all(word in response for word in _text(annotation).lower().split())


def normalize_answer(text: str) -> str:
    """Lower-case, drop ``<ref>`` tags and whole ``<box>…</box>`` spans, punctuation → space, one space."""
    text = _MARKUP_RE.sub(" ", _text(text).lower())
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def ro_exact_match(annotation: str, response: str) -> bool:
    """The normalised response equals the normalised reference (see :func:`normalize_answer`)."""
    return normalize_answer(annotation) == normalize_answer(response)


RO_DEFINITIONS = {
    "accuracy": (
        "upstream definition: every whitespace-separated word of the lower-cased reference occurs "
        "as a substring of the lower-cased response"
    ),
    "exact_match": (
        "normalised response equals normalised reference (lower-case, <ref> tags and <box>...</box> "
        "spans removed, punctuation replaced by spaces, whitespace collapsed)"
    ),
}


def score_ro(records: Sequence[dict], bootstrap: int = 0, seed: int = 0) -> dict:
    """Referring object classification metrics of records."""
    rows = [
        [float(ro_accuracy(r.get("annotation"), r.get("response"))), float(ro_exact_match(r.get("annotation"), r.get("response")))]
        for r in records
    ]
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    metrics = {
        "accuracy": AdditiveMetric(table[:, 0:1], _mean),
        "exact_match": AdditiveMetric(table[:, 1:2], _mean),
    }
    out = {"task": RO}
    out.update(_summarise_additive(len(records), group_by_modality(records), metrics, bootstrap, seed))
    out["definitions"] = dict(RO_DEFINITIONS)
    if bootstrap:
        out.update(_bootstrap_info(bootstrap, seed))
    return out


# ---------------------------------------------------------------------------------------------
# GC / MII: caption metrics via pycocoevalcap, one Java start per program for the whole file


def _pycocoevalcap_dir(*parts: str) -> str:
    import pycocoevalcap  # a namespace package: no __init__.py, so no __file__

    return os.path.join(os.path.abspath(list(pycocoevalcap.__path__)[0]), *parts)


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "caption metrics need Java: pycocoevalcap's PTB tokenizer and METEOR are Java programs; "
            "install a JRE (e.g. openjdk-17-jre-headless) so that `java` is on PATH"
        )
    return java


# Characters the Java tokenizer treats as line ends (or chokes on): each would shift every later
# caption onto the wrong record, so they become spaces, as pycocoevalcap does for "\n".
_LINE_BREAK_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


def ptb_tokenize(texts: Sequence[str]) -> List[str]:
    """pycocoevalcap's tokenisation (Stanford PTBTokenizer, lower-cased, punctuation dropped) in one Java run."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    java = _require_java()
    if not texts:
        return []
    lines = [_LINE_BREAK_RE.sub(" ", _text(t)) for t in texts]
    jar = _pycocoevalcap_dir("tokenizer", STANFORD_CORENLP_3_4_1_JAR)
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as handle:
        handle.write("\n".join(lines).encode())
        path = handle.name
    try:
        cmd = [java, "-cp", jar, "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        os.remove(path)
    if proc.returncode != 0:
        raise RuntimeError(f"PTB tokenizer failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")
    out = proc.stdout.decode(errors="replace").split("\n")
    if len(out) < len(lines):
        raise RuntimeError(f"PTB tokenizer returned {len(out)} lines for {len(lines)} captions")
    punctuation = set(PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in out[: len(lines)]]


# METEOR 1.5 statistics: field 20 is the chunk count, 21/22 the matched test/reference words.
# When pooling, Meteor counts no chunk for a segment that matches its reference perfectly.
_METEOR_CHUNKS, _METEOR_TEST_MATCHED, _METEOR_REF_MATCHED = 20, 21, 22


class MeteorProcess:
    """One METEOR 1.5 Java process (the jar and flags pycocoevalcap uses), fed through pipes.

    ``statistics`` sends every SCORE line while a thread reads the answers, instead of one round
    trip per record; ``evaluate`` sends one EVAL line per group and returns that group's
    per-record scores and its corpus score, exactly what pycocoevalcap's ``Meteor`` computes.
    """

    def __init__(self):
        java = _require_java()
        from pycocoevalcap.meteor.meteor import METEOR_JAR

        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [java, "-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=_pycocoevalcap_dir("meteor"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )

    def _readline(self) -> str:
        line = self._proc.stdout.readline()
        if not line:
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"METEOR stopped unexpectedly: {err}")
        return line.decode().strip()

    def _send(self, lines: Sequence[str]) -> threading.Thread:
        def write():
            try:
                for line in lines:
                    self._proc.stdin.write((line + "\n").encode())
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # the reader reports the failure with METEOR's stderr

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        return thread

    def statistics(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> List[str]:
        lines = []
        for hyp, refs in zip(hypotheses, references):
            hyp = hyp.replace("|||", "").replace("  ", " ")
            lines.append(" ||| ".join(("SCORE", " ||| ".join(refs), hyp)))
        writer = self._send(lines)
        stats = [self._readline() for _ in lines]
        writer.join()
        return stats

    def evaluate(self, stats: Sequence[str]) -> Tuple[List[float], float]:
        writer = self._send(["EVAL ||| " + " ||| ".join(stats)])
        scores = [float(self._readline()) for _ in stats]
        corpus = float(self._readline())
        writer.join()
        return scores, corpus

    def close(self) -> None:
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._proc.kill()
        self._proc.wait()
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def meteor_pooling_rows(stats: Sequence[str]) -> np.ndarray:
    """METEOR statistics as numbers that add up to the pooled statistics METEOR aggregates."""
    rows = np.asarray([[float(x) for x in s.split()] for s in stats], dtype=np.float64)
    perfect = (
        (rows[:, _METEOR_CHUNKS] == 1)
        & (rows[:, _METEOR_TEST_MATCHED] == rows[:, 0])
        & (rows[:, _METEOR_REF_MATCHED] == rows[:, 1])
    )
    rows[perfect, _METEOR_CHUNKS] = 0
    return rows


def _meteor_finish(meteor: MeteorProcess) -> Callable[[np.ndarray, int], np.ndarray]:
    def finish(sums: np.ndarray, count: int) -> np.ndarray:
        lines = [" ".join(repr(float(x)) for x in row) for row in sums]
        scores, _ = meteor.evaluate(lines)
        return np.asarray(scores)

    return finish


def bleu_from_sums(sums: np.ndarray, count: int = 0) -> np.ndarray:
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


def spice_unavailable_reason() -> Optional[str]:
    """None when SPICE can run offline, else why not (never triggers pycocoevalcap's download)."""
    lib = _pycocoevalcap_dir("spice", "lib")
    missing = [
        name
        for name in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
        if not os.path.exists(os.path.join(lib, name))
    ]
    if not os.path.exists(_pycocoevalcap_dir("spice", "spice-1.0.jar")):
        missing.insert(0, "../spice-1.0.jar")
    if missing:
        return (
            f"SPICE needs Stanford CoreNLP 3.6.0 in {lib} (missing: {', '.join(missing)}); pycocoevalcap "
            "would download it from nlp.stanford.edu on first use, which this evaluator never does. "
            "Copy the two jars there to enable SPICE."
        )
    if shutil.which("java") is None:
        return "SPICE needs Java on PATH"
    return None


def _spice_scores(gts: Dict[int, List[str]], res: Dict[int, List[str]]) -> Tuple[Optional[np.ndarray], Optional[str]]:
    reason = spice_unavailable_reason()
    if reason is not None:
        return None, reason
    try:
        from pycocoevalcap.spice.spice import Spice

        _, scores = Spice().compute_score(gts, res)
    except Exception as exc:  # SPICE is optional: a failure is reported, the other metrics stand
        return None, f"SPICE failed: {type(exc).__name__}: {exc}"
    # Spice returns per-record scores in sorted key order; our keys are 0..n-1 in file order.
    return np.asarray([s["All"]["f"] for s in scores], dtype=np.float64), None


CAPTION_DEFINITIONS = {
    "BLEU-1..4": "pycocoevalcap Bleu(4), corpus level over the group, reference length 'closest'",
    "METEOR": "pycocoevalcap METEOR 1.5 (-l en -norm), corpus score over the group",
    "ROUGE-L": "pycocoevalcap Rouge (beta 1.2), mean of per-record scores (paddlemix.bird.coco_scores, the same values)",
    "CIDEr": (
        "pycocoevalcap Cider (CIDEr-D, sigma 6), document frequencies from the group's references "
        "(computed by paddlemix.bird.coco_scores, bit-identical to pycocoevalcap's CiderScorer)"
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


def score_captions(records: Sequence[dict], task: str = GC, bootstrap: int = 0, seed: int = 0) -> dict:
    """GC / MII caption metrics of records: per modality, macro and micro."""

    task = check_task(task)
    if not records:
        raise ValueError(f"no {task} records to score")
    n = len(records)
    groups = group_by_modality(records)
    targets = list(groups.items()) + [(None, np.arange(n))]  # None: the pooled (micro) group
    tokens = ptb_tokenize([_text(r.get("annotation")) for r in records] + [_text(r.get("response")) for r in records])
    ids = [r.get("id", i) for i, r in enumerate(records)]
    refs, refs_cut = bound_captions(tokens[:n], ids)
    hyps, hyps_cut = bound_captions(tokens[n:], ids)

    with MeteorProcess() as meteor:
        # METEOR aligns and pools in its own process while Python computes the other metrics.
        meteor_out: dict = {}

        def run_meteor():
            try:
                stats = meteor.statistics(hyps, [[r] for r in refs])
                meteor_out["corpus"] = [meteor.evaluate([stats[i] for i in idx])[1] for _, idx in targets]
                meteor_out["stats"] = stats
            except BaseException as exc:  # re-raised in the calling thread
                meteor_out["error"] = exc

        meteor_thread = threading.Thread(target=run_meteor, daemon=True)
        meteor_thread.start()

        # Cook every record once; each group's scorer then pools the cooked records, which is
        # what a fresh pycocoevalcap scorer fed only that group's records computes
        # (paddlemix.bird.coco_scores: the same numbers as pycocoevalcap's scorers, cheaper).
        cooked = coco_scores.prepare(hyps, refs)
        rouge_rows = np.asarray([coco_scores.rouge_l(h, r) for h, r in zip(hyps, refs)], dtype=np.float64)

        results: Dict[Optional[str], dict] = {}
        cider_rows = {}  # per-record CIDEr with the document frequencies of each group
        for name, idx in targets:
            bleu = coco_scores.bleu_scorer(cooked, idx)
            bleu_scores, _ = bleu.compute_score(option="closest", verbose=0)
            if any(refs[i] for i in idx):
                cider_score, cider_rows[name] = coco_scores.group_scores(cooked, idx)
            else:  # no reference n-gram at all: pycocoevalcap itself would fail on max([])
                cider_score, cider_rows[name] = 0.0, np.zeros(len(idx))
            results[name] = {f"BLEU-{k + 1}": float(bleu_scores[k]) for k in range(4)}
            results[name]["ROUGE-L"] = float(np.mean(rouge_rows[idx]))
            results[name]["CIDEr"] = float(cider_score)

        meteor_thread.join()
        if "error" in meteor_out:
            raise meteor_out["error"]
        stats = meteor_out["stats"]
        for (name, _), corpus in zip(targets, meteor_out["corpus"]):
            results[name]["METEOR"] = corpus

        spice_rows, spice_reason = _spice_scores({i: [refs[i]] for i in range(n)}, {i: [hyps[i]] for i in range(n)})
        for name, idx in targets:
            results[name]["SPICE"] = None if spice_rows is None else _nan_to_none(np.mean(spice_rows[idx]))

        per_modality = {
            m: add_mbmr({"n": int(len(idx)), **{k: results[m][k] for k in CAPTION_METRICS}}) for m, idx in groups.items()
        }
        out = {
            "task": task,
            "n": n,
            "per_modality": per_modality,
            "macro": add_mbmr(_macro(per_modality, CAPTION_METRICS)),
            "micro": add_mbmr({k: results[None][k] for k in CAPTION_METRICS}),
        }

        if bootstrap:
            out["ci95"], warning = _caption_intervals(
                groups, cooked, stats, rouge_rows, cider_rows, spice_rows, results[None], meteor, bootstrap, seed
            )

    out["spice_unavailable_reason"] = spice_reason
    out["word_limit"] = {
        "limit": MAX_CAPTION_WORDS,
        "note": "every scorer saw at most the first `limit` PTB tokens of a response or reference",
        "responses_cut": hyps_cut,
        "references_cut": refs_cut,
    }
    out["definitions"] = dict(CAPTION_DEFINITIONS)
    if bootstrap:
        out.update(
            _bootstrap_info(
                bootstrap,
                seed,
                "; BLEU and METEOR re-pool the resampled n-gram / alignment statistics, ROUGE-L, CIDEr "
                "and SPICE average resampled per-record scores (CIDEr's document frequencies fixed)",
            )
        )
        if warning:
            out["bootstrap"]["warning"] = warning
    return out


def _caption_intervals(groups, cooked, meteor_stats, rouge_rows, cider_rows, spice_rows, micro, meteor, reps, seed):
    """Bootstrap intervals of the caption metrics, and a warning if pooling misses the corpus scores."""
    n = len(cooked)
    cider_by_record = np.zeros(n)
    for m, idx in groups.items():
        cider_by_record[idx] = cider_rows[m]
    bleu_rows = np.asarray([_bleu_stats(record.bleu_test) for record in cooked], dtype=np.float64)
    additive = {
        f"BLEU-{k + 1}": AdditiveMetric(bleu_rows, lambda sums, count, k=k: bleu_from_sums(sums)[:, k]) for k in range(4)
    }
    additive["METEOR"] = AdditiveMetric(meteor_pooling_rows(meteor_stats), _meteor_finish(meteor))
    additive["ROUGE-L"] = AdditiveMetric(rouge_rows[:, None], _mean)
    additive["CIDEr"] = AdditiveMetric(cider_by_record[:, None], _mean, micro_rows=cider_rows[None][:, None])
    if spice_rows is not None:
        additive["SPICE"] = AdditiveMetric(spice_rows[:, None], _mean)
    gaps = _pooling_gap(additive, micro, n)
    warning = None
    if gaps:
        warning = (
            "pooled statistics do not reproduce the corpus score of "
            + ", ".join(f"{k} (off by {v:.2e})" for k, v in gaps.items())
            + "; their intervals are approximate"
        )
    return bootstrap_intervals(additive, groups, reps, seed), warning


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


# ---------------------------------------------------------------------------------------------
# One entry point for every task


def _score_task(records, task, iou_threshold, bootstrap, seed, box_format, min_pixels, max_pixels) -> dict:
    if task == VG:
        return score_vg(records, iou_threshold, bootstrap, seed, box_format, min_pixels, max_pixels)
    if task == RO:
        return score_ro(records, bootstrap, seed)
    return score_captions(records, task, bootstrap, seed)


def record_turn(record: dict) -> int:
    """The turn index a prediction answers (0, the first turn upstream scores, when absent)."""
    return int(record.get("turn") or 0)


def score_records(
    records: Sequence[dict],
    task: str,
    iou_threshold: float = 0.5,
    bootstrap: int = 0,
    seed: int = 0,
    clean: str = "none",
    box_format: str = DEFAULT_BOX_FORMAT,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> dict:
    """Score records of one task; ``clean`` is applied to each response first (see :func:`clean_response`).

    VG responses are read in ``box_format``. Records of several turns (``--all_turns``
    predictions) are scored together and, under ``per_turn``, each turn index on its own."""
    task = check_task(task)
    if clean not in CLEAN_MODES:
        raise ValueError(f"unknown clean mode {clean!r}; expected one of {', '.join(CLEAN_MODES)}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if not records:
        raise ValueError(f"no {task} records to score")
    if clean != "none":
        records = [dict(r, response=clean_response(r.get("response"), clean)) for r in records]
    options = (iou_threshold, bootstrap, seed, box_format, min_pixels, max_pixels)
    out = _score_task(records, task, *options)
    turns = sorted({record_turn(r) for r in records})
    if len(turns) > 1:
        out["per_turn"] = {}
        for turn in turns:
            subset = [r for r in records if record_turn(r) == turn]
            scores = _score_task(subset, task, *options)
            out["per_turn"][str(turn)] = {k: scores[k] for k in ("n", "per_modality", "macro", "micro")}
    out["clean"] = clean
    return out
