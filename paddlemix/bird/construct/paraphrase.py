"""The optional rewrite step: GC and MII answers paraphrased by an OpenAI-compatible endpoint.

A paraphrase is kept only if its ``<ref>``/``<box>`` markup is exactly the original's, in order;
rewriting makes the output only as deterministic as the endpoint.
"""

import json
import re
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

from tqdm import tqdm

from paddlemix.bird.tasks import GC, MII

# A whole <ref>…</ref> or <box>…</box> span: the kind and what is inside.
_REF_OR_BOX_SPAN_RE = re.compile(r"<(ref|box)>(.*?)</\1>", re.S)
REWRITE_SYSTEM_PROMPT = (
    "You rewrite short descriptions of medical images in different words. Keep the meaning and "
    "every fact. Copy every <ref>...</ref> and <box>...</box> span exactly as written, in the "
    "same order, and add no new ones. Reply with the rewritten text only."
)


def markup(text: str) -> List[Tuple[str, str]]:
    """The ``<ref>``/``<box>`` spans of a text in order, whitespace inside boxes ignored."""
    return [
        (kind, re.sub(r"\s+", "", body) if kind == "box" else body)
        for kind, body in _REF_OR_BOX_SPAN_RE.findall(text)
    ]


def keeps_markup(original: str, paraphrase: str) -> bool:
    """True when a paraphrase is non-empty and has exactly the original's refs and boxes, in order."""
    tags = ("<ref>", "</ref>", "<box>", "</box>")
    if not paraphrase.strip() or any(paraphrase.count(t) != original.count(t) for t in tags):
        return False
    return markup(paraphrase) == markup(original)


class ChatRewriter:
    """Paraphrases text through an OpenAI-compatible ``/chat/completions`` endpoint (urllib only)."""

    def __init__(
        self, endpoint: str, model: str, api_key: Optional[str] = None, timeout: float = 60.0, temperature: float = 0.7
    ):
        url = endpoint.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.temperature = temperature

    def __call__(self, text: str) -> str:
        body = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": [{"role": "system", "content": REWRITE_SYSTEM_PROMPT}, {"role": "user", "content": text}],
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode("utf-8"), headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            reply = json.load(response)
        return reply["choices"][0]["message"]["content"].strip()


def rewrite_answers(
    records: Sequence[dict], rewrite, tasks: Sequence[str] = (GC, MII), workers: int = 4, progress: bool = False
) -> Counter:
    """Replace GC/MII answers in place by paraphrases that keep their markup.

    ``rewrite`` is any ``text -> text`` callable (a :class:`ChatRewriter`). Returns counts of
    ``rewritten``, ``rejected`` (markup changed or empty; the original is kept) and ``failed``
    (the call raised; the original is kept).
    """
    slots = [(rec, i) for rec in records if rec["task"] in tasks for i in range(len(rec["conversations"]))]

    def one(slot):
        rec, i = slot
        original = rec["conversations"][i][1]
        try:
            paraphrase = rewrite(original)
        except Exception:  # one failed call (network, bad reply) must not stop the build
            return "failed"
        if not isinstance(paraphrase, str) or not keeps_markup(original, paraphrase):
            return "rejected"
        rec["conversations"][i][1] = paraphrase
        return "rewritten"

    counts = Counter({"rewritten": 0, "rejected": 0, "failed": 0})
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for outcome in tqdm(pool.map(one, slots), total=len(slots), desc="rewrite", disable=not progress):
            counts[outcome] += 1
    return counts
