"""Writing JSON and JSON Lines files whole or not at all: a killed run never leaves half a file.

Each writer renders the text first, writes it to ``<path>.tmp`` next to the target and renames it
over ``path`` (atomic on one file system), so a reader sees the old file or the new one.
"""

import contextlib
import io
import json
import os
from typing import Iterable, Iterator


def write_text_atomic(path: str, text: str) -> None:
    """Replace ``path`` by ``text`` (UTF-8) in one rename; the temporary file is removed on failure."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_text(path: str) -> Iterator[io.StringIO]:
    """A text handle (no newline translation, as ``open(..., newline="")``) whose content replaces
    ``path`` in one rename when the block ends; an exception inside the block leaves ``path`` as it was."""
    buffer = io.StringIO(newline="")
    yield buffer
    write_text_atomic(path, buffer.getvalue())


def write_json_atomic(path: str, data, indent=1, sort_keys: bool = False) -> None:
    """``data`` as JSON (non-ASCII kept as is) with a final newline, written atomically."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=indent, sort_keys=sort_keys) + "\n")


def jsonl_text(records: Iterable[dict]) -> str:
    """One compact JSON object per line, each ending in a newline (the prediction-file shape)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_jsonl_atomic(path: str, records: Iterable[dict]) -> None:
    write_text_atomic(path, jsonl_text(records))
