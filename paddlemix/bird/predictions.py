"""Prediction JSONL files that survive interruption: resume after the last complete line.

A prediction file holds one JSON object per line. A run killed mid-write leaves at most one
partial last line; :func:`open_resumable` cuts it off and returns the keys already written, so a
rerun skips them and the finished file has every record exactly once, in the order written.

Resuming is only right for the same job. Next to ``pred.jsonl``, ``pred.jsonl.meta.json`` records
what the file is made from (a *fingerprint*: the checkpoint's files, the test file's content hash,
the prompt and generation settings); :func:`start_predictions` refuses a rerun whose fingerprint
differs, saying which entries differ and how to start over, and refuses an output file that is not
a prediction file. The JSONL itself keeps only prediction records (docs/ARCHITECTURE.md, "Prediction file"), each made by
:func:`prediction_record`, whether a model or a baseline answered.
"""

import hashlib
import json
import os
from typing import Dict, Iterable, List, Optional, Set, Tuple

from paddlemix.bird.image_tag import split_image_prefix
from paddlemix.bird.jsonio import jsonl_text, write_json_atomic

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
    data = jsonl_text(records)
    if not data:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


META_SUFFIX = ".meta.json"
META_FORMAT = "bird-predictions/1"
# Fields every prediction record carries (docs/ARCHITECTURE.md, "Prediction file"); a file whose
# lines lack them is not one.
PREDICTION_FIELDS = ("id", "annotation", "response")


def prediction_record(
    *,
    id: str,
    image: Optional[str],
    question: str,
    annotation: str,
    response: str,
    task: Optional[str],
    modality: Optional[str],
    turn: int = 0,
    **extra,
) -> dict:
    """One line of a prediction file, whoever answered (a model or a baseline): the question as
    asked, without its image tag; ``extra`` fields (a protocol's phrase, image size) follow."""
    return {
        "id": id,
        "image": image,
        "question": split_image_prefix(question)[1],
        "annotation": annotation,
        "response": response,
        "task": task,
        "modality": modality,
        "turn": turn,
        **extra,
    }


class PredictionMismatch(ValueError):
    """An existing prediction file was made by another job (or is not a prediction file)."""


def meta_path(path: str) -> str:
    return path + META_SUFFIX


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# The files of a checkpoint that make the model (training logs, predictions and folders do not).
_MODEL_FILE_SUFFIXES = (".pdparams", ".safetensors", ".tiktoken")
_MODEL_FILE_NAMES = ("config.json", "generation_config.json", "tokenizer_config.json",
                     "special_tokens_map.json", "added_tokens.json", "lora_config.json")


def checkpoint_identity(checkpoint: str) -> Dict[str, object]:
    """What identifies a checkpoint directory without reading all its weights: the content hash of
    its small model files (config, weight index, tokenizer) and the size and modification time of
    the large ones (a retrained checkpoint has the same sizes but new times)."""
    files = {}
    for name in sorted(os.listdir(checkpoint)):
        full = os.path.join(checkpoint, name)
        model_file = name in _MODEL_FILE_NAMES or name.endswith(_MODEL_FILE_SUFFIXES) or name.endswith(".index.json")
        if not model_file or not os.path.isfile(full):
            continue
        stat = os.stat(full)
        if stat.st_size <= 1 << 20:
            files[name] = "sha256:" + file_sha256(full)
        else:
            files[name] = f"{stat.st_size} bytes, mtime_ns {stat.st_mtime_ns}"
    return {"path": os.path.abspath(checkpoint), "files": files}


def _looks_like_predictions(path: str) -> bool:
    """Whether every complete line of ``path`` is a prediction record (an empty file is) and a
    partial last line starts as :func:`append_records` writes one (a JSON list does not)."""
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                return line.startswith(b'{"id": ')
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                return False
            if not isinstance(record, dict) or not all(k in record for k in PREDICTION_FIELDS):
                return False
    return True


def _differences(old: dict, new: dict, prefix: str = "") -> List[str]:
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            diffs.append(f"{prefix}{key}: was {a!r}, now {b!r}")
    return diffs


def start_predictions(path: str, fingerprint: dict, overwrite: bool = False, inputs: Iterable[str] = ()) -> Set[Key]:
    """Open ``path`` for a job described by ``fingerprint`` (JSON-serialisable); returns the keys
    already written. A new file is created (empty) with its ``.meta.json``; an existing one is
    resumed only when its recorded fingerprint equals ``fingerprint``. ``overwrite`` starts over
    (only ever deleting a prediction file). ``inputs`` are files the job reads, never to be the output.
    """
    fingerprint = json.loads(json.dumps(fingerprint))  # compare as it will read back
    meta = meta_path(path)
    fresh = overwrite or not os.path.exists(path)
    for source in inputs:
        if os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
            raise PredictionMismatch(f"--output_file {path} is the input file {source}; name a new prediction file")
    if os.path.exists(path):
        if not _looks_like_predictions(path):
            raise PredictionMismatch(
                f"{path} exists and is not a prediction file (its lines are not records with "
                f"{', '.join(PREDICTION_FIELDS)}); name a new --output_file"
            )
        if overwrite:
            os.remove(path)
        elif not os.path.exists(meta):
            if os.path.getsize(path):
                raise PredictionMismatch(
                    f"{path} has predictions but no {os.path.basename(meta)} saying what they were made from; "
                    f"delete it or pass --overwrite to start over"
                )
        else:
            with open(meta, encoding="utf-8") as f:
                try:
                    recorded = json.load(f)
                except ValueError as exc:
                    raise PredictionMismatch(
                        f"{meta}: not valid JSON ({exc}); delete it and {path} to start over"
                    ) from None
            diffs = _differences(recorded.get("fingerprint", {}), fingerprint)
            if diffs:
                raise PredictionMismatch(
                    f"{path} was made by a different job, so it is not resumed: " + "; ".join(diffs)
                    + f". Pass --overwrite (or delete {path} and {meta}) to start over, or name another --output_file"
                )
    done = open_resumable(path)
    if fresh or not os.path.exists(meta):
        write_json_atomic(meta, {"format": META_FORMAT, "fingerprint": fingerprint}, indent=2)
    open(path, "a", encoding="utf-8").close()  # an empty test file still gives a (empty) prediction file
    return done
