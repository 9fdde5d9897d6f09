"""Med-GRIT-270k records: read the release JSON or JSONL, validate each record, normalise it.

Input records (one file may mix the shapes)::

    {"id": "<SA-Med2D image stem>", "conversations": [[question, answer], ...]}
    {"id": ..., "image": "images/x.png", "task": "VG", "conversations": [...]}

A ``.jsonl`` file is read as one record per line; any other file must hold one JSON list, or,
if it is not valid JSON as a whole and starts with ``{``, is read as JSON Lines too. The image is
``<image_root>/<id>.png`` unless the record names one in ``"image"`` (absolute, or relative to
``image_root``).

A normalised record is::

    {"id", "image", "image_path", "task", "modality", "conversations": [[q, a], ...]}

plus ``"view"`` when the input record names one: a dihedral view of the image
(:mod:`paddlemix.bird.views`; data construction's ``--train_views``), whose boxes are already written
in the view's frame. :func:`record_image` is the image as the record means it.

``image`` is the path as given (or ``<id>.png``), ``image_path`` the resolved absolute path, and
the first question's image tag points at ``image`` (a tag's content is replaced, a question
without one gets the ``Picture 1: <img>…</img>\\n`` prefix), so the text a model is trained on
does not depend on where the data sits on disk. ``task`` comes from the record's ``"task"``
field, else from the caller, else from the file name (``test_VG.json`` → ``VG``), else None.

Validation. Each record is checked in this order and stops at its first problem: its shape
(``bad_shape``), its task (``unknown_task``), empty questions or answers (``empty_turn``), every
box in every turn (``bad_box``: unreadable, outside [0, 1000), or x1 >= x2 / y1 >= y2 as
written), the same ``(id, task)`` seen before in this load (``duplicate_id``; an image may appear
once per task), then its image (``missing_image``, ``unreadable_image`` when PIL cannot verify
it). A file that is not JSON, or a JSONL line that is not, is ``broken_json`` (with the line
number). Strict mode raises :class:`MedGritError` at the first problem; lenient mode skips the
record, counts it under its reason and keeps the message, so ``read == kept + skipped`` always
holds (a whole broken JSON file counts as one skipped item). A file with no record at all (empty,
blank lines, ``[]``) is not an error but is listed in ``report.empty_files``.
"""

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from PIL import Image

from paddlemix.bird.boxes import GRID, parse_boxes, written_corners
from paddlemix.bird.image_tag import split_image_prefix, with_image
from paddlemix.bird.images import to_rgb
from paddlemix.bird.tasks import TASKS, modality_of
from paddlemix.bird.views import VIEWS, apply_view
from paddlemix.cli import json_error

REASONS = (
    "broken_json",
    "bad_shape",
    "unknown_task",
    "empty_turn",
    "bad_box",
    "duplicate_id",
    "missing_image",
    "unreadable_image",
)

# A task id standing alone between separators in a file name: test_VG.json, mii-test.jsonl.
_TASK_IN_NAME_RE = re.compile(r"(?:^|[_\-.])(" + "|".join(TASKS) + r")(?=[_\-.]|$)", re.I)
_BOX_TAG_RE = re.compile(r"<box>(.*?)</box>", re.S)


