"""Med-GRIT construction: SA-Med2D image–mask pairs → VG / RO / GC / MII conversations.

Input is the SA-Med2D-20M layout (docs/ARCHITECTURE.md, "SA-Med2D layout"): ``images/<name>.png``,
``masks/<name>--<class>_<instance>.png``, the image → masks JSON and the class-id mapping JSON.
For every image the masks JSON lists:

1. each mask's tight bounding box (foreground = value > 0, pixel-exact, continuous corners as in
   :mod:`paddlemix.bird.boxes`) goes onto the [0, 1000) grid; its label comes from the class
   mapping (underscores read as spaces), its modality from the image name;
2. the image's regions become turns: VG (phrase → every box of that label), RO (box → name),
   GC (box → a sentence with name, position in the image, relative size and modality) and MII
   (whole image → the structures present with their boxes, largest first, at most
   ``max_mii_regions`` of them);
3. cases — ``(dataset, case)`` from the name — are split into train and test per modality, so no
   case is in both and every modality with at least two cases appears in test.

Outputs in ``out_dir``: ``train.json`` (one record per image and task, multi-turn: at most
``max_turns`` turns, a seeded random subset when the image offers more — or, for the tasks in
``split_tasks``, every turn, in as many records of at most ``max_turns`` turns as needed; one task
per record keeps ``task`` a canonical id and makes single-task subsets a filter away),
``test_{VG,RO,GC,MII}.json`` (single-turn records — seeded random phrases or regions —, by default
one per image and task so that ``id`` is the image stem as the release format and upstream
inference expect; ``test_questions`` > 1 asks up to that many different questions per image), and
``stats.json``. The k-th record of an image and task (k > 1) has the id ``<stem>--q<k>``. Records are
``{"id": stem, "image": "<stem>.png", "task", "conversations"}``; images are relative to
``<sa_root>/images``, so that folder is the ``image_root`` for the loader and for inference.

Every choice (template, turn order, which region a test record asks about, the split) comes from
``random.Random`` seeded with a SHA-256 of the seed and the image name or modality, so output does
not depend on processing order or ``PYTHONHASHSEED``.

Problems with the input are of two kinds. Structural errors (bad file names, a mask listed under
the wrong image, unknown class ids, missing or unreadable files, a mask whose size differs from
its image) raise :class:`ConstructionError` naming the file in strict mode and are skipped and
counted otherwise. Filters (empty masks, masks under ``min_mask_area`` pixels, a box shared by two
labels — RO/GC would have two right answers —, an image left without regions) are always
skipped and counted. ``stats.json`` lists every count and the first few messages per reason.

The optional rewrite step paraphrases GC and MII answers through an OpenAI-compatible
chat-completions endpoint and keeps a paraphrase only if its ``<ref>``/``<box>`` markup is
exactly the original's (in order); rewriting makes the output only as deterministic as the
endpoint.
"""

import glob
import hashlib
import json
import os
import random
import re
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from paddlemix.bird import templates as T
from paddlemix.bird.boxes import box_to_grid, format_box, format_ref_boxes
from paddlemix.bird.tasks import GC, MII, RO, TASKS, VG, modality_of
from paddlemix.processors.chat_template import with_image

MASK_JSON = "SAMed2D_v1.json"

# Reasons that stop a strict build; everything else in ``SKIP_REASONS`` is a data filter.
ERROR_REASONS = (
    "bad_image_name",
    "bad_mask_name",
    "mask_image_mismatch",
    "image_missing",
    "image_unreadable",
    "mask_missing",
    "mask_unreadable",
    "mask_size_mismatch",
    "unknown_class",
)
FILTER_REASONS = ("mask_empty", "mask_too_small", "ambiguous_box", "image_without_regions")
SKIP_REASONS = ERROR_REASONS + FILTER_REASONS
_EXAMPLES_PER_REASON = 5


class ConstructionError(ValueError):
    """The SA-Med2D input is not what construction expects; the message names the file."""


