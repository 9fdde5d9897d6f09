"""Summarise metrics files into summary.md and summary.csv: one run's table, or several runs compared.

    python -m paddlemix.tools.report --out_dir DIR metrics_VG.json metrics_RO.json ...
    python -m paddlemix.tools.report --out_dir DIR --compare trained=RUN1 untrained=RUN2 [--note LINE]
        [--image_use REAL_VG_PRED SHUFFLED_VG_PRED]

See :mod:`paddlemix.bird.metrics.report` for what each table holds.
"""

import argparse
import sys
from typing import Optional, Sequence, Tuple

from paddlemix.bird.metrics.report import write_comparison, write_summary
from paddlemix.cli import run


def _parse_run(text: str) -> Tuple[str, str]:
    name, sep, run_dir = text.partition("=")
    if not sep or not name or not run_dir:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, run_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise BiRD metrics files into summary.md and summary.csv.")
    parser.add_argument("--out_dir", required=True, help="directory for summary.md and summary.csv")
    parser.add_argument("metrics_files", nargs="*", help="metrics_<TASK>.json files written by paddlemix.tools.eval")
    parser.add_argument("--compare", nargs="+", type=_parse_run, metavar="NAME=DIR",
                        help="compare runs instead: each DIR holds one run's metrics_<TASK>.json files")
    parser.add_argument("--note", action="append", default=[], help="a line to append to a comparison (repeatable)")
    parser.add_argument("--image_use", nargs=2, metavar=("REAL_VG_PRED", "SHUFFLED_VG_PRED"),
                        help="with --compare: pair a model's VG predictions on the real and on the shuffled test "
                             "images per question (found boxes, records better / worse, sign test)")
    args = parser.parse_args(argv)
    if bool(args.metrics_files) == bool(args.compare):
        parser.error("give either metrics files (one run) or --compare NAME=DIR ... (several runs)")
    if args.image_use and not args.compare:
        parser.error("--image_use goes with --compare")
    if args.compare:
        md_path, csv_path = write_comparison(args.compare, args.out_dir, args.note, args.image_use)
    else:
        md_path, csv_path = write_summary(args.metrics_files, args.out_dir)
    print(f"wrote {md_path} and {csv_path}")
    return 0



if __name__ == "__main__":
    sys.exit(run(main))
