"""How much of the image reaches the LLM through the untrained vision path, before any training?

    python benchmarks/study_vision_tokens.py [--preset demo] [--seed 42] [--resampler_init random|spatial|layout]

For 16 MR and 8 CT demo images (``data/demo/sa_med2d/images``, from ``scripts/demo.sh`` or
``build_demo_data``) this prints the mean norm of the image tokens the LLM receives against that of
its token embeddings, and the standard deviation of those tokens across images (does the path say
which image it is?) and across the queries of one image (does it say where?), each as a fraction of
the tokens' RMS. Near 0 means the path hands the LLM one vector whatever the image. Then, over every
third demo image, it fits a least-squares read-out of each token's grid cell (query row and column)
from the token on two thirds of the images and prints its mean error on the rest, in cells: about
2 is chance (the grid's mean distance to its middle), so a small error means each token says where
it is.
"""

import argparse
import glob
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from paddlemix.models.qwen_vl.builder import RESAMPLER_INITS, build_model  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--resampler_init", choices=RESAMPLER_INITS, default="random")
    p.add_argument("--image_dir", default=os.path.join(ROOT, "data/demo/sa_med2d/images"))
    args = p.parse_args(argv)

    import paddle

    from paddlemix.processors.image_processing import QWenVLImageProcessor

    model = build_model(preset=args.preset, seed=args.seed, resampler_init=args.resampler_init)
    config = model.config
    files = (sorted(glob.glob(os.path.join(args.image_dir, "mr*.png")))[::12][:16]
             + sorted(glob.glob(os.path.join(args.image_dir, "ct*.png")))[::10][:8])
    if not files:
        sys.exit(f"no mr*/ct*.png demo images in {args.image_dir}: run build_demo_data first")
    processor = QWenVLImageProcessor(image_size=config.visual["image_size"])
    pixels = paddle.to_tensor(np.stack([processor.transform(f) for f in files]).astype("float32"))
    with paddle.no_grad():
        tokens = model.transformer.visual(pixels).numpy()  # [N images, Q queries, E]
    rms = np.sqrt((tokens ** 2).mean())
    embeddings = model.transformer.wte.weight.numpy()
    print(f"{len(files)} images, preset {args.preset}, seed {args.seed}, resampler_init {args.resampler_init}")
    print(f"image token norm {np.linalg.norm(tokens, axis=-1).mean():.2f}; "
          f"token embedding norm {np.linalg.norm(embeddings, axis=-1).mean():.2f}")
    print(f"std across images / RMS {tokens.std(0).mean() / rms:.2f}; "
          f"std across queries of one image / RMS {tokens.std(1).mean() / rms:.2f}")
    every_third = sorted(glob.glob(os.path.join(args.image_dir, "*.png")))[::3]
    row_error, col_error = cell_readout_error(model.transformer.visual, processor, every_third)
    print(f"grid cell read from one token, {len(every_third)} images: mean error row {row_error:.2f}, "
          f"column {col_error:.2f} cells (chance about 2)")


def cell_readout_error(visual, processor, files, seed=0):
    """Mean absolute error (row, column), in grid cells, of a ridge read-out of each output token's
    query cell, fitted on the tokens of two thirds of ``files`` (a seeded draw) and scored on the rest."""
    import paddle

    with paddle.no_grad():
        tokens = np.concatenate([
            visual(paddle.to_tensor(np.stack([processor.transform(f) for f in files[i : i + 32]]).astype("float32"))).numpy()
            for i in range(0, len(files), 32)
        ])  # [N, Q, E]
    n, q, _ = tokens.shape
    grid = int(round(q ** 0.5))
    cells = np.tile(np.stack(np.divmod(np.arange(q), grid), 1), (n, 1)).astype(np.float64)  # [N*Q, 2]
    x = np.concatenate([tokens.reshape(n * q, -1), np.ones([n * q, 1])], 1).astype(np.float64)
    fit = np.isin(np.repeat(np.arange(n), q), np.random.RandomState(seed).permutation(n)[: 2 * n // 3])
    w = np.linalg.solve(x[fit].T @ x[fit] + 1e-2 * np.eye(x.shape[1]), x[fit].T @ cells[fit])
    return tuple(np.abs(x[~fit] @ w - cells[~fit]).mean(0))


if __name__ == "__main__":
    main()
