"""One convention for every command line of the project: exit codes, the ``error:`` line, debug tracebacks.

Exit codes (every ``python -m paddlemix...`` tool, ``infer.py``, ``eval.py``, ``train.sh``):

- ``0``: done.
- ``2``: the input or the command line is wrong — a missing or malformed file, a bad record, a bad
  option value. One ``error: ...`` line on stderr names the file and the record; argparse's usage
  errors use 2 as well. Set ``BIRD_DEBUG=1`` to get the traceback instead.
- ``1``: anything else (a bug, an out-of-memory kill): the traceback is printed.

Nothing here imports paddle, so evaluation-only installs can use it.
"""

import json
import os
import sys
from typing import Callable, Optional, Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
DEBUG_ENV = "BIRD_DEBUG"

# What bad input raises: our own errors subclass ValueError (MedGritError, PredictionFileError, ...);
# a missing, unreadable or clashing path is an OSError.
INPUT_ERRORS = (ValueError, OSError)


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def run(main: Callable[[Optional[Sequence[str]]], object], argv: Optional[Sequence[str]] = None) -> int:
    """Call ``main(argv)``; an input error becomes one ``error:`` line and exit code 2. A ``main``
    that returns something other than an int (training returns its trainer) has succeeded."""
    try:
        code = main(argv)
    except INPUT_ERRORS as exc:
        if debug_enabled():
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code if isinstance(code, int) else EXIT_OK


def json_error(exc: json.JSONDecodeError) -> str:
    """``exc``'s message with its position (``exc.msg`` may end in "at", e.g. "Unterminated string starting at")."""
    return f"{exc.msg} (line {exc.lineno}, column {exc.colno})"
