"""Score one prediction file: python tests/models/BiRD/eval.py --task VG --pred_file P.jsonl --out_json M.json"""

import os
import sys

# Run from a checkout without installing: the repository root holds the paddlemix package.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))

from paddlemix.tools.eval import main  # noqa: E402

if __name__ == "__main__":
    from paddlemix.cli import run

    sys.exit(run(main))
