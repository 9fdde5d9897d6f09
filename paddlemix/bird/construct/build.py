"""The whole Med-GRIT build: read the SA-Med2D folder → split by case → records → write → stats."""

import os
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tqdm import tqdm

from paddlemix.bird.construct.conversations import image_turns, medgrit_record
from paddlemix.bird.construct.paraphrase import rewrite_answers
from paddlemix.bird.construct.regions import SKIP_REASONS, ImageEntry, SkipLog, read_image_entry, viewed_entry
from paddlemix.bird.construct.split import split_cases, stable_rng
from paddlemix.bird.jsonio import write_json_atomic
from paddlemix.bird.samed2d import (
    IMAGES_DIR,
    MASK_JSON,
    ConstructionError,
    find_class_json,
    load_class_names,
    load_mask_index,
)
from paddlemix.bird.tasks import TASKS, modality_of
from paddlemix.bird.views import VIEWS


def build_medgrit(
    sa_root: str,
    out_dir: str,
    *,
    seed: int = 0,
    test_ratio: float = 0.1,
    min_mask_area: int = 16,
    mask_json: Optional[str] = None,
    class_json: Optional[str] = None,
    strict: bool = False,
    max_turns: int = 8,
    max_mii_regions: int = 10,
    split_tasks: Sequence[str] = (),
    test_questions: int = 1,
    view_modalities: Sequence[str] = (),
    view_tasks: Sequence[str] = TASKS,
    rewriter=None,
    rewrite_workers: int = 4,
    progress: bool = True,
) -> dict:
    """Build train/test Med-GRIT files from an SA-Med2D folder; returns (and writes) the stats."""
    if max_turns < 1 or max_mii_regions < 1 or test_questions < 1:
        raise ValueError("max_turns, max_mii_regions and test_questions must be at least 1")
    for option, tasks in (("split_tasks", split_tasks), ("view_tasks", view_tasks)):
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"{option}: unknown task(s) {unknown}; known: {list(TASKS)}")
    if not os.path.isdir(sa_root):
        raise ConstructionError(f"{sa_root}: no such folder (--sa_root is the SA-Med2D folder with images/ and masks/)")
    mask_json = mask_json or os.path.join(sa_root, MASK_JSON)
    class_json = class_json or find_class_json(sa_root)
    classes = load_class_names(class_json)
    index = load_mask_index(mask_json)
    skip = SkipLog(strict)

    entries, masks_used = _read_entries(sa_root, index, classes, min_mask_area, skip, progress)
    split = split_cases(entries, test_ratio, seed)
    train, test, images_in = _records(entries, split, seed, skip, max_turns, max_mii_regions, split_tasks, test_questions,
                                      view_modalities, view_tasks)

    rewrite_counts = None
    if rewriter is not None:
        everything = train + [rec for task in TASKS for rec in test[task]]
        rewrite_counts = dict(rewrite_answers(everything, rewriter, workers=rewrite_workers, progress=progress))

    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "train.json"), train)
    for task in TASKS:
        write_json_atomic(os.path.join(out_dir, f"test_{task}.json"), test[task])

    config = {
        "sa_root": os.path.abspath(sa_root),
        "mask_json": os.path.abspath(mask_json),
        "class_json": os.path.abspath(class_json),
        "image_root": os.path.abspath(os.path.join(sa_root, IMAGES_DIR)),
        "seed": seed,
        "test_ratio": test_ratio,
        "min_mask_area": min_mask_area,
        "max_turns": max_turns,
        "max_mii_regions": max_mii_regions,
        "split_tasks": sorted(split_tasks),
        "test_questions": test_questions,
        "view_modalities": sorted(view_modalities),
        "view_tasks": sorted(view_tasks) if view_modalities else [],
        "strict": strict,
    }
    stats = _stats(config, index, entries, masks_used, images_in, split, train, test, skip, rewrite_counts)
    write_json_atomic(os.path.join(out_dir, "stats.json"), stats, indent=2)
    return stats


