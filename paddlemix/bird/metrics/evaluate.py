"""Prediction files in, metrics files out: read and validate a prediction JSONL, score it, write and read metrics JSON.

The command line is ``python -m paddlemix.tools.eval`` (``tests/models/BiRD/eval.py`` wraps it).
Nothing here imports paddle or paddlenlp.
"""

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ...cli import json_error
from ..jsonio import write_json_atomic
from ..box_formats import DEFAULT_BOX_FORMAT, PIXEL_FORMATS
from ..tasks import SCORED_TASKS, VG, check_task
from .keys import metric_names
from .params import ACC_THRESHOLDS, Params
from .qwen_grounding import PRECISION, PROTOCOL, score_qwen_grounding
from .score import score_task


class PredictionFileError(ValueError):
    """A prediction file that cannot be scored; the message names the file and line."""


def read_predictions(path: str, task: Optional[str] = None) -> Tuple[str, List[dict]]:
    """The records of one task from a prediction JSONL file, and that task.

    Every line must be a JSON object with ``annotation`` (the reference answer, a string) and
    ``response`` (string or null), plus ``modality`` or ``image``. A ``task`` field, when present,
    must name a known task. Files may mix tasks: ``task`` selects one; without it the file must
    hold exactly one. Blank lines are ignored. Errors raise :class:`PredictionFileError` naming
    the file and line.
    """
    wanted = check_task(task, where=path) if task is not None else None
    records: List[dict] = []
    tasks_seen: List[str] = []
    n_lines = 0
    with open(path, encoding="utf-8-sig") as handle:  # tolerate a byte-order mark
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            n_lines += 1
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise PredictionFileError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(record, dict):
                raise PredictionFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
            _check_record(record, where)
            if "task" in record and record["task"] is not None:
                try:
                    record_task = check_task(record["task"], where=where)
                except ValueError as exc:
                    raise PredictionFileError(str(exc)) from None
                if record_task not in tasks_seen:
                    tasks_seen.append(record_task)
            else:
                record_task = None
            if wanted is None or record_task in (None, wanted):
                records.append(record)
    if n_lines == 0:
        raise PredictionFileError(f"{path}: empty, no predictions to score (did inference read an empty test file?)")
    if wanted is None:
        if len(tasks_seen) > 1:
            raise PredictionFileError(f"{path}: records of several tasks ({', '.join(tasks_seen)}); pass --task")
        if not tasks_seen:
            raise PredictionFileError(f"{path}: no record has a 'task' field; pass --task")
        wanted = tasks_seen[0]
    if not records:
        found = ", ".join(tasks_seen) if tasks_seen else "none"
        raise PredictionFileError(f"{path}: no {wanted} records (tasks found: {found})")
    return wanted, records


def _check_record(record: dict, where: str) -> None:
    if "annotation" not in record:
        raise PredictionFileError(f"{where}: record has no 'annotation' (the reference answer)")
    if not isinstance(record["annotation"], str):
        raise PredictionFileError(f"{where}: 'annotation' must be a string, got {type(record['annotation']).__name__}")
    if "response" not in record:
        raise PredictionFileError(f"{where}: record has no 'response' (the model's answer)")
    if record["response"] is not None and not isinstance(record["response"], str):
        raise PredictionFileError(f"{where}: 'response' must be a string or null, got {type(record['response']).__name__}")
    modality, image = record.get("modality"), record.get("image")
    if not (isinstance(modality, str) and modality.strip()) and not (isinstance(image, str) and image.strip()):
        raise PredictionFileError(f"{where}: record needs 'modality' or 'image' to tell its modality")