# ---------------------------------------------------------------------------------------------
# Names


@dataclass(frozen=True)
class SAName:
    """``{modality_sub}--{dataset}--{case}--{slice}``, e.g. ``ct_00--AbdomenCT1K--Case_00011--x_0040``."""

    modality_sub: str
    dataset: str
    case: str
    slice: str

    @property
    def stem(self) -> str:
        return f"{self.modality_sub}--{self.dataset}--{self.case}--{self.slice}"

    @property
    def modality(self) -> str:
        return modality_of(self.stem)

    @property
    def case_key(self) -> Tuple[str, str]:
        # Case ids restart per source dataset, so a case is only unique together with its dataset.
        return (self.dataset, self.case)

    @property
    def is_slice(self) -> bool:
        """True for slices cut from a 3D volume (``x_0040``), False for 2D images (``2d_none``)."""
        return self.slice.lower() != "2d_none"


@dataclass(frozen=True)
class MaskName:
    image: SAName
    class_id: int
    instance: int


_MODALITY_RE = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")
_SLICE_RE = re.compile(r"[A-Za-z0-9]+_(?:\d+|none)")
_MASK_SUFFIX_RE = re.compile(r"(\d+)_(\d+)")
_IMAGE_FORM = "{modality_sub}--{dataset}--{case}--{axis_NNNN|2d_none}.png"


def _split_name(path: str, parts: int, form: str) -> List[str]:
    name = os.path.basename(str(path))
    if not name.lower().endswith(".png"):
        raise ConstructionError(f"{path}: expected a .png named {form}")
    fields = name[:-4].split("--")
    if len(fields) != parts or not all(fields):
        raise ConstructionError(f"{path}: expected {parts} non-empty '--'-separated fields, as in {form}")
    return fields


def _image_fields(path: str, fields: Sequence[str], form: str) -> SAName:
    modality_sub, dataset, case, slice_ = fields
    if not _MODALITY_RE.fullmatch(modality_sub):
        raise ConstructionError(f"{path}: modality field {modality_sub!r} is not like 'ct_00' or 'mr_t1' ({form})")
    if not _SLICE_RE.fullmatch(slice_):
        raise ConstructionError(f"{path}: slice field {slice_!r} is not like 'z_0044' or '2d_none' ({form})")
    return SAName(modality_sub, dataset, case, slice_)


def parse_image_name(path: str) -> SAName:
    """An SA-Med2D image file name → its fields; :class:`ConstructionError` naming the file if malformed."""
    return _image_fields(path, _split_name(path, 4, _IMAGE_FORM), _IMAGE_FORM)


def parse_mask_name(path: str) -> MaskName:
    """``<image stem>--{classid:04d}_{instance:03d}.png`` → image fields, class id and instance."""
    form = _IMAGE_FORM[:-4] + "--{classid:04d}_{instance:03d}.png"
    fields = _split_name(path, 5, form)
    m = _MASK_SUFFIX_RE.fullmatch(fields[4])
    if m is None:
        raise ConstructionError(f"{path}: mask suffix {fields[4]!r} is not like '0003_000' ({form})")
    return MaskName(_image_fields(path, fields[:4], form), int(m.group(1)), int(m.group(2)))


# ---------------------------------------------------------------------------------------------
# Class names


