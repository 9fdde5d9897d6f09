"""Batch inference for BiRD (upstream entry point); the logic is paddlemix.tools.infer.

    python tests/models/BiRD/infer.py --checkpoint DIR --json_path TEST.json --image_root DIR \
        --output_file PRED.jsonl [--batch_size N] [--max_new_tokens M] [--prompt_format chatml|raw]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))

from paddlemix.tools.infer import main  # noqa: E402

if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
