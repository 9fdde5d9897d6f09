"""Write the embedded demo set (SA-Med2D-20M layout) from real images and masks in installed packages.

    python -m paddlemix.tools.build_demo_data --out_dir data/demo_sa [--max_images 400] [--seed 0]

The packages it reads are installed by scripts/install_demo_sources.sh.
"""

import argparse
import sys

from paddlemix.bird.demo_data import DEFAULT_MAX_IMAGES, MissingSourceError, build_demo_set


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", required=True, help="folder to write (empty, or an earlier demo set)")
    parser.add_argument("--max_images", type=int, default=DEFAULT_MAX_IMAGES,
                        help="upper bound on the number of images, shared over the sources (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image subset when capped")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.max_images < 1:
        parser.error("--max_images must be at least 1")
    try:
        manifest = build_demo_set(args.out_dir, max_images=args.max_images, seed=args.seed,
                                  progress=not args.no_progress)
    except (MissingSourceError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    per_modality = ", ".join(f"{m}: {v['images']} images / {v['masks']} masks / {v['cases']} cases"
                             for m, v in sorted(manifest["modalities"].items()))
    print(f"wrote {manifest['images']} images and {manifest['masks']} masks to {args.out_dir} ({per_modality})")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