def _class_id(value, path: str, key: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise ConstructionError(f"{path}: class {key!r} has id {value!r}; expected an integer or a digit string")
    return int(value)


def _reverse(mapping: dict, path: str, where: str) -> Dict[int, str]:
    """``{name: id}`` → ``{id: display name}``; of several names per id, the first non-``union_`` one."""
    by_id: Dict[int, str] = {}
    for name, value in mapping.items():
        cid = _class_id(value, path, f"{where}{name}")
        if cid not in by_id or (by_id[cid].startswith("union_") and not name.startswith("union_")):
            by_id[cid] = name
    return {cid: name.replace("_", " ").strip() for cid, name in by_id.items()}


class ClassNames:
    """Class id → name, per source dataset (SA-Med2D restarts ids in each dataset) or shared (flat file)."""

    def __init__(self, per_dataset: Dict[str, Dict[int, str]], shared: Optional[Dict[int, str]] = None):
        self.per_dataset = per_dataset
        self.shared = shared

    def name(self, dataset: str, class_id: int) -> Optional[str]:
        table = self.shared if self.shared is not None else self.per_dataset.get(dataset, {})
        return table.get(class_id)


def load_class_names(path: str) -> ClassNames:
    """Read ``{"liver": "0003"}`` (flat) or ``{"<dataset>": {"liver": "0003"}}`` (per dataset)."""
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise ConstructionError(f"{path}: expected a non-empty JSON object mapping class names to ids")
    nested = [isinstance(v, dict) for v in data.values()]
    if all(nested):
        return ClassNames({ds: _reverse(m, path, f"{ds}/") for ds, m in data.items()})
    if any(nested):
        raise ConstructionError(f"{path}: mixes per-dataset objects and flat name → id entries")
    return ClassNames({}, _reverse(data, path, ""))


def find_class_json(sa_root: str) -> str:
    """The one ``*class*.json`` in ``sa_root``; an error listing the candidates otherwise."""
    found = sorted(glob.glob(os.path.join(sa_root, "*class*.json")))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(os.path.basename(f) for f in found)})"
        raise ConstructionError(f"{sa_root}: found {what} *class*.json files; pass --class_json")
    return found[0]


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConstructionError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConstructionError(f"{path}: not valid JSON: {exc}") from None


def load_mask_index(path: str) -> Dict[str, List[str]]:
    """The ``{"images/x.png": ["masks/x--0003_000.png", ...]}`` JSON, checked for shape."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConstructionError(f"{path}: expected an object mapping image paths to lists of mask paths")
    for image, masks in data.items():
        if not isinstance(masks, list) or not all(isinstance(m, str) for m in masks):
            raise ConstructionError(f"{path}: entry {image!r} must map to a list of mask paths")
    return data


# ---------------------------------------------------------------------------------------------
# Regions


@dataclass(frozen=True)
class Region:
    """One mask instance: its label, pixel box ``(x1, y1, x2, y2)``, grid box, foreground pixels."""

    label: str
    class_id: int
    instance: int
    mask: str
    box: Tuple[int, int, int, int]
    grid: Tuple[int, int, int, int]
    area: int


@dataclass
class ImageEntry:
    name: SAName
    image: str  # path relative to <sa_root>/images
    width: int
    height: int
    regions: List[Region]


def mask_box(mask: np.ndarray) -> Optional[Tuple[Tuple[int, int, int, int], int]]:
    """Tight pixel box of ``mask > 0`` and its foreground pixel count; None for an empty mask.

    A colour mask counts a pixel as foreground when any colour channel is non-zero.
    """
    fg = np.asarray(mask)
    if fg.ndim == 3:
        fg = fg[..., :3].max(axis=2)
    fg = fg > 0
    rows = np.flatnonzero(fg.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(fg.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return box, int(np.count_nonzero(fg))


class SkipLog:
    """Counts of skipped items per reason, with a few example messages; raises in strict mode."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = defaultdict(list)

    def __call__(self, reason: str, message: str) -> None:
        if self.strict and reason in ERROR_REASONS:
            raise ConstructionError(message)
        self.counts[reason] += 1
        if len(self.examples[reason]) < _EXAMPLES_PER_REASON:
            self.examples[reason].append(message)


