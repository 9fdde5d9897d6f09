"""JSON Lines test files: the first record (to tell a file's kind), records with their line, their images."""

import json
import os
from typing import Callable, Iterator, Tuple


def first_object(path: str):
    """The first non-blank line of ``path`` parsed as JSON, or None when it is not JSON (a JSON
    list such as Med-GRIT's release file spans lines) or the file is empty."""
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
    return None


def read_objects(path: str, error: Callable[[str], Exception]) -> Iterator[Tuple[str, int, object]]:
    """``(where, lineno, value)`` for every non-blank line; a line that is not JSON raises
    ``error("<path>:<line>: not JSON (...)")``."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{where}: not JSON ({exc})") from exc


def image_path(where: str, image_root: str, image: str, check: bool, error: Callable[[str], Exception]) -> str:
    """``image`` under ``image_root``; with ``check``, a missing file raises ``error`` naming ``where``."""
    path = os.path.join(image_root, image)
    if check and not os.path.isfile(path):
        raise error(f"{where}: image not found: {path}")
    return path