@dataclass(frozen=True)
class Issue:
    """One problem, located: file, 1-based line (JSONL), 0-based record index, record id."""

    reason: str
    file: str
    detail: str
    index: Optional[int] = None
    id: Optional[str] = None
    line: Optional[int] = None

    @property
    def message(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        if self.index is not None:
            where += f" record {self.index}"
        if self.id is not None:
            where += f" (id {self.id!r})"
        return f"{where}: {self.reason}: {self.detail}"


class MedGritError(ValueError):
    """A Med-GRIT record failed validation in strict mode; ``.issue`` says where and why."""

    def __init__(self, issue: Issue):
        super().__init__(issue.message)
        self.issue = issue


@dataclass
class MedGritReport:
    """What a load read, kept and skipped, and why."""

    files: List[str] = field(default_factory=list)
    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    issues: List[Issue] = field(default_factory=list)
    per_task: Counter = field(default_factory=Counter)
    empty_files: List[str] = field(default_factory=list)  # files holding no record at all

    @property
    def ok(self) -> bool:
        return not self.issues and not self.empty_files

    def add(self, issue: Issue) -> None:
        self.issues.append(issue)
        self.skipped[issue.reason] += 1

    def to_dict(self) -> dict:
        return {
            "files": list(self.files),
            "read": self.read,
            "kept": self.kept,
            "skipped": {r: self.skipped[r] for r in REASONS if self.skipped[r]},
            "per_task": {str(k): v for k, v in sorted(self.per_task.items(), key=lambda kv: str(kv[0]))},
            "empty_files": list(self.empty_files),
            "issues": [i.message for i in self.issues],
        }

    def format(self, max_issues: int = 20) -> str:
        lines = [f"Med-GRIT: read {self.read}, kept {self.kept}, skipped {sum(self.skipped.values())}"]
        lines.append("  files: " + ", ".join(self.files))
        for path in self.empty_files:
            lines.append(f"  {path}: empty (no records)")
        if self.per_task:
            tasks = ", ".join(f"{k}={v}" for k, v in sorted(self.per_task.items(), key=lambda kv: str(kv[0])))
            lines.append(f"  kept per task: {tasks}")
        for reason in REASONS:
            if self.skipped[reason]:
                lines.append(f"  skipped {reason}: {self.skipped[reason]}")
        for issue in self.issues[:max_issues]:
            lines.append("  " + issue.message)
        if len(self.issues) > max_issues:
            lines.append(f"  ... and {len(self.issues) - max_issues} more")
        return "\n".join(lines)


class _Problem(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def task_from_filename(path: str) -> Optional[str]:
    """The task a file name states (``test_VG.json`` → ``VG``), None when it names none or several."""
    stem = os.path.splitext(os.path.basename(path))[0]
    found = {m.group(1).upper() for m in _TASK_IN_NAME_RE.finditer(stem)}
    return found.pop() if len(found) == 1 else None


def box_problems(text: str) -> List[str]:
    """Every reason a text's boxes are not valid grid boxes, as written (not reordered)."""
    problems = []
    if text.count("<box>") != text.count("</box>"):
        problems.append("unbalanced <box> tags")
    for m in _BOX_TAG_RE.finditer(text):
        raw = written_corners(m.group(1))
        if raw is None:
            problems.append(f"unreadable box {m.group(0)!r}")
            continue
        if any("." in v for v in raw):
            problems.append(f"non-integer coordinates in {m.group(0)!r}")
            continue
        x1, y1, x2, y2 = (int(v) for v in raw)
        if not all(0 <= v < GRID for v in (x1, y1, x2, y2)):
            problems.append(f"coordinates outside [0,{GRID}) in {m.group(0)!r}")
        elif x1 >= x2 or y1 >= y2:
            problems.append(f"needs x1 < x2 and y1 < y2 in {m.group(0)!r}")
    parsed = parse_boxes(text)
    problems.extend(f"unparseable box {frag!r}" for frag in parsed.unparsed)
    for box in parsed.boxes:
        if not all(0 <= v < GRID for v in box):
            problems.append(f"coordinates outside [0,{GRID}) in {box}")
    return list(dict.fromkeys(problems))


class _ImageChecker:
    """Existence and PIL ``verify`` of each image path, each path checked once per load."""

    def __init__(self):
        self._seen: Dict[str, Optional[Tuple[str, str]]] = {}

    def problem(self, path: str) -> Optional[Tuple[str, str]]:
        if path not in self._seen:
            self._seen[path] = self._check(path)
        return self._seen[path]

    @staticmethod
    def _check(path: str) -> Optional[Tuple[str, str]]:
        if not os.path.isfile(path):
            return ("missing_image", f"image not found: {path}")
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as exc:  # PIL raises many types for a damaged file
            return ("unreadable_image", f"cannot read image {path}: {type(exc).__name__}: {exc}")
        return None


def _raw_records(path: str, report: MedGritReport, fail) -> Iterator[Tuple[int, Optional[int], object]]:
    """``(index, line, raw)`` for each record; JSON that cannot be read goes to ``fail(issue)``."""
    # utf-8-sig: a byte-order mark (as some editors write) is not part of the first record.
    with open(path, encoding="utf-8-sig") as f:
        try:
            text = f.read()
        except UnicodeDecodeError as exc:
            report.read += 1
            fail(Issue("broken_json", path, f"not UTF-8 text: {exc}"))
            return
    if not path.endswith(".jsonl"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if not text.lstrip().startswith("{"):
                report.read += 1
                fail(Issue("broken_json", path, json_error(exc), line=exc.lineno))
                return
        else:
            if not isinstance(data, list):
                report.read += 1
                detail = f"expected a JSON list of records, got {type(data).__name__} (name JSON Lines files *.jsonl)"
                fail(Issue("bad_shape", path, detail))
                return
            for index, raw in enumerate(data):
                report.read += 1
                yield index, None, raw
            return
    # JSON Lines: a .jsonl file, or a .json file that is not one JSON value but starts like a record.
    index = 0
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        report.read += 1
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            fail(Issue("broken_json", path, f"{exc.msg} (column {exc.colno})", index=index, line=line_no))
        else:
            yield index, line_no, raw
        index += 1


def _normalise(raw, image_root: str, task_hint: Optional[str]) -> dict:
    """One raw record → normalised record, or :class:`_Problem` for the first thing wrong with it."""
    if not isinstance(raw, dict):
        raise _Problem("bad_shape", f"expected an object with 'id' and 'conversations', got {type(raw).__name__}")
    image = raw.get("image")
    rid = raw.get("id")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise _Problem("bad_shape", f"'image' must be a non-empty string, got {image!r}")
    if rid is None and image is not None:
        rid = os.path.splitext(os.path.basename(image))[0]
    if not isinstance(rid, str) or not rid:
        raise _Problem("bad_shape", f"'id' must be a non-empty string, got {rid!r}")
    if image is None:
        image = rid + ".png"

    view = raw.get("view")
    if view is not None and view not in VIEWS:
        raise _Problem("bad_shape", f"'view' must be one of {', '.join(VIEWS)}, got {view!r:.60}")

    task = raw.get("task")
    if task is not None:
        if not isinstance(task, str) or task.upper() not in TASKS:
            raise _Problem("unknown_task", f"task {task!r} is not one of {', '.join(TASKS)}")
        task = task.upper()
    else:
        task = task_hint

    convs = raw.get("conversations")
    if not isinstance(convs, list) or not convs:
        raise _Problem("bad_shape", "'conversations' must be a non-empty list of [question, answer] pairs")
    turns = []
    for i, turn in enumerate(convs):
        if not isinstance(turn, (list, tuple)) or len(turn) != 2 or not all(isinstance(t, str) for t in turn):
            raise _Problem("bad_shape", f"turn {i} must be a [question, answer] pair of strings, got {turn!r:.120}")
        question, answer = turn
        if not split_image_prefix(question)[1].strip():
            raise _Problem("empty_turn", f"turn {i} has an empty question")
        if not answer.strip():
            raise _Problem("empty_turn", f"turn {i} has an empty answer")
        for side, text in (("question", question), ("answer", answer)):
            problems = box_problems(text)
            if problems:
                raise _Problem("bad_box", f"turn {i} {side}: {problems[0]}")
        turns.append([question, answer])
    turns[0][0] = with_image(turns[0][0], image)

    record = {
        "id": rid,
        "image": image,
        "image_path": os.path.abspath(os.path.join(image_root, image)),
        "task": task,
        "modality": modality_of(image),
        "conversations": turns,
    }
    if view is not None:
        record["view"] = view
    return record


def record_image(record: dict):
    """What the model is shown for a normalised record: its image path, or, for a record with a
    ``"view"``, the image turned as the view says (an RGB PIL image)."""
    view = record.get("view")
    if view is None:
        return record["image_path"]
    return apply_view(to_rgb(record["image_path"]), view)


def load_medgrit(
    json_paths: Union[str, Sequence[str]],
    image_root: str,
    *,
    strict: bool = True,
    task: Optional[str] = None,
    check_images: bool = True,
) -> Tuple[List[dict], MedGritReport]:
    """Read, validate and normalise Med-GRIT records from one or more JSON / JSONL files.

    ``task`` is used for records without a ``"task"`` field (before the file-name guess).
    ``check_images=False`` skips opening the images (their paths are still resolved).
    Returns the kept records in file order and the report; strict mode raises
    :class:`MedGritError` at the first problem instead.
    """
    paths = [json_paths] if isinstance(json_paths, (str, os.PathLike)) else list(json_paths)
    if task is not None and task.upper() not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    report = MedGritReport(files=[str(p) for p in paths])

    def fail(issue: Issue) -> None:
        if strict:
            raise MedGritError(issue)
        report.add(issue)

    images = _ImageChecker()
    seen: Dict[Tuple[str, Optional[str]], str] = {}
    records: List[dict] = []
    for path in report.files:
        hint = task.upper() if task is not None else task_from_filename(path)
        read_before = report.read
        for index, line, raw in _raw_records(path, report, fail):
            rid = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            try:
                rec = _normalise(raw, image_root, hint)
                rid = rec["id"]
                first = seen.get((rid, rec["task"]))
                if first is not None:
                    raise _Problem("duplicate_id", f"id {rid!r} with task {rec['task']} already seen at {first}")
                if check_images:
                    bad = images.problem(rec["image_path"])
                    if bad is not None:
                        raise _Problem(*bad)
            except _Problem as p:
                fail(Issue(p.reason, path, p.detail, index=index, id=rid, line=line))
                continue
            seen[(rid, rec["task"])] = f"{path} record {index}"
            records.append(rec)
            report.kept += 1
            report.per_task[rec["task"] or "unknown"] += 1
        if report.read == read_before:
            report.empty_files.append(path)
    return records, report


def validate_medgrit(
    json_paths: Union[str, Sequence[str]], image_root: str, *, strict: bool = False, check_images: bool = True
) -> MedGritReport:
    """The report of :func:`load_medgrit` (lenient by default, so every problem is listed)."""
    return load_medgrit(json_paths, image_root, strict=strict, check_images=check_images)[1]