def read_image_entry(
    sa_root: str,
    image_rel: str,
    mask_rels: Sequence[str],
    classes: ClassNames,
    min_mask_area: int,
    skip: SkipLog,
) -> Tuple[Optional[ImageEntry], int]:
    """One image and its masks → an :class:`ImageEntry` (None if unusable) and the masks used."""
    try:
        name = parse_image_name(image_rel)
    except ConstructionError as exc:
        skip("bad_image_name", str(exc))
        return None, 0
    image_path = os.path.join(sa_root, image_rel)
    if not os.path.isfile(image_path):
        skip("image_missing", f"{image_path}: image listed in the mask JSON is missing")
        return None, 0
    try:
        with Image.open(image_path) as im:
            width, height = im.size
            im.verify()
    except Exception as exc:  # PIL raises many types for a damaged file
        skip("image_unreadable", f"{image_path}: cannot read image: {type(exc).__name__}: {exc}")
        return None, 0

    regions = []
    for mask_rel in mask_rels:
        region = _read_region(sa_root, mask_rel, name, width, height, classes, min_mask_area, skip)
        if region is not None:
            regions.append(region)
    if not regions:
        skip("image_without_regions", f"{image_path}: no usable mask")
        return None, 0
    image = os.path.relpath(os.path.join(sa_root, image_rel), os.path.join(sa_root, "images"))
    return ImageEntry(name, image.replace(os.sep, "/"), width, height, regions), len(regions)


def _read_region(sa_root, mask_rel, name, width, height, classes, min_mask_area, skip) -> Optional[Region]:
    mask_path = os.path.join(sa_root, mask_rel)
    try:
        mask_name = parse_mask_name(mask_rel)
    except ConstructionError as exc:
        skip("bad_mask_name", str(exc))
        return None
    if mask_name.image != name:
        skip("mask_image_mismatch", f"{mask_path}: listed under image {name.stem}.png but named for another image")
        return None
    label = classes.name(name.dataset, mask_name.class_id)
    if label is None:
        skip("unknown_class", f"{mask_path}: class id {mask_name.class_id} not in the class mapping for {name.dataset}")
        return None
    if not os.path.isfile(mask_path):
        skip("mask_missing", f"{mask_path}: mask listed in the mask JSON is missing")
        return None
    try:
        with Image.open(mask_path) as im:
            pixels = np.asarray(im)
    except Exception as exc:  # PIL raises many types for a damaged file
        skip("mask_unreadable", f"{mask_path}: cannot read mask: {type(exc).__name__}: {exc}")
        return None
    if pixels.shape[:2] != (height, width):
        size = f"{pixels.shape[1]}x{pixels.shape[0]}"
        skip("mask_size_mismatch", f"{mask_path}: mask is {size}, image is {width}x{height}")
        return None
    found = mask_box(pixels)
    if found is None:
        skip("mask_empty", f"{mask_path}: no foreground pixels")
        return None
    box, area = found
    if area < min_mask_area:
        skip("mask_too_small", f"{mask_path}: {area} foreground pixels < {min_mask_area}")
        return None
    return Region(label, mask_name.class_id, mask_name.instance, mask_rel, box, box_to_grid(box, width, height), area)


# ---------------------------------------------------------------------------------------------
# Conversations


