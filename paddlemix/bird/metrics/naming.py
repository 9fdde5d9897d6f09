"""RO (referring object classification) scores: upstream's lenient word-containment accuracy and a strict exact match."""

import re
import unicodedata

import numpy as np

from ..tasks import RO
from .aggregate import AdditiveMetric, bootstrap_info, mean, summarise
from .params import Params
from .records import as_text, group_by_modality

# What normalize_answer deletes: <ref>/</ref> tags and whole <box>...</box> spans (an unclosed
# <box> runs to the end), so a grounded answer compares by its words alone.
_REF_TAGS_AND_BOX_SPANS_RE = re.compile(r"<box>.*?(?:</box>|$)|</?ref>|</?box>", re.S)


def ro_accuracy(annotation: str, response: str) -> bool:
    """Upstream's RO score: every word of the lower-cased reference occurs in the lower-cased response.

    Words are whitespace-separated and matched as substrings (``kidney`` is found in
    ``kidneys``), so it is lenient by design.
    """
    response = as_text(response).lower()
    return all(word in response for word in as_text(annotation).lower().split())


def normalize_answer(text: str) -> str:
    """Lower-case, drop ``<ref>`` tags and whole ``<box>…</box>`` spans, punctuation → space, one space."""
    text = _REF_TAGS_AND_BOX_SPANS_RE.sub(" ", as_text(text).lower())
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


def score_ro(records, params: Params = Params()) -> dict:
    """Referring object classification metrics of records."""
    rows = [
        [float(ro_accuracy(r.get("annotation"), r.get("response"))), float(ro_exact_match(r.get("annotation"), r.get("response")))]
        for r in records
    ]
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
    metrics = {
        "accuracy": AdditiveMetric(table[:, 0:1], mean),
        "exact_match": AdditiveMetric(table[:, 1:2], mean),
    }
    out = {"task": RO}
    out.update(summarise(len(records), group_by_modality(records), metrics, params))
    out["definitions"] = dict(RO_DEFINITIONS)
    if params.bootstrap:
        out.update(bootstrap_info(params))
    return out
