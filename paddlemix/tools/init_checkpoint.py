"""Save a randomly initialised Qwen-VL preset as a checkpoint: the "untrained" model a run starts from.

    python -m paddlemix.tools.init_checkpoint --preset tiny --seed 42 [--resampler_init spatial|layout] --output_dir DIR

The weights are exactly those ``supervised_finetune`` builds for ``model_preset`` with the same
``seed`` and ``resampler_init`` (both call :func:`paddlemix.models.qwen_vl.builder.build_model`), so
scoring this checkpoint shows what training added. The tokenizer files are written next to the
weights, so ``infer.py`` and ``load_model`` read the directory like any trained checkpoint.
"""

import argparse
import os
import sys


def init_checkpoint(preset: str, seed: int, output_dir: str, resampler_init: str = "random") -> str:
    """Build ``preset`` with ``seed`` and ``resampler_init`` as training does, save model and tokenizer
    to ``output_dir``."""
    from paddlemix.models.qwen_vl.builder import build_model, load_tokenizer

    model = build_model(preset=preset, seed=seed, resampler_init=resampler_init)
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    load_tokenizer(None, model.config.image_span).save_pretrained(output_dir)
    return output_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, help="a Qwen-VL preset name, e.g. tiny")
    parser.add_argument("--seed", type=int, default=42, help="the training run's seed (default %(default)s)")
    parser.add_argument(
        "--resampler_init", default="random", choices=("random", "spatial", "layout"),
        help="the training run's resampler_init (default %(default)s)",
    )
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    from paddlemix.models.qwen_vl.configuration import PRESETS

    if args.preset not in PRESETS:
        parser.error(f"unknown preset {args.preset!r}; known: {', '.join(sorted(PRESETS))}")
    init_checkpoint(args.preset, args.seed, args.output_dir, args.resampler_init)
    print(
        f"wrote the {args.resampler_init}-initialised {args.preset} model (seed {args.seed}) to {args.output_dir}"
    )
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