def stable_rng(*parts) -> random.Random:
    """A ``random.Random`` seeded from the SHA-256 of ``parts`` (same everywhere, any order)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


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


def _record(entry: ImageEntry, task: str, turns: Sequence[Tuple[str, str]], part: int = 0) -> dict:
    """One record; the ``part``-th record of an image and task gets the id ``<stem>--q<part + 1>``
    (the first keeps the bare stem, as the release format has it)."""
    conversations = [[q, a] for q, a in turns]
    conversations[0][0] = with_image(conversations[0][0], entry.image)
    rec_id = entry.name.stem if part == 0 else f"{entry.name.stem}--q{part + 1}"
    return {"id": rec_id, "image": entry.image, "task": task, "conversations": conversations}


# ---------------------------------------------------------------------------------------------
# Split


def split_cases(entries: Iterable[ImageEntry], test_ratio: float, seed: int) -> Dict[str, Dict[str, list]]:
    """``{modality: {"train": [case keys], "test": [case keys]}}``; a case belongs to one modality.

    A case's modality is the most common one among its images (ties: alphabetical). Within a
    modality the cases are shuffled by a seeded RNG and the first ``round(n * test_ratio)`` go
    to test, at least one when there are two or more cases and never all of them.
    """
    if not 0 <= test_ratio < 1:
        raise ValueError(f"test_ratio must be in [0, 1), got {test_ratio}")
    modalities: Dict[Tuple[str, str], Counter] = defaultdict(Counter)
    for e in entries:
        modalities[e.name.case_key][e.name.modality] += 1
    per_modality: Dict[str, List[Tuple[str, str]]] = defaultdict(list)
    for key, counts in modalities.items():
        modality = min(counts, key=lambda m: (-counts[m], m))
        per_modality[modality].append(key)
    split = {}
    for modality in sorted(per_modality):
        keys = sorted(per_modality[modality])
        stable_rng(seed, "split", modality).shuffle(keys)
        n = len(keys)
        n_test = 0 if test_ratio == 0 or n < 2 else min(n - 1, max(1, round(n * test_ratio)))
        split[modality] = {"train": sorted(keys[n_test:]), "test": sorted(keys[:n_test])}
    return split


# ---------------------------------------------------------------------------------------------
# Rewriting


_MARKUP_RE = re.compile(r"<(ref|box)>(.*?)</\1>", re.S)
REWRITE_SYSTEM_PROMPT = (
    "You rewrite short descriptions of medical images in different words. Keep the meaning and "
    "every fact. Copy every <ref>...</ref> and <box>...</box> span exactly as written, in the "
    "same order, and add no new ones. Reply with the rewritten text only."
)


def markup(text: str) -> List[Tuple[str, str]]:
    """The ``<ref>``/``<box>`` spans of a text in order, whitespace inside boxes ignored."""
    return [(kind, re.sub(r"\s+", "", body) if kind == "box" else body) for kind, body in _MARKUP_RE.findall(text)]


def keeps_markup(original: str, paraphrase: str) -> bool:
    """True when a paraphrase is non-empty and has exactly the original's refs and boxes, in order."""
    tags = ("<ref>", "</ref>", "<box>", "</box>")
    if not paraphrase.strip() or any(paraphrase.count(t) != original.count(t) for t in tags):
        return False
    return markup(paraphrase) == markup(original)


