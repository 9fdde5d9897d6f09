"""The paper's results table next to this run's numbers.

BiRD (MICCAI 2024) reports, in %, on the Med-GRIT-270k test split and on LLaVA-Med's QA set:

    VG  Recall@0.5  53.92      RO  recall (accuracy)  65.33      GC  SPICE  55.23
    MII mBMR        52.17      QA  mBMR (LLaVA-Med)   10.55

"This run" is the macro value (unweighted mean over modalities, the paper's headline) from the
metrics files ``metrics_<TASK>.json`` written by ``python -m paddlemix.tools.eval``. ``mBMR`` is
the mean of BLEU-1..4, METEOR and ROUGE-L, as ClinKD (arXiv 2502.05928) computes it with BiRD's
scripts (see :mod:`paddlemix.bird.metrics.keys`). A metric that could not be computed (SPICE
without its Java models) is shown as unavailable with the reason.
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..jsonio import atomic_text, write_json_atomic

# (task, metric key in the metrics file, label, the paper's value in %)
PAPER_ROWS: Tuple[Tuple[str, str, str, float], ...] = (
    ("VG", "Recall@0.5", "visual grounding, Recall@0.5", 53.92),
    ("RO", "accuracy", "referring object classification, recall", 65.33),
    ("GC", "SPICE", "referring captioning, SPICE", 55.23),
    ("MII", "mBMR", "medical image analysis, mBMR", 52.17),
    ("QA", "mBMR", "LLaVA-Med QA, mBMR", 10.55),
)
PAPER_TASKS = tuple(dict.fromkeys(task for task, _, _, _ in PAPER_ROWS))


def _macro_percent(metrics: dict, key: str) -> Tuple[Optional[float], Optional[str]]:
    """A macro value in % and, when it is missing, why."""
    value = (metrics.get("macro") or {}).get(key)
    if value is None:
        reason = metrics.get(f"{key.lower()}_unavailable_reason") or metrics.get("spice_unavailable_reason")
        return None, reason or f"{key} not in the metrics file"
    return 100.0 * float(value), None


def paper_rows(metrics_by_task: Dict[str, dict]) -> List[dict]:
    """One row per paper number: this run's value, the paper's, the difference (all in %)."""
    rows = []
    for task, key, label, paper in PAPER_ROWS:
        metrics = metrics_by_task.get(task)
        if metrics is None:
            ours, note = None, f"no {task} predictions scored"
        else:
            ours, note = _macro_percent(metrics, key)
        rows.append(
            {
                "task": task,
                "metric": key,
                "label": label,
                "this_run": None if ours is None else round(ours, 2),
                "paper": paper,
                "difference": None if ours is None else round(ours - paper, 2),
                "n": None if metrics is None else metrics.get("n"),
                "note": note,
            }
        )
    return rows


def format_markdown(rows: Sequence[dict]) -> str:
    lines = [
        "| task | metric | this run (%) | paper (%) | difference | n | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ours = "unavailable" if r["this_run"] is None else f"{r['this_run']:.2f}"
        diff = "" if r["difference"] is None else f"{r['difference']:+.2f}"
        n = "" if r["n"] is None else str(r["n"])
        lines.append(f"| {r['task']} | {r['label']} | {ours} | {r['paper']:.2f} | {diff} | {n} | {r['note'] or ''} |")
    lines.append("")
    lines.append("This run: macro average over modalities. mBMR = mean of BLEU-1..4, METEOR and ROUGE-L "
                 "(ClinKD, arXiv 2502.05928, test_metric/eval_MII.py).")
    return "\n".join(lines) + "\n"


def write_paper_table(metrics_by_task: Dict[str, dict], out_dir: str) -> Tuple[str, str, str]:
    """Write ``paper_table.md`` and ``paper_table.json``; returns their paths and the markdown."""
    rows = paper_rows(metrics_by_task)
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, "paper_table.md")
    json_path = os.path.join(out_dir, "paper_table.json")
    markdown = format_markdown(rows)
    with atomic_text(md_path) as f:
        f.write("# This run vs the BiRD paper\n\n" + markdown)
    write_json_atomic(json_path, {"rows": rows, "this_run": "macro over modalities", "units": "%"}, indent=2)
    return md_path, json_path, markdown
