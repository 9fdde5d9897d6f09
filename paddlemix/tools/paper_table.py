"""Print and write the paper's results table for a run.

    python -m paddlemix.tools.paper_table --pred_dir DIR [--metrics_dir DIR] [--out_dir DIR]

Uses ``metrics_<TASK>.json`` from ``--metrics_dir`` (default: ``--pred_dir``) where present and
scores ``pred_<TASK>.jsonl`` otherwise (VG, RO, GC, MII and QA for LLaVA-Med); writes
``paper_table.md`` and ``paper_table.json`` to ``--out_dir`` (default: the metrics dir).
"""

import argparse
import os
import sys

from paddlemix.bird.metrics.evaluate import evaluate_file, load_metrics_dir, write_metrics
from paddlemix.bird.metrics.paper_table import PAPER_TASKS, write_paper_table


def collect_metrics(pred_dir: str, metrics_dir: str, score_missing: bool = True) -> dict:
    metrics = load_metrics_dir(metrics_dir, PAPER_TASKS)
    for task in PAPER_TASKS if score_missing else ():
        pred = os.path.join(pred_dir, f"pred_{task}.jsonl")
        if task not in metrics and os.path.isfile(pred):
            print(f"paper_table: scoring {pred}", file=sys.stderr)
            metrics[task] = evaluate_file(pred, task)
            write_metrics(metrics[task], os.path.join(metrics_dir, f"metrics_{task}.json"))
    return metrics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pred_dir", required=True, help="folder with pred_<TASK>.jsonl")
    p.add_argument("--metrics_dir", default=None, help="folder with metrics_<TASK>.json (default: pred_dir)")
    p.add_argument("--out_dir", default=None, help="where to write paper_table.md/json (default: metrics_dir)")
    p.add_argument("--metrics_only", action="store_true", help="use existing metrics files, score nothing")
    args = p.parse_args(argv)
    metrics_dir = args.metrics_dir or args.pred_dir
    metrics = collect_metrics(args.pred_dir, metrics_dir, score_missing=not args.metrics_only)
    if not metrics:  # an empty table from a wrong folder would look like a run that scored nothing
        raise FileNotFoundError(f"{metrics_dir}: no metrics_<TASK>.json"
                                + ("" if args.metrics_only else f" and no pred_<TASK>.jsonl in {args.pred_dir}"))
    md_path, json_path, markdown = write_paper_table(metrics, args.out_dir or metrics_dir)
    print(markdown)
    print(f"wrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