def add_image_sizes(records: List[dict], image_root: Optional[str], pred_file: str) -> None:
    """Give every record ``width`` / ``height`` (pixel box formats need them): kept when the record
    has them, else read from ``image_root/<image>``; raises naming the file and record otherwise."""
    for k, record in enumerate(records):
        if isinstance(record.get("width"), (int, float)) and isinstance(record.get("height"), (int, float)):
            continue
        where = f"{pred_file}: record {k} (id {record.get('id', '?')})"
        if image_root is None:
            raise PredictionFileError(
                f"{where}: the box format is in pixels and the record has no 'width'/'height'; pass --image_root"
            )
        path = os.path.join(image_root, str(record.get("image", "")))
        try:
            from PIL import Image

            with Image.open(path) as image:
                record["width"], record["height"] = image.size
        except OSError as exc:
            raise PredictionFileError(f"{where}: cannot read the image size from {path}: {exc}") from None


def evaluate_file(
    pred_file: str,
    task: Optional[str] = None,
    params: Params = Params(),
    image_root: Optional[str] = None,
    protocol: str = "bird",
) -> dict:
    """Metrics of one prediction file (see :func:`paddlemix.bird.metrics.score.score_task`), or with
    ``protocol="qwen_vl_grounding"`` Qwen-VL's Precision@1 (:mod:`paddlemix.bird.metrics.qwen_grounding`).
    ``image_root`` is where pixel box formats read image sizes that records do not carry."""
    task, records = read_predictions(pred_file, task)
    prefilled = sum(1 for r in records if r.get("protocol") == PROTOCOL)
    if protocol == PROTOCOL:
        if task != VG:
            raise PredictionFileError(f"{pred_file}: the {PROTOCOL} protocol scores VG records, not {task}")
        try:
            metrics = score_qwen_grounding(records)
        except ValueError as exc:
            raise PredictionFileError(f"{pred_file}: {exc}") from None
        metrics["pred_file"] = os.path.basename(pred_file)
        return metrics
    if prefilled:
        raise PredictionFileError(
            f"{pred_file}: {prefilled} records were answered with the {PROTOCOL} prompt (the phrase and <box> "
            f"given); score them with --protocol {PROTOCOL}, not with BiRD's rules"
        )
    if task == VG and params.box_format in PIXEL_FORMATS:
        add_image_sizes(records, image_root, pred_file)
    metrics = score_task(records, task, params)
    metrics["pred_file"] = os.path.basename(pred_file)
    metrics["warnings"] = score_warnings(metrics)
    return metrics


# A score this far above its strict counterpart is flagged: the lenient one is being gamed or the
# responses say much more than the answer.
INFLATION_GAP = 0.2


def score_warnings(metrics: dict) -> List[str]:
    """What a reader should check before quoting a headline score: BiRD's Recall@0.5 far above the
    one-to-one precision (boxes sprayed), RO accuracy far above exact_match (answers that list
    names), and responses written in another box format than the one scored."""
    warnings = []
    macro = metrics.get("macro", {})
    if metrics.get("task") == VG:
        t = f"{metrics.get('iou_threshold', 0.5):g}"
        recall, precision = macro.get(f"Recall@{t}"), macro.get(f"match_precision@{t}")
        n_pred, n_ref = metrics.get("n_predicted_boxes"), metrics.get("n_reference_boxes")
        if recall is not None and precision is not None and (
            recall - precision > INFLATION_GAP or (n_pred is not None and n_ref and n_pred > 2 * n_ref)
        ):
            warnings.append(
                f"VG: Recall@{t} {recall:.4f} but match_precision@{t} {precision:.4f} ({n_pred} predicted boxes for "
                f"{n_ref} reference boxes): Recall@{t} does not count extra boxes, so read it beside the precision"
            )
        for name, count in (metrics.get("n_records_in_other_box_format") or {}).items():
            warnings.append(
                f"VG: {count} responses carry {name} markup, not the scored box format "
                f"{metrics.get('box_format', DEFAULT_BOX_FORMAT)}; pass --box_format if the model writes {name}"
            )
    elif metrics.get("task") == "RO":
        accuracy, exact = macro.get("accuracy"), macro.get("exact_match")
        if accuracy is not None and exact is not None and accuracy - exact > INFLATION_GAP:
            warnings.append(
                f"RO: accuracy {accuracy:.4f} but exact_match {exact:.4f}: accuracy counts any response that "
                "contains the reference's words, so one listing several class names scores as correct"
            )
    return warnings


