"""Summaries of several metrics files: one table, rows task × metric, columns modalities + macro.

``python -m paddlemix.bird.report --out_dir DIR metrics_VG.json metrics_RO.json ...`` writes
``DIR/summary.csv`` (full precision, empty cell where a task has no such modality or a metric is
null) and ``DIR/summary.md`` (the same table, four decimals, with each task's record count).
"""

import argparse
import csv
import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

from .evaluate import metric_columns
from .metrics import modality_order
from .tasks import SCORED_TASKS


def load_metrics(paths: Sequence[str]) -> List[dict]:
    """Metrics dicts in task order (VG, RO, GC, MII), whatever order the paths come in."""
    loaded = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            metrics = json.load(handle)
        if not isinstance(metrics, dict) or metrics.get("task") not in SCORED_TASKS or "per_modality" not in metrics:
            raise ValueError(f"{path}: not a BiRD metrics file (needs 'task' and 'per_modality')")
        loaded.append(metrics)
    return sorted(loaded, key=lambda m: SCORED_TASKS.index(m["task"]))


def summary_table(all_metrics: Sequence[dict]) -> Tuple[List[str], List[List[object]]]:
    """Header and rows (task, metric, one value per modality, macro); None where there is no value."""
    modalities = modality_order({m for metrics in all_metrics for m in metrics["per_modality"]})
    header = ["task", "metric"] + modalities + ["macro"]
    rows = []
    for metrics in all_metrics:
        for column in metric_columns(metrics):
            values = [metrics["per_modality"].get(m, {}).get(column) for m in modalities]
            rows.append([metrics["task"], column] + values + [metrics["macro"].get(column)])
    return header, rows


def write_summary(metrics_files: Sequence[str], out_dir: str) -> Tuple[str, str]:
    """Write ``summary.csv`` and ``summary.md`` into ``out_dir``; return their paths."""
    all_metrics = load_metrics(metrics_files)
    header, rows = summary_table(all_metrics)
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "summary.csv")
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row[:2] + ["" if v is None else repr(float(v)) for v in row[2:]])
    md_path = os.path.join(out_dir, "summary.md")
    with open(md_path, "w", encoding="utf-8") as handle:
        handle.write("# BiRD evaluation summary\n\n")
        for metrics in all_metrics:
            source = f" from `{metrics['pred_file']}`" if metrics.get("pred_file") else ""
            handle.write(f"- {metrics['task']}: {metrics['n']} records{source}\n")
        handle.write("\nValues are fractions (CIDEr unbounded); macro is the unweighted mean over modalities.\n\n")
        handle.write("| " + " | ".join(header) + " |\n")
        handle.write("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|\n")
        for row in rows:
            cells = list(row[:2]) + ["" if v is None else f"{v:.4f}" for v in row[2:]]
            handle.write("| " + " | ".join(cells) + " |\n")
        reasons = {m["task"]: m["spice_unavailable_reason"] for m in all_metrics if m.get("spice_unavailable_reason")}
        for task, reason in reasons.items():
            handle.write(f"\n{task} SPICE is empty: {reason}\n")
    return md_path, csv_path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise BiRD metrics files into summary.md and summary.csv.")
    parser.add_argument("--out_dir", required=True, help="directory for summary.md and summary.csv")
    parser.add_argument("metrics_files", nargs="+", help="metrics_<TASK>.json files written by eval.py")
    args = parser.parse_args(argv)
    try:
        md_path, csv_path = write_summary(args.metrics_files, args.out_dir)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {md_path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
