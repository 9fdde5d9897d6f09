"""Score a prediction JSONL file per modality and write its metrics JSON.

    python -m paddlemix.tools.eval --pred_file pred_VG.jsonl --out_json metrics_VG.json [--task VG] [--bootstrap 1000]

Prints the table of :func:`paddlemix.bird.metrics.evaluate.format_table`; bad input exits 2 with
one ``error:`` line naming the file and line (:mod:`paddlemix.cli`). Imports neither paddle nor
paddlenlp.
"""

import argparse
import sys
from typing import Optional, Sequence

from paddlemix.bird.box_formats import BOX_FORMATS, DEFAULT_BOX_FORMAT, DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from paddlemix.bird.metrics.evaluate import evaluate_file, format_table, write_metrics
from paddlemix.bird.metrics.params import CLEAN_MODES, Params
from paddlemix.bird.metrics.qwen_grounding import PROTOCOL
from paddlemix.bird.tasks import SCORED_TASKS
from paddlemix.cli import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Score BiRD predictions (prediction JSONL) per modality.")
    parser.add_argument("--task", type=str.upper, choices=SCORED_TASKS, help="task to score (required if the file has no 'task' fields)")
    parser.add_argument("--pred_file", required=True, help="prediction JSONL written by inference")
    parser.add_argument("--out_json", required=True, help="where to write the metrics JSON")
    parser.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for 95%% intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--clean", choices=CLEAN_MODES, default="none", help="'upstream' strips raw special tokens as the original scripts did")
    parser.add_argument("--iou", type=float, default=0.5, help="VG IoU threshold")
    parser.add_argument("--box_format", choices=BOX_FORMATS, default=DEFAULT_BOX_FORMAT,
                        help="how VG responses write boxes (see paddlemix.bird.box_formats); default: Qwen-VL's grid")
    parser.add_argument("--image_root", default=None,
                        help="folder of the records' images, to read their size for the pixel box formats")
    parser.add_argument("--min_pixels", type=int, default=DEFAULT_MIN_PIXELS, help="qwen25_vl: smart_resize min_pixels")
    parser.add_argument("--max_pixels", type=int, default=DEFAULT_MAX_PIXELS, help="qwen25_vl: smart_resize max_pixels")
    parser.add_argument("--protocol", choices=("bird", PROTOCOL), default="bird",
                        help=f"bird: BiRD's metrics (default); {PROTOCOL}: Qwen-VL's Precision@1 (VG, phrase pre-filled)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    params = Params(
        iou_threshold=args.iou, bootstrap=args.bootstrap, seed=args.seed, clean=args.clean,
        box_format=args.box_format, min_pixels=args.min_pixels, max_pixels=args.max_pixels,
    )
    metrics = evaluate_file(args.pred_file, args.task, params, args.image_root, args.protocol)
    write_metrics(metrics, args.out_json)
    print(format_table(metrics))
    print(f"wrote {args.out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