def write_metrics(metrics: dict, out_json: str) -> None:
    """Write a metrics dict as JSON, atomically (a reader never sees half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    write_json_atomic(out_json, metrics, indent=2)


def metric_columns(metrics: dict) -> List[str]:
    """The metric keys of a metrics dict, in report order."""
    if metrics.get("protocol") == PROTOCOL:
        return [PRECISION]
    # The Acc@a set the file was scored with (Params.acc_thresholds), read back from its keys.
    acc = tuple(float(key[len("Acc@"):]) for key in metrics.get("macro", {}) if key.startswith("Acc@"))
    return list(metric_names(metrics["task"], metrics.get("iou_threshold", 0.5), acc or ACC_THRESHOLDS))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(metrics: dict) -> str:
    """Rows: modalities, then macro and micro; columns: n and the task's metrics."""
    columns = metric_columns(metrics)
    rows = [[m, str(s["n"])] + [_fmt(s.get(c)) for c in columns] for m, s in metrics["per_modality"].items()]
    rows.append(["macro", ""] + [_fmt(metrics["macro"].get(c)) for c in columns])
    rows.append(["micro", str(sum(s["n"] for s in metrics["per_modality"].values()))] + [_fmt(metrics["micro"].get(c)) for c in columns])
    header = ["modality", "n"] + columns
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    protocol = f" ({metrics['protocol']} protocol)" if metrics.get("protocol") else ""
    lines = [f"{metrics['task']}{protocol}: {metrics['n']} records"]
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for k, row in enumerate(rows):
        if k == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
    if "ci95" in metrics:
        for key in ("macro", "micro"):
            spans = ", ".join(f"{c} [{lo:.4f}, {hi:.4f}]" for c, (lo, hi) in metrics["ci95"][key].items())
            lines.append(f"95% CI {key}: {spans}")
    if metrics.get("n_skipped_no_reference_box"):
        lines.append(f"skipped (reference has no box): {metrics['n_skipped_no_reference_box']}")
    if metrics.get("spice_unavailable_reason"):
        lines.append(f"SPICE: null ({metrics['spice_unavailable_reason']})")
    for turn, scores in (metrics.get("per_turn") or {}).items():
        values = ", ".join(f"{c} {_fmt(scores['macro'].get(c))}" for c in columns)
        lines.append(f"turn {turn} (n {scores['n']}), macro: {values}")
    lines.extend(f"warning: {w}" for w in score_warnings(metrics))
    return "\n".join(lines)


def read_metrics(path: str) -> dict:
    """One metrics file written by :func:`write_metrics`; raises naming the file if it is not one."""
    with open(path, encoding="utf-8") as handle:
        try:
            metrics = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {json_error(exc)}") from None
    if not isinstance(metrics, dict) or metrics.get("task") not in SCORED_TASKS or "per_modality" not in metrics:
        raise ValueError(f"{path}: not a BiRD metrics file (needs 'task' and 'per_modality')")
    return metrics


def load_metrics(paths: Sequence[str]) -> List[dict]:
    """Metrics dicts in task order (VG, RO, GC, MII, QA), whatever order the paths come in."""
    return sorted((read_metrics(path) for path in paths), key=lambda m: SCORED_TASKS.index(m["task"]))


def load_metrics_dir(metrics_dir: str, tasks: Sequence[str] = SCORED_TASKS) -> Dict[str, dict]:
    """The ``metrics_<TASK>.json`` files of ``tasks`` present in ``metrics_dir``, by task, in ``tasks`` order."""
    found = {}
    for task in tasks:
        path = os.path.join(metrics_dir, f"metrics_{task}.json")
        if os.path.isfile(path):
            found[task] = read_metrics(path)
    return found
