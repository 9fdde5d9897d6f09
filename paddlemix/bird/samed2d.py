"""The SA-Med2D-20M folder layout (docs/ARCHITECTURE.md, "SA-Med2D layout"): file names, the two JSON indexes, masks.

One home for what data construction reads and the demo set writes::

    images/{modality_sub}--{dataset}--{case}--{axis_NNNN|2d_none}.png
    masks/{image stem}--{classid:04d}_{instance:03d}.png     0 background, > 0 foreground
    SAMed2D_v1.json                   {"images/x.png": ["masks/x--0003_000.png", ...]}
    SAMed2D_v1_class_mapping_id.json  {"<dataset>": {"<class name>": "0003", ...}} or the flat
                                      {"<class name>": "0003", ...}

Class ids restart in each source dataset, which is why the per-dataset shape exists; the flat
shape applies one table to every dataset. Problems with a file raise :class:`ConstructionError`
naming it.
"""

import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from paddlemix.bird.tasks import modality_of

IMAGES_DIR = "images"
MASKS_DIR = "masks"
MASK_JSON = "SAMed2D_v1.json"
CLASS_JSON = "SAMed2D_v1_class_mapping_id.json"


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

    @property
    def image_file(self) -> str:
        """The image's path relative to the SA-Med2D root: ``images/<stem>.png``."""
        return f"{IMAGES_DIR}/{self.stem}.png"

    def mask_file(self, class_id: int, instance: int) -> str:
        """A mask's path relative to the SA-Med2D root: ``masks/<stem>--{classid:04d}_{instance:03d}.png``."""
        return f"{MASKS_DIR}/{self.stem}--{class_id:04d}_{instance:03d}.png"


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
# The class-id mapping


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


def class_mapping(per_dataset: Mapping[str, Mapping[str, int]]) -> Dict[str, Dict[str, str]]:
    """``{dataset: {class name: id}}`` → the per-dataset class JSON's content (ids as ``"0003"``)."""
    return {dataset: {name: f"{cid:04d}" for name, cid in classes.items()} for dataset, classes in per_dataset.items()}


def find_class_json(sa_root: str) -> str:
    """The one ``*class*.json`` in ``sa_root``; an error listing the candidates otherwise."""
    found = sorted(glob.glob(os.path.join(sa_root, "*class*.json")))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(os.path.basename(f) for f in found)})"
        raise ConstructionError(f"{sa_root}: found {what} *class*.json files; pass --class_json")
    return found[0]


# ---------------------------------------------------------------------------------------------
# The image → masks index


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
# Masks


def read_mask(path: str) -> np.ndarray:
    """A mask file's pixels; :class:`ConstructionError` naming the file when PIL cannot read it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as exc:  # PIL raises many types for a damaged file
        raise ConstructionError(f"{path}: cannot read mask: {type(exc).__name__}: {exc}") from None


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
