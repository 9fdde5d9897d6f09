"""The Java side of the caption metrics (PTB tokenizer, METEOR 1.5, SPICE) behind one small interface, :class:`JavaScorers`.

pycocoevalcap starts its Java programs once per scorer call; here each starts once per file. The
PTB tokenizer runs once over every text; one METEOR process is fed through pipes (a writer thread
per batch, so the pipe never fills while we wait for answers) and aligns in the background while
Python scores the rest; SPICE runs only when Stanford CoreNLP is already installed, since
pycocoevalcap would download it. Everything about jar paths, flags and METEOR's statistics lines
stays in this module.
"""

import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .records import as_text


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
    lines = [_LINE_BREAK_RE.sub(" ", as_text(t)) for t in texts]
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


def spice_scores(gts: Dict[int, List[str]], res: Dict[int, List[str]]) -> Tuple[Optional[np.ndarray], Optional[str]]:
    """Per-record SPICE F-scores (pycocoevalcap's ``gts`` / ``res`` keyed 0..n-1 in file order), or
    None and the reason SPICE did not run."""
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


class JavaScorers:
    """What the caption scorer asks of Java, for one file: tokenise, METEOR (in the background, and
    re-pooled for the bootstrap), SPICE. A context manager: leaving it stops METEOR."""

    def __init__(self):
        self._meteor: Optional[MeteorProcess] = None
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meteor")

    tokenize = staticmethod(ptb_tokenize)
    spice = staticmethod(spice_scores)

    def _process(self) -> MeteorProcess:
        if self._meteor is None:
            self._meteor = MeteorProcess()
        return self._meteor

    def meteor_in_background(
        self, hyps: Sequence[str], refs: Sequence[str], groups: Sequence[np.ndarray]
    ) -> Future:
        """Start aligning ``hyps`` with ``refs``; the future gives every record's METEOR statistics
        line and the corpus METEOR of each group of record indices."""
        meteor = self._process()

        def run():
            stats = meteor.statistics(hyps, [[r] for r in refs])
            return stats, [meteor.evaluate([stats[i] for i in idx])[1] for idx in groups]

        return self._background.submit(run)

    def meteor_of_pooled(self, sums: np.ndarray) -> np.ndarray:
        """METEOR of each row of summed :func:`meteor_pooling_rows` (one score per row)."""
        scores, _ = self._process().evaluate([" ".join(repr(float(x)) for x in row) for row in sums])
        return np.asarray(scores)

    def close(self) -> None:
        if self._meteor is not None:
            self._meteor.close()  # first: a background read blocked on METEOR then ends
        self._background.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
