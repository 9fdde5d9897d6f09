"""Check Med-GRIT JSON / JSONL files and their images; print what would be skipped and why.

    python -m paddlemix.tools.validate_medgrit --json_path test_VG.json --image_root SAMed2Dv1/images [--strict]

Lenient (default): lists every problem and exits 0. ``--strict``: stops at the first problem and
exits 2 with its message (the exit codes of :mod:`paddlemix.cli`).
"""

import argparse
import sys

from paddlemix.bird.jsonio import write_json_atomic
from paddlemix.datasets.medgrit import validate_medgrit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json_path", nargs="+", required=True, help="one or more Med-GRIT .json / .jsonl files")
    parser.add_argument("--image_root", required=True, help="folder the records' images are relative to")
    parser.add_argument("--strict", action="store_true", help="stop with exit code 2 at the first problem")
    parser.add_argument("--no_image_check", action="store_true", help="do not open the images")
    parser.add_argument("--max_issues", type=int, default=50, help="how many problem lines to print")
    parser.add_argument("--report_json", default=None, help="also write the full report here")
    args = parser.parse_args(argv)

    report = validate_medgrit(args.json_path, args.image_root, strict=args.strict, check_images=not args.no_image_check)
    print(report.format(max_issues=args.max_issues))
    if args.report_json:
        write_json_atomic(args.report_json, report.to_dict(), indent=2)
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
