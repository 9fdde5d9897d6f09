"""Prediction JSONL files that survive interruption: resume after the last complete line.

A prediction file holds one JSON object per line. A run killed mid-write leaves at most one
partial last line; :func:`open_resumable` cuts it off and returns the keys already written, so a
rerun skips them and the finished file has every record exactly once, in the order written.
"""

import json
import os
from typing import Iterable, Set, Tuple

Key = Tuple[str, str, int]


def record_key(record: dict) -> Key:
    """What identifies a prediction: (id, task, turn)."""
    return (str(record["id"]), str(record.get("task")), int(record.get("turn", 0)))


def open_resumable(path: str) -> Set[Key]:
    """Keys of the complete records in ``path`` (creating its folder); drops a partial last line."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not os.path.exists(path):
        return set()
    done: Set[Key] = set()
    good_end = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break  # the partial line a killed run leaves behind
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON object ({exc}); fix or remove this line") from exc
            key = record_key(record)
            if key in done:
                raise ValueError(f"{path}:{lineno}: duplicate prediction for {key}")
            done.add(key)
            good_end += len(line)
    if good_end != os.path.getsize(path):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


def append_records(path: str, records: Iterable[dict]) -> None:
    """Append whole lines and make them durable before returning."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not data:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
