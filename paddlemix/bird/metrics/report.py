"""Summaries of metrics files: one run's table (rows task × metric, columns modalities + macro), or
several runs side by side (rows task × metric, one column per run).

``python -m paddlemix.tools.report --out_dir DIR metrics_VG.json metrics_RO.json ...`` writes
``DIR/summary.csv`` (full precision, empty cell where a task has no such modality or a metric is
null) and ``DIR/summary.md`` (the same table, four decimals, with each task's record count).

``python -m paddlemix.tools.report --out_dir DIR --compare trained=RUN1 untrained=RUN2 ...`` reads
the ``metrics_<TASK>.json`` files in each run directory and writes ``DIR/summary.md`` (macro and
micro tables, a column per run and the best run per metric) and ``DIR/summary.csv``.
"""

import csv
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..jsonio import atomic_text
from ..tasks import SCORED_TASKS
from . import image_use as image_use_vg
from .evaluate import load_metrics, load_metrics_dir, metric_columns, score_warnings
from .params import Params
from .records import modality_order


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
    with atomic_text(csv_path) as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row[:2] + ["" if v is None else repr(float(v)) for v in row[2:]])
    md_path = os.path.join(out_dir, "summary.md")
    with atomic_text(md_path) as handle:
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
        for metrics in all_metrics:
            for warning in score_warnings(metrics):
                handle.write(f"\n**Check:** {warning}\n")
    return md_path, csv_path


# Metrics where a smaller value is the better one (the rest: larger is better).
LOWER_IS_BETTER = frozenset({"parse_failure_rate"})


def load_run(run_dir: str) -> List[dict]:
    """The metrics of one run: every ``metrics_<TASK>.json`` in ``run_dir``, in task order."""
    metrics = list(load_metrics_dir(run_dir).values())
    if not metrics:
        raise ValueError(f"{run_dir}: no metrics_<TASK>.json files (run eval.py or eval_all.sh first)")
    return metrics


def best_runs(metric: str, values: Dict[str, Optional[float]]) -> List[str]:
    """The run(s) with the best value of ``metric`` (ties all listed); none unless two runs have a value."""
    scored = {run: v for run, v in values.items() if v is not None}
    if len(scored) < 2:
        return []
    best = min(scored.values()) if metric in LOWER_IS_BETTER else max(scored.values())
    return [run for run, v in scored.items() if v == best]


def comparison_table(
    runs: Sequence[Tuple[str, Sequence[dict]]], average: str = "macro"
) -> Tuple[List[str], List[List[object]]]:
    """Header and rows (task, metric, one value per run, best run(s)) of the ``average`` ("macro"
    or "micro") values; None where a run did not score that task or the metric is null."""
    if average not in ("macro", "micro"):
        raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
    by_run = [(name, {m["task"]: m for m in metrics}) for name, metrics in runs]
    tasks = [t for t in SCORED_TASKS if any(t in per_task for _, per_task in by_run)]
    header = ["task", "metric"] + [name for name, _ in by_run] + ["best"]
    rows = []
    for task in tasks:
        columns = next(metric_columns(per_task[task]) for _, per_task in by_run if task in per_task)
        for column in columns:
            values = {name: per_task[task][average].get(column) if task in per_task else None
                      for name, per_task in by_run}
            rows.append([task, column] + list(values.values()) + [", ".join(best_runs(column, values))])
    return header, rows


# Per modality in the comparison: the headline score (the first metric column, e.g. VG's Recall@t at
# the file's own threshold) of the tasks whose image-blind runs (baselines, the shuffled-image
# ablation) say whether a model uses the image.
PER_MODALITY_TASKS = ("VG", "RO")


def per_modality_comparison(runs: Sequence[Tuple[str, Sequence[dict]]]) -> Tuple[List[str], List[List[object]]]:
    """Header and rows (task metric, modality, one value per run, best run(s)) of the headline metric
    of ``PER_MODALITY_TASKS``, per modality; None where a run has no score there."""
    by_run = [(name, {m["task"]: m for m in metrics}) for name, metrics in runs]
    header = ["task metric", "modality"] + [name for name, _ in by_run] + ["best"]
    rows = []
    for task in PER_MODALITY_TASKS:
        scored = [per_task[task] for _, per_task in by_run if task in per_task]
        if not scored:
            continue
        metric = metric_columns(scored[0])[0]
        present = [metrics["per_modality"] for metrics in scored]
        for modality in modality_order({m for per_modality in present for m in per_modality}):
            values = {
                name: per_task[task]["per_modality"].get(modality, {}).get(metric) if task in per_task else None
                for name, per_task in by_run
            }
            rows.append([f"{task} {metric}", modality] + list(values.values()) + [", ".join(best_runs(metric, values))])
    return header, rows


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 3) + ["---"]) + "|"]
    for row in rows:
        cells = list(row[:2]) + ["" if v is None else f"{v:.4f}" for v in row[2:-1]] + [row[-1]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(
    runs: Sequence[Tuple[str, str]],
    out_dir: str,
    notes: Sequence[str] = (),
    image_use: Optional[Tuple[str, str]] = None,
) -> Tuple[str, str]:
    """Compare runs given as ``(name, directory with metrics_<TASK>.json)``: write ``summary.md``
    (macro and micro tables, VG Recall@0.5 and RO accuracy per modality, with ``image_use`` — two VG
    prediction files, real and shuffled images — their paired comparison
    (:mod:`paddlemix.bird.metrics.image_use`), then ``notes`` as lines) and ``summary.csv`` into ``out_dir``."""
    if not runs:
        raise ValueError("no runs to compare")
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must differ: {names}")
    loaded = [(name, load_run(run_dir)) for name, run_dir in runs]
    paired = image_use_vg.paired_vg_files(*image_use) if image_use else None
    tables = {average: comparison_table(loaded, average) for average in ("macro", "micro")}
    os.makedirs(out_dir, exist_ok=True)
    csv_path = os.path.join(out_dir, "summary.csv")
    with atomic_text(csv_path) as handle:
        writer = csv.writer(handle)
        writer.writerow(["average"] + tables["macro"][0])
        for average, (_, rows) in tables.items():
            for row in rows:
                writer.writerow([average] + row[:2] + ["" if v is None else repr(float(v)) for v in row[2:-1]] + [row[-1]])
    md_path = os.path.join(out_dir, "summary.md")
    with atomic_text(md_path) as handle:
        handle.write("# BiRD evaluation: " + " vs ".join(names) + "\n\n")
        for (name, run_dir), (_, metrics) in zip(runs, loaded):
            counts = ", ".join(f"{m['task']} {m['n']}" for m in metrics)
            handle.write(f"- {name}: `{run_dir}` (records scored: {counts})\n")
        handle.write(
            "\nValues are fractions (CIDEr unbounded); an empty cell is a task the run did not answer or a "
            "null metric. `best` names the run with the highest value (lowest for parse_failure_rate).\n"
        )
        for average, (header, rows) in tables.items():
            what = "unweighted mean over modalities" if average == "macro" else "mean over records"
            handle.write(f"\n## {average} ({what})\n\n")
            handle.write(_markdown_table(header, rows))
        header, rows = per_modality_comparison(loaded)
        if rows:
            handle.write("\n## per modality\n\n")
            handle.write(_markdown_table(header, rows))
        if paired:
            handle.write(f"\n## VG image use, paired per question\n\n`{image_use[0]}` vs `{image_use[1]}`:\n\n")
            handle.write("\n".join(image_use_vg.markdown(paired, Params().iou_threshold)) + "\n")
        if notes:
            handle.write("\n" + "\n".join(notes) + "\n")
    return md_path, csv_path
