"""How much of the image reaches the LLM through the untrained vision path, before any training?

    python benchmarks/study_vision_tokens.py [--preset demo] [--seed 42] [--resampler_init random|spatial]

For 16 MR and 8 CT demo images (``data/demo/sa_med2d/images``, from ``scripts/demo.sh`` or
``build_demo_data``) this prints the mean norm of the image tokens the LLM receives against that of
its token embeddings, and the standard deviation of those tokens across images (does the path say
which image it is?) and across the queries of one image (does it say where?), each as a fraction of
the tokens' RMS. Near 0 means the path hands the LLM one vector whatever the image.
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


if __name__ == "__main__":
    main()
