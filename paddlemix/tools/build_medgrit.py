"""Build Med-GRIT-style train/test files from an SA-Med2D-20M folder.

    python -m paddlemix.tools.build_medgrit --sa_root SAMed2Dv1 --out_dir data/medgrit [--seed 0]
        [--test_ratio 0.1] [--min_mask_area 16] [--mask_json F] [--class_json F] [--strict]
        [--max_turns 8] [--max_mii_regions 10] [--split_turns VG,RO|all] [--test_questions 1]
        [--train_views microscopy [--view_tasks VG,RO]]
        [--rewrite_endpoint URL --rewrite_model NAME]

Writes train.json, test_{VG,RO,GC,MII}.json and stats.json to ``--out_dir``; the records' images
are relative to ``<sa_root>/images``. See :mod:`paddlemix.bird.construct` for what is generated.
"""

import argparse
import json
import os
import sys

from paddlemix.bird.construct.build import build_medgrit
from paddlemix.bird.construct.paraphrase import ChatRewriter
from paddlemix.bird.samed2d import ConstructionError
from paddlemix.bird.tasks import TASKS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sa_root", required=True, help="folder with images/, masks/ and the JSON files")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test_ratio", type=float, default=0.1, help="share of cases (per modality) in test")
    parser.add_argument("--min_mask_area", type=int, default=16, help="skip masks with fewer foreground pixels")
    parser.add_argument("--mask_json", default=None, help="image -> masks JSON (default <sa_root>/SAMed2D_v1.json)")
    parser.add_argument("--class_json", default=None, help="class mapping JSON (default: the *class*.json in sa_root)")
    parser.add_argument("--strict", action="store_true", help="stop at the first structural error in the input")
    parser.add_argument("--max_turns", type=int, default=8, help="turns per train record (one task, one image)")
    parser.add_argument("--max_mii_regions", type=int, default=10, help="structures listed in an MII answer")
    parser.add_argument("--split_turns", default="",
                        help="comma-separated tasks (or 'all') whose images with more than max_turns turns give "
                             "several train records (ids <stem>--q2, ...) instead of a random subset of max_turns")
    parser.add_argument("--test_questions", type=int, default=1,
                        help="single-turn test records per image and task (ids <stem>, <stem>--q2, ...; "
                             "upstream's test files have one)")
    parser.add_argument("--train_views", default="",
                        help="comma-separated modalities (as in the image names, e.g. 'microscopy') whose training "
                             "images are also shown in their seven flips and quarter turns (records with a 'view' "
                             "field, ids <stem>--<view>); only for modalities whose labels carry no side")
    parser.add_argument("--view_tasks", default="all",
                        help="comma-separated tasks (or 'all') that get the views' records")
    parser.add_argument("--rewrite_endpoint", default=None, help="OpenAI-compatible base URL or /chat/completions URL")
    parser.add_argument("--rewrite_model", default=None)
    parser.add_argument("--rewrite_api_key_env", default="OPENAI_API_KEY", help="environment variable holding the key")
    parser.add_argument("--rewrite_workers", type=int, default=4)
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)

    split_tasks = TASKS if args.split_turns == "all" else [t for t in args.split_turns.split(",") if t]
    view_tasks = TASKS if args.view_tasks == "all" else [t for t in args.view_tasks.split(",") if t]
    view_modalities = [m for m in args.train_views.split(",") if m]
    rewriter = None
    if args.rewrite_endpoint:
        if not args.rewrite_model:
            parser.error("--rewrite_endpoint needs --rewrite_model")
        api_key = os.environ.get(args.rewrite_api_key_env)
        rewriter = ChatRewriter(args.rewrite_endpoint, args.rewrite_model, api_key=api_key)
    try:
        stats = build_medgrit(
            args.sa_root,
            args.out_dir,
            seed=args.seed,
            test_ratio=args.test_ratio,
            min_mask_area=args.min_mask_area,
            mask_json=args.mask_json,
            class_json=args.class_json,
            strict=args.strict,
            max_turns=args.max_turns,
            max_mii_regions=args.max_mii_regions,
            split_tasks=split_tasks,
            test_questions=args.test_questions,
            view_modalities=view_modalities,
            view_tasks=view_tasks,
            rewriter=rewriter,
            rewrite_workers=args.rewrite_workers,
            progress=not args.no_progress,
        )
    except ConstructionError:
        raise  # bad input: paddlemix.cli.run reports it (exit 2); not an option value for parser.error
    except ValueError as exc:  # a bad option value (the builder checks them before reading anything)
        parser.error(str(exc))
    summary = {k: stats[k] for k in ("images", "masks", "cases", "skipped", "rewrite")}
    summary["test_records"] = stats["test"]["records"]
    summary["train_qa_pairs"] = stats["train"]["qa_pairs"]
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out_dir}/train.json, test_{{VG,RO,GC,MII}}.json, stats.json")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
