"""Scoring BiRD predictions, in pycocotools' COCOeval shape: parameters, per-task rules, aggregation, files.

Every module works on plain prediction records (dicts as read from prediction JSONL, with at
least ``annotation`` and ``response``, and ``modality`` or ``image``) and imports neither paddle
nor paddlenlp, so any model's predictions can be scored where only numpy and pycocoevalcap are
installed. Metric values are fractions in [0, 1] (CIDEr is unbounded), never percentages.

- :mod:`.params` — :class:`~.params.Params`, every scoring knob in one documented object
- :mod:`.keys` — the metric keys of each task, in report order
- :mod:`.records` — a record's modality and turn, response cleaning
- :mod:`.grounding` (with :mod:`.matching`) — VG; :mod:`.naming` — RO;
  :mod:`.captions` (with :mod:`.coco_scores`, :mod:`.java`) — GC / MII / QA
- :mod:`.aggregate` — per modality, macro / micro, bootstrap intervals, mBMR
- :mod:`.score` — :func:`~.score.score_task`, one entry point for every task
- :mod:`.qwen_grounding` — Qwen-VL's own grounding protocol, kept apart from BiRD's
- :mod:`.evaluate` — prediction files in, metrics files out (and the one metrics-file loader)
- :mod:`.report`, :mod:`.paper_table` — summaries of metrics files
"""