def _read_entries(sa_root, index, classes, min_mask_area, skip, progress) -> Tuple[List[ImageEntry], int]:
    """The usable images of the mask index, in name order, and how many masks they use."""
    entries: List[ImageEntry] = []
    masks_used = 0
    for image_rel in tqdm(sorted(index), desc="images", disable=not progress):
        entry, used = read_image_entry(sa_root, image_rel, index[image_rel], classes, min_mask_area, skip)
        if entry is not None:
            entries.append(entry)
            masks_used += used
    return entries, masks_used


def _records(
    entries: Sequence[ImageEntry],
    split: Dict[str, Dict[str, list]],
    seed: int,
    skip: SkipLog,
    max_turns: int,
    max_mii_regions: int,
    split_tasks: Sequence[str],
    test_questions: int,
    view_modalities: Sequence[str] = (),
    view_tasks: Sequence[str] = TASKS,
) -> Tuple[List[dict], Dict[str, List[dict]], Counter]:
    """Train records, test records per task, and how many images went to each side.

    A training image of a modality in ``view_modalities`` also gives the ``view_tasks`` records of
    its seven dihedral views (:mod:`paddlemix.bird.views`); test images are only ever asked as they are.
    """
    test_cases = {key for parts in split.values() for key in parts["test"]}
    train: List[dict] = []
    test: Dict[str, List[dict]] = {t: [] for t in TASKS}
    images_in = Counter()
    for entry in entries:
        turns = image_turns(entry, stable_rng(seed, entry.name.stem), skip, max_mii_regions)
        in_test = entry.name.case_key in test_cases
        images_in["test" if in_test else "train"] += 1
        if in_test:
            for task in TASKS:
                test[task].extend(medgrit_record(entry, task, [turn], part) for part, turn in
                                  enumerate(turns[task][:test_questions]))
            continue
        train.extend(_train_records(entry, turns, TASKS, split_tasks, max_turns))
        if modality_of(entry.image) in view_modalities:
            for view in VIEWS:
                viewed = viewed_entry(entry, view)
                # A view's filters repeat its original's: counted once, in the original's skip log.
                view_turns = image_turns(viewed, stable_rng(seed, entry.name.stem, view), SkipLog(False), max_mii_regions)
                train.extend(_train_records(viewed, view_turns, view_tasks, split_tasks, max_turns))
                images_in["train_views"] += 1
    return train, test, images_in


def _train_records(entry: ImageEntry, turns, tasks, split_tasks, max_turns) -> List[dict]:
    """An image's training records: a task in ``split_tasks`` gives one record per ``max_turns``
    turns, any other task one record of its first ``max_turns`` turns."""
    records = []
    for task in tasks:
        if not turns[task]:
            continue
        if task in split_tasks:
            records.extend(medgrit_record(entry, task, turns[task][start:start + max_turns], part) for part, start in
                           enumerate(range(0, len(turns[task]), max_turns)))
        else:
            records.append(medgrit_record(entry, task, turns[task][:max_turns]))
    return records


def _table(records: Iterable[dict], turns: bool) -> Dict[str, Dict[str, int]]:
    table: Dict[str, Counter] = {t: Counter() for t in TASKS}
    for rec in records:
        table[rec["task"]][modality_of(rec["image"])] += len(rec["conversations"]) if turns else 1
    return {t: dict(sorted(c.items())) for t, c in table.items()}


def _stats(config, index, entries, masks_used, images_in, split, train, test, skip, rewrite_counts) -> dict:
    """``stats.json``: the settings, what was read and used, the split, record counts, every skip."""
    return {
        "config": config,
        "images": {"listed": len(index), "used": len(entries), **{k: images_in[k] for k in ("train", "test", "train_views")}},
        "masks": {"listed": sum(len(v) for v in index.values()), "used": masks_used},
        "cases": {
            "train": sum(len(p["train"]) for p in split.values()),
            "test": sum(len(p["test"]) for p in split.values()),
            "per_modality": {m: {k: len(p[k]) for k in ("train", "test")} for m, p in split.items()},
        },
        "train": {"records": _table(train, turns=False), "qa_pairs": _table(train, turns=True)},
        "test": {"records": _table([r for t in TASKS for r in test[t]], turns=False)},
        "skipped": {r: skip.counts[r] for r in SKIP_REASONS if skip.counts[r]},
        "skipped_examples": {r: skip.examples[r] for r in SKIP_REASONS if skip.examples.get(r)},
        "rewrite": rewrite_counts,
    }