class ChatRewriter:
    """Paraphrases text through an OpenAI-compatible ``/chat/completions`` endpoint (urllib only)."""

    def __init__(
        self, endpoint: str, model: str, api_key: Optional[str] = None, timeout: float = 60.0, temperature: float = 0.7
    ):
        url = endpoint.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.temperature = temperature

    def __call__(self, text: str) -> str:
        body = {
            "model": self.model,
            "temperature": self.temperature,
            "messages": [{"role": "system", "content": REWRITE_SYSTEM_PROMPT}, {"role": "user", "content": text}],
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, json.dumps(body).encode("utf-8"), headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            reply = json.load(response)
        return reply["choices"][0]["message"]["content"].strip()


def rewrite_answers(
    records: Sequence[dict], rewrite, tasks: Sequence[str] = (GC, MII), workers: int = 4, progress: bool = False
) -> Counter:
    """Replace GC/MII answers in place by paraphrases that keep their markup.

    ``rewrite`` is any ``text -> text`` callable (a :class:`ChatRewriter`). Returns counts of
    ``rewritten``, ``rejected`` (markup changed or empty; the original is kept) and ``failed``
    (the call raised; the original is kept).
    """
    slots = [(rec, i) for rec in records if rec["task"] in tasks for i in range(len(rec["conversations"]))]

    def one(slot):
        rec, i = slot
        original = rec["conversations"][i][1]
        try:
            paraphrase = rewrite(original)
        except Exception:  # one failed call (network, bad reply) must not stop the build
            return "failed"
        if not isinstance(paraphrase, str) or not keeps_markup(original, paraphrase):
            return "rejected"
        rec["conversations"][i][1] = paraphrase
        return "rewritten"

    counts = Counter({"rewritten": 0, "rejected": 0, "failed": 0})
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for outcome in tqdm(pool.map(one, slots), total=len(slots), desc="rewrite", disable=not progress):
            counts[outcome] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# The whole build


def _table(records: Iterable[dict], turns: bool) -> Dict[str, Dict[str, int]]:
    table: Dict[str, Counter] = {t: Counter() for t in TASKS}
    for rec in records:
        table[rec["task"]][modality_of(rec["image"])] += len(rec["conversations"]) if turns else 1
    return {t: dict(sorted(c.items())) for t, c in table.items()}


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
    rewriter=None,
    rewrite_workers: int = 4,
    progress: bool = True,
) -> dict:
    """Build train/test Med-GRIT files from an SA-Med2D folder; returns (and writes) the stats."""
    if max_turns < 1 or max_mii_regions < 1 or test_questions < 1:
        raise ValueError("max_turns, max_mii_regions and test_questions must be at least 1")
    unknown = sorted(set(split_tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"split_tasks: unknown task(s) {unknown}; known: {list(TASKS)}")
    if not os.path.isdir(sa_root):
        raise ConstructionError(f"{sa_root}: no such folder (--sa_root is the SA-Med2D folder with images/ and masks/)")
    mask_json = mask_json or os.path.join(sa_root, MASK_JSON)
    class_json = class_json or find_class_json(sa_root)
    classes = load_class_names(class_json)
    index = load_mask_index(mask_json)
    skip = SkipLog(strict)

    entries: List[ImageEntry] = []
    masks_used = 0
    for image_rel in tqdm(sorted(index), desc="images", disable=not progress):
        entry, used = read_image_entry(sa_root, image_rel, index[image_rel], classes, min_mask_area, skip)
        if entry is not None:
            entries.append(entry)
            masks_used += used

    split = split_cases(entries, test_ratio, seed)
    test_cases = {key for parts in split.values() for key in parts["test"]}
    train: List[dict] = []
    test: Dict[str, List[dict]] = {t: [] for t in TASKS}
    images_in = Counter()
    for entry in entries:
        turns = image_turns(entry, stable_rng(seed, entry.name.stem), skip, max_mii_regions)
        in_test = entry.name.case_key in test_cases
        images_in["test" if in_test else "train"] += 1
        for task in TASKS:
            if not turns[task]:
                continue
            if in_test:
                test[task].extend(_record(entry, task, [turn], part) for part, turn in
                                  enumerate(turns[task][:test_questions]))
            elif task in split_tasks:
                train.extend(_record(entry, task, turns[task][start:start + max_turns], part) for part, start in
                             enumerate(range(0, len(turns[task]), max_turns)))
            else:
                train.append(_record(entry, task, turns[task][:max_turns]))

    rewrite_counts = None
    if rewriter is not None:
        everything = train + [rec for task in TASKS for rec in test[task]]
        rewrite_counts = dict(rewrite_answers(everything, rewriter, workers=rewrite_workers, progress=progress))

    os.makedirs(out_dir, exist_ok=True)
    _write_json(os.path.join(out_dir, "train.json"), train)
    for task in TASKS:
        _write_json(os.path.join(out_dir, f"test_{task}.json"), test[task])

    stats = {
        "config": {
            "sa_root": os.path.abspath(sa_root),
            "mask_json": os.path.abspath(mask_json),
            "class_json": os.path.abspath(class_json),
            "image_root": os.path.abspath(os.path.join(sa_root, "images")),
            "seed": seed,
            "test_ratio": test_ratio,
            "min_mask_area": min_mask_area,
            "max_turns": max_turns,
            "max_mii_regions": max_mii_regions,
            "split_tasks": sorted(split_tasks),
            "test_questions": test_questions,
            "strict": strict,
        },
        "images": {"listed": len(index), "used": len(entries), **{k: images_in[k] for k in ("train", "test")}},
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
    _write_json(os.path.join(out_dir, "stats.json"), stats, indent=2)
    return stats


def _write_json(path: str, data, indent: int = 1) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=indent)
        f.write("\n")
    os.replace(tmp, path)
