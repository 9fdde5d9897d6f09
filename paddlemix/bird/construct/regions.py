"""Reading one SA-Med2D image and its masks into regions, counting what is skipped and why.

Structural problems (bad names, a mask listed under the wrong image, unknown class ids, missing
or unreadable files, a mask whose size differs from its image) stop a strict build; filters
(empty or tiny masks, an image left without regions, and the ambiguous boxes the conversation
step drops) are always skipped and counted.
"""

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from paddlemix.bird.boxes import box_to_grid
from paddlemix.bird.samed2d import (
    ClassNames,
    ConstructionError,
    SAName,
    mask_box,
    parse_image_name,
    parse_mask_name,
    read_mask,
)
from paddlemix.bird.views import view_box, view_size

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
    view: Optional[str] = None  # a dihedral view of the image file (paddlemix.bird.views), or None


def viewed_entry(entry: ImageEntry, view: str) -> ImageEntry:
    """The image and its regions as ``view`` shows them: same file, case and masks, boxes and sizes
    in the view's frame (the grid boxes recomputed from the pixel boxes)."""
    width, height = view_size(view, entry.width, entry.height)
    regions = []
    for region in entry.regions:
        box = view_box(view, region.box, entry.width, entry.height)
        regions.append(replace(region, box=box, grid=box_to_grid(box, width, height)))
    return ImageEntry(entry.name, entry.image, width, height, regions, view)


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
        pixels = read_mask(mask_path)
    except ConstructionError as exc:
        skip("mask_unreadable", str(exc))
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
