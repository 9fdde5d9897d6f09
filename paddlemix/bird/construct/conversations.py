"""One image's regions → the turns of the four tasks, and the Med-GRIT records that carry them.

VG asks for a phrase and answers with every box of that label; RO asks about a box and answers
with its name; GC answers a box with a sentence (name, position, relative size, modality); MII
describes the whole image: the structures present with their boxes, largest first.
"""

import random
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

from paddlemix.bird import templates as T
from paddlemix.bird.boxes import format_box, format_ref_boxes
from paddlemix.bird.construct.regions import ImageEntry, Region, SkipLog
from paddlemix.bird.image_tag import with_image
from paddlemix.bird.tasks import GC, MII, RO, VG


def _join(items: Sequence[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _region_words(region: Region, entry: ImageEntry) -> dict:
    x1, y1, x2, y2 = region.box
    fraction = region.area / (entry.width * entry.height)
    return {
        "position": T.position_words((x1 + x2) / 2 / entry.width, (y1 + y2) / 2 / entry.height),
        "size": T.size_words(fraction),
        "percent": T.percent_words(fraction),
    }


def _unambiguous(regions: Sequence[Region], skip: SkipLog, entry: ImageEntry) -> List[Region]:
    """One region per grid box; boxes that two labels share are dropped (RO/GC could not be answered)."""
    by_grid: Dict[Tuple[int, ...], List[Region]] = defaultdict(list)
    for r in regions:
        by_grid[r.grid].append(r)
    kept = []
    for grid in sorted(by_grid):
        labels = {r.label for r in by_grid[grid]}
        if len(labels) > 1:
            skip("ambiguous_box", f"{entry.name.stem}: box {grid} belongs to {sorted(labels)}; no RO/GC turn")
            continue
        kept.append(by_grid[grid][0])
    return kept


def image_turns(entry: ImageEntry, rng: random.Random, skip: SkipLog, max_mii_regions: int = 10) -> Dict[str, list]:
    """Every turn one image yields, per task, in a seeded random order."""
    ctx = {"modality": T.modality_words(entry.name.modality_sub), "kind": "slice" if entry.name.is_slice else "image"}
    by_label: Dict[str, List[Region]] = defaultdict(list)
    for r in entry.regions:
        by_label[r.label].append(r)

    vg = []
    for label in sorted(by_label):
        boxes = sorted({r.grid for r in by_label[label]}, key=lambda b: (b[1], b[0], b[3], b[2]))
        vg.append((rng.choice(T.VG_QUESTIONS).format(phrase=label, **ctx), format_ref_boxes(label, boxes)))

    ro, gc = [], []
    for region in _unambiguous(entry.regions, skip, entry):
        box = format_box(region.grid)
        ro.append((rng.choice(T.RO_QUESTIONS).format(box=box, **ctx), region.label))
        words = _region_words(region, entry)
        answer = rng.choice(T.GC_ANSWERS).format(phrase=region.label, **words, **ctx)
        gc.append((rng.choice(T.GC_QUESTIONS).format(box=box, **ctx), answer))

    mii = [(rng.choice(T.MII_QUESTIONS).format(**ctx), _mii_answer(entry, by_label, rng, ctx, max_mii_regions))]
    for turns in (vg, ro, gc):
        rng.shuffle(turns)
    return {VG: vg, RO: ro, GC: gc, MII: mii}


def _mii_answer(entry, by_label, rng, ctx, max_regions) -> str:
    totals = sorted(by_label, key=lambda label: (-sum(r.area for r in by_label[label]), label))
    shown = totals[:max_regions]
    items = []
    for label in shown:
        boxes = sorted({r.grid for r in by_label[label]}, key=lambda b: (b[1], b[0], b[3], b[2]))
        items.append(format_ref_boxes(label, boxes))
    count = T.count_words(len(shown), len(totals))
    parts = [rng.choice(T.MII_SUMMARIES).format(count=count, items=_join(items), **ctx)]
    largest = max(by_label[totals[0]], key=lambda r: r.area)
    words = _region_words(largest, entry)
    template = T.MII_LARGEST if len(totals) > 1 else T.MII_SINGLE
    parts.append(rng.choice(template).format(phrase=largest.label, **words))
    if entry.name.is_slice:
        parts.append(T.MII_SLICE_NOTE.format(**ctx))
    return " ".join(parts)


def medgrit_record(entry: ImageEntry, task: str, turns: Sequence[Tuple[str, str]], part: int = 0) -> dict:
    """One record; the ``part``-th record of an image and task gets the id ``<stem>--q<part + 1>``
    (the first keeps the bare stem, as the release format has it). A viewed image's records carry
    ``"view"`` and the id ``<stem>--<view>[--q<part + 1>]``."""
    conversations = [[q, a] for q, a in turns]
    conversations[0][0] = with_image(conversations[0][0], entry.image)
    stem = entry.name.stem if entry.view is None else f"{entry.name.stem}--{entry.view}"
    rec_id = stem if part == 0 else f"{stem}--q{part + 1}"
    record = {"id": rec_id, "image": entry.image, "task": task, "conversations": conversations}
    if entry.view is not None:
        record["view"] = entry.view
    return record
