"""Score one prediction file (upstream's entry point); the logic is paddlemix.tools.eval.

    python tests/models/BiRD/eval.py --task VG --pred_file P.jsonl --out_json M.json
"""

import os
import sys

# This checkout's paddlemix, whether or not it is installed (the repository root is three folders up).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))

from paddlemix.cli import run  # noqa: E402
from paddlemix.tools.eval import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main))
