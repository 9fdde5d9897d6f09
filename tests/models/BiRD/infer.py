"""Batch inference for BiRD (upstream's entry point); the logic is paddlemix.tools.infer.

    python tests/models/BiRD/infer.py --checkpoint DIR --json_path TEST.json --image_root DIR \
        --output_file PRED.jsonl [--batch_size N] [--max_new_tokens M] [--prompt_format chatml|raw]
    python tests/models/BiRD/infer.py --checkpoint DIR --test_dir DIR --pred_dir DIR --image_root DIR \
        [--tasks VG,RO,GC,MII] [--task_max_new_tokens VG=64,RO=16]   # every test file, one model load
"""

import os
import sys

# This checkout's paddlemix, whether or not it is installed (the repository root is three folders up).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from paddlemix.cli import run  # noqa: E402
from paddlemix.tools.infer import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
