"""Convert a Hugging Face Qwen-VL / Qwen-VL-Chat checkpoint for ``QWenVLForCausalLM.from_pretrained``.

python -m paddlemix.tools.convert_qwen_vl --src /path/to/Qwen-VL-Chat --dst checkpoints/qwen-vl-chat --dtype bfloat16
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="Hugging Face checkpoint directory (config.json + weights)")
    parser.add_argument("--dst", required=True, help="output directory")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the written weights (bfloat16 for GPU training; CPU needs float32)",
    )
    args = parser.parse_args(argv)

    from paddlemix.models.qwen_vl.convert import convert_checkpoint

    weight_map = convert_checkpoint(args.src, args.dst, dtype=args.dtype)
    print(f"wrote {len(weight_map)} tensors to {args.dst}")
    return 0


if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
