"""Score the records of one task under one :class:`~.params.Params`: clean the responses, pick the task's scorer, split by turn."""

from dataclasses import replace
from typing import Sequence

from ..tasks import RO, VG, check_task
from .captions import score_captions
from .grounding import score_vg
from .naming import score_ro
from .params import Params
from .records import clean_response, record_turn


def _score(records: Sequence[dict], task: str, params: Params) -> dict:
    if task == VG:
        return score_vg(records, params)
    if task == RO:
        return score_ro(records, params)
    return score_captions(records, task, params)


def score_task(records: Sequence[dict], task: str, params: Params = Params()) -> dict:
    """The metrics of records of one task (docs/ARCHITECTURE.md, "Metrics files"), plus ``clean``.

    ``params.clean`` is applied to each response first (see :func:`.records.clean_response`); VG
    responses are read in ``params.box_format``. Records of several turns (``--all_turns``
    predictions) are scored together and, under ``params.per_turn``, each turn index on its own."""
    task = check_task(task)
    if not records:
        raise ValueError(f"no {task} records to score")
    if params.clean != "none":
        records = [dict(r, response=clean_response(r.get("response"), params.clean)) for r in records]
    out = _score(records, task, params)
    turns = sorted({record_turn(r) for r in records})
    if params.per_turn and len(turns) > 1:
        # Only the point scores of a turn are kept, so its bootstrap would be wasted work.
        turn_params = replace(params, bootstrap=0)
        out["per_turn"] = {}
        for turn in turns:
            scores = _score([r for r in records if record_turn(r) == turn], task, turn_params)
            out["per_turn"][str(turn)] = {k: scores[k] for k in ("n", "per_modality", "macro", "micro")}
    out["clean"] = params.clean
    return out
