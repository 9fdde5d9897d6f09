"""Build the embedded demo set: a small SA-Med2D-20M-layout folder from real images and masks
that ship inside public packages (Debian ``mricron-data`` and ``invesalius-examples``, PyPI
``stardist``).

Nothing here is downloaded and nothing is committed: the packages are read where they are
installed and converted at run time. Each package holds one subject, so a "case" (the unit a
train/test split groups by) is a contiguous slab of slices of a volume, or one tile of a large
2-D image; neighbouring slices never straddle a split that way.

The folder written has the SA-Med2D layout of :mod:`paddlemix.bird.samed2d` (its masks binary
0/255, one connected instance each, the class mapping in the per-dataset shape), plus
``SOURCES.md`` and ``demo_manifest.json``.
"""

from __future__ import annotations

import importlib.util
import plistlib
import shutil
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

from paddlemix.bird.jsonio import write_json_atomic, write_text_atomic
from paddlemix.bird.samed2d import CLASS_JSON, IMAGES_DIR, MASK_JSON, MASKS_DIR, SAName, class_mapping
from paddlemix.bird.tasks import modality_of

LONG_SIDE = 256  # output images are scaled so that their long side has this many pixels
MIN_MASK_AREA = 64  # connected pieces smaller than this (output pixels) are omitted
SLAB_SLICES = 12  # source slices per case for volumes
# The head CT holds only 106 slices: slabs of 12 leave one test case, on which one generic box
# fits both classes; slabs of 6 put two slabs at different heights in test (seed 0).
CT_SLAB_SLICES = 6
DEFAULT_MAX_IMAGES = 500

MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
MRICRON_COPYRIGHT = Path("/usr/share/doc/mricron-data/copyright")
INVESALIUS_PROJECT = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
INVESALIUS_COPYRIGHT = Path("/usr/share/doc/invesalius-examples/copyright")

MANIFEST = "demo_manifest.json"
SOURCES = "SOURCES.md"

# AAL region names (aal.nii.txt, without the _L/_R suffix) grouped into named anatomical
# classes. Each group is split into a left and a right class, except the midline vermis.
# Fusiform and parahippocampal gyri are counted with the temporal lobe (a common lobar grouping
# of AAL, although their AAL codes put them under occipital and limbic); hippocampus and
# amygdala keep their own class.
AAL_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("frontal lobe", ("Precentral", "Frontal_Sup", "Frontal_Sup_Orb", "Frontal_Mid",
                      "Frontal_Mid_Orb", "Frontal_Inf_Oper", "Frontal_Inf_Tri",
                      "Frontal_Inf_Orb", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory",
                      "Frontal_Sup_Medial", "Frontal_Med_Orb", "Rectus")),
    ("parietal lobe", ("Postcentral", "Parietal_Sup", "Parietal_Inf", "SupraMarginal",
                       "Angular", "Precuneus", "Paracentral_Lobule")),
    ("temporal lobe", ("Heschl", "Temporal_Sup", "Temporal_Pole_Sup", "Temporal_Mid",
                       "Temporal_Pole_Mid", "Temporal_Inf", "Fusiform", "ParaHippocampal")),
    ("occipital lobe", ("Calcarine", "Cuneus", "Lingual", "Occipital_Sup", "Occipital_Mid",
                        "Occipital_Inf")),
    ("insula", ("Insula",)),
    ("cingulate gyrus", ("Cingulum_Ant", "Cingulum_Mid", "Cingulum_Post")),
    ("hippocampus", ("Hippocampus",)),
    ("amygdala", ("Amygdala",)),
    ("caudate nucleus", ("Caudate",)),
    ("putamen", ("Putamen",)),
    ("globus pallidus", ("Pallidum",)),
    ("thalamus", ("Thalamus",)),
    ("cerebellar hemisphere", ("Cerebelum_Crus1", "Cerebelum_Crus2", "Cerebelum_3",
                               "Cerebelum_4_5", "Cerebelum_6", "Cerebelum_7b", "Cerebelum_8",
                               "Cerebelum_9", "Cerebelum_10")),
]
AAL_MIDLINE = ("cerebellar vermis", "Vermis")


class MissingSourceError(RuntimeError):
    """A default source package is not installed; the message says what to install."""


@dataclass
class Instance:
    """One connected mask piece, stored as its bounding-box crop to keep memory small."""

    class_id: int
    top: int
    left: int
    crop: np.ndarray  # bool (h, w)

    def full(self, shape: tuple[int, int]) -> np.ndarray:
        mask = np.zeros(shape, dtype=np.uint8)
        h, w = self.crop.shape
        mask[self.top:self.top + h, self.left:self.left + w][self.crop] = 255
        return mask


@dataclass
class DemoImage:
    case: str
    position: str  # "z_0042", "y_0100" or "2d_none"
    pixels: np.ndarray  # uint8 (H, W)
    instances: list[Instance]


@dataclass
class DemoSource:
    """One converted package: its images and how they were made."""

    dataset: str
    modality_sub: str
    classes: dict[str, int]  # class name -> class id (ids restart in each dataset)
    images: list[DemoImage] = field(default_factory=list)
    sources_md: str = ""  # this source's section of SOURCES.md

    def name(self, image: DemoImage) -> SAName:
        return SAName(self.modality_sub, self.dataset, image.case, image.position)


# ----------------------------------------------------------------------------- array helpers


def output_size(height: int, width: int, long_side: int = LONG_SIDE) -> tuple[int, int]:
    """(H, W) scaled so that the long side is ``long_side``, aspect ratio kept."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear window [low, high] -> [0, 255]."""
    scaled = (values.astype(np.float32) - low) / max(high - low, 1e-6)
    return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def resize_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 image to (H, W)."""
    if pixels.shape[:2] == size:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.BILINEAR))


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer label map (or bool mask) to (H, W)."""
    if labels.shape[:2] == size:
        return labels
    dtype = labels.dtype
    resized = Image.fromarray(labels.astype(np.int32)).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(resized).astype(dtype)


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def connected_instances(mask: np.ndarray, class_id: int, min_area: int = MIN_MASK_AREA) -> list[Instance]:
    """Split a bool mask into 8-connected pieces of at least ``min_area`` pixels, raster order."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    pieces = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        crop = labels[box] == index
        if crop.sum() >= min_area:
            pieces.append(Instance(class_id, box[0].start, box[1].start, crop))
    return pieces


def slab_case(index: int, first: int, prefix: str = "slab", slices: int = SLAB_SLICES) -> str:
    return f"{prefix}{(index - first) // slices:02d}"


# ----------------------------------------------------------------------------- sources


def aal_class_table(names_file: Path) -> tuple[dict[str, int], np.ndarray]:
    """Class ids for the AAL groups and a lookup table AAL label value -> class id (0 = none).

    ``names_file`` is mricron's ``aal.nii.txt``: lines ``<value> <Region_L|R> <code>``.
    """
    group_of = {region: group for group, regions in AAL_GROUPS for region in regions}
    classes: dict[str, int] = {}
    for group, _ in AAL_GROUPS:
        for side in ("left", "right"):
            classes[f"{side} {group}"] = len(classes) + 1
    classes[AAL_MIDLINE[0]] = len(classes) + 1

    lut = np.zeros(256, dtype=np.uint8)
    for line_no, line in enumerate(names_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            raise ValueError(f"{names_file}:{line_no}: expected '<value> <region name> ...', got {line!r}")
        value, region = int(parts[0]), parts[1]
        if region.startswith(AAL_MIDLINE[1]):
            lut[value] = classes[AAL_MIDLINE[0]]
            continue
        base, _, side = region.rpartition("_")
        if side not in ("L", "R") or base not in group_of:
            raise ValueError(f"{names_file}:{line_no}: AAL region {region!r} is in no class group")
        lut[value] = classes[f"{'left' if side == 'L' else 'right'} {group_of[base]}"]
    return classes, lut


def colin27_aal_source(templates: Path = MRICRON_TEMPLATES) -> DemoSource:
    """Colin27 T1 MR (ch2.nii.gz) with the AAL atlas (aal.nii.gz), axial and coronal slices."""
    import nibabel

    classes, lut = aal_class_table(templates / "aal.nii.txt")
    t1_img = nibabel.as_closest_canonical(nibabel.load(templates / "ch2.nii.gz"))
    aal_img = nibabel.as_closest_canonical(nibabel.load(templates / "aal.nii.gz"))
    if not np.allclose(t1_img.affine, aal_img.affine) or t1_img.shape != aal_img.shape:
        raise ValueError(f"{templates}: ch2.nii.gz and aal.nii.gz are not on the same voxel grid")
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)  # (x: left->right, y: post->ant, z: inf->sup)
    region = lut[np.asarray(aal_img.dataobj).astype(np.int64)]
    low, high = np.percentile(t1[t1 > 0], [0.5, 99.5])

    source = DemoSource("colin27aal", "mr_t1", classes)
    # axis letter, voxel axis, slice step: every axial slice, every second coronal one
    for axis, dim, step in (("z", 2, 1), ("y", 1, 2)):
        present = np.flatnonzero(region.any(axis=tuple(d for d in range(3) if d != dim)))
        for index in range(present[0], present[-1] + 1, step):
            plane = (slice(None),) * dim + (index,)
            t1_slice, region_slice = t1[plane], region[plane]
            # radiological display: first array axis (x) runs patient right -> left across the
            # columns, the remaining axis (anterior or superior) runs top -> bottom
            t1_slice = t1_slice.T[::-1, ::-1]
            region_slice = region_slice.T[::-1, ::-1]
            size = output_size(*t1_slice.shape)
            pixels = resize_image(to_uint8(t1_slice, low, high), size)
            class_map = resize_labels(region_slice, size)
            instances = [piece for class_id in np.unique(class_map) if class_id
                         for piece in connected_instances(class_map == class_id, int(class_id))]
            if instances:
                case = slab_case(index, present[0], prefix=f"{axis}slab")
                source.images.append(DemoImage(case, f"{axis}_{index:04d}", pixels, instances))
    source.sources_md = f"""## colin27aal (mr_t1)

- Package: Debian `mricron-data`; files `{templates}/ch2.nii.gz` (Colin27 single-subject T1 MR,
  1 mm, MNI space), `aal.nii.gz` (Automated Anatomical Labeling atlas, 116 regions, same voxel
  grid) and `aal.nii.txt` (region names).
- Licence as stated in `{MRICRON_COPYRIGHT}`: `Files: *` — Copyright 2006-2010 Chris Rorden,
  BSD-3-clause (the file lists no separate terms for the templates). Please also cite the
  atlas authors (Tzourio-Mazoyer et al., NeuroImage 2002) and Colin27 (Holmes et al., 1998).
- Conversion: T1 intensities mapped to 8 bit by the 0.5-99.5 percentile window of the non-zero
  voxels of the whole volume; axial (z, every slice) and coronal (y, every second slice) slices,
  shown radiologically (patient right on the image left; anterior / superior at the top),
  resized to {LONG_SIDE} px on the long side (bilinear for the image, nearest for the labels).
  The 116 AAL regions are merged into {len(classes)} classes: left/right frontal, parietal,
  temporal (with fusiform and parahippocampal gyri) and occipital lobes, insula, cingulate gyrus,
  hippocampus, amygdala, caudate nucleus, putamen, globus pallidus, thalamus, cerebellar
  hemisphere, plus the midline cerebellar vermis. Left and right are separate classes; each mask
  file is one 8-connected piece of a class on a slice; pieces under {MIN_MASK_AREA} px are omitted.
- Cases: `zslabNN` = {SLAB_SLICES} consecutive axial slices, `yslabNN` = {SLAB_SLICES} consecutive
  coronal slice positions; all cases come from the one Colin27 subject.
"""
    return source


def read_invesalius_project(path: Path) -> tuple[dict, np.ndarray, list[tuple[dict, np.ndarray]]]:
    """The CT matrix and saved masks of an InVesalius ``.inv3`` project (a gzipped tar).

    Returns (main plist, volume (slices, rows, cols) int16, [(mask plist, bool volume), ...]).
    Saved masks carry one extra leading plane/row/column of bookkeeping flags, dropped here;
    255 marks a voxel inside the mask.
    """
    with tarfile.open(path, "r:gz") as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            if name not in members:
                raise ValueError(f"{path}: the project has no {name}")
            return archive.extractfile(members[name]).read()

        main = plistlib.loads(read("main.plist"))
        matrix = main["matrix"]
        volume = np.frombuffer(read(matrix["filename"]), dtype=np.dtype(matrix["dtype"]).newbyteorder("<"))
        volume = volume.reshape(matrix["shape"])
        masks = []
        for key in sorted(main.get("masks", {}), key=int):
            meta = plistlib.loads(read(main["masks"][key]))
            data = np.frombuffer(read(meta["mask_file"]), dtype=np.uint8).reshape(meta["mask_shape"])
            masks.append((meta, data[1:, 1:, 1:] == 255))
    return main, volume, masks


CT_WINDOW = (40.0, 400.0)  # level, width in HU: brain grey, bone white


def invesalius_source(project: Path = INVESALIUS_PROJECT) -> DemoSource:
    """Head CT of the InVesalius example project with its two saved masks (bone, head)."""
    main, volume, masks = read_invesalius_project(project)
    if len(masks) != 2:
        raise ValueError(f"{project}: expected the bone and head masks, found {len(masks)} masks")
    (bone_meta, bone), (head_meta, head) = sorted(masks, key=lambda m: -m[0]["threshold_range"][0])
    classes = {"bone": 1, "head": 2}
    level, width = CT_WINDOW
    source = DemoSource("invesalius", "ct_00", classes)
    for index in range(volume.shape[0]):
        # the project stores rows posterior -> anterior; flip so anterior is at the top
        pixels = to_uint8(volume[index, ::-1], level - width / 2, level + width / 2)
        size = output_size(*pixels.shape)
        pixels = resize_image(pixels, size)
        # the head is one object; the other pieces of the tissue mask are the CT head rest
        head_pieces = connected_instances(resize_labels(head[index, ::-1], size), classes["head"])
        if head_pieces:
            head_piece = max(head_pieces, key=lambda piece: int(piece.crop.sum()))
            # the head rest is dense enough to pass the bone threshold too: keep bone in the head
            inside = head_piece.full(size) > 0
            bone_slice = resize_labels(bone[index, ::-1], size) & inside
            instances = connected_instances(bone_slice, classes["bone"]) + [head_piece]
            source.images.append(DemoImage(slab_case(index, 0, slices=CT_SLAB_SLICES), f"z_{index:04d}", pixels, instances))
    bone_range = "–".join(str(v) for v in bone_meta["threshold_range"])
    head_range = "–".join(str(v) for v in head_meta["threshold_range"])
    source.sources_md = f"""## invesalius (ct_00)

- Package: Debian `invesalius-examples`; file `{project}` (InVesalius 3 project
  "{main.get('name', '?')}": a head CT of {volume.shape[0]} axial slices of
  {volume.shape[1]}x{volume.shape[2]} px with two saved masks).
- Licence as stated in `{INVESALIUS_COPYRIGHT}`: `Files: *` — © 2008-2021 Centro de Tecnologia da
  Informação Renato Archer and the InVesalius authors, GPL-2.
- Masks: the two masks shipped in the project, not re-derived here. They are InVesalius threshold
  masks (voxel-for-voxel equal to thresholding the shipped CT): "bone" = {bone_range} HU,
  "head" = {head_range} HU. For "head" only the largest piece per slice is kept (the other pieces
  are the CT head rest); "bone" is restricted to that head piece (the head rest also passes the
  bone threshold) and keeps every 8-connected piece of at least {MIN_MASK_AREA} px.
- Conversion: window level {CT_WINDOW[0]:g} HU / width {CT_WINDOW[1]:g} HU to 8 bit; rows flipped so
  that anterior is at the top; {LONG_SIDE} px images (the source size).
- Cases: `slabNN` = {CT_SLAB_SLICES} consecutive axial slices of the one subject.
"""
    return source


def stardist_images_dir() -> Path | None:
    """stardist's bundled example images, located without importing stardist."""
    spec = importlib.util.find_spec("stardist")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


STARDIST_TILE_GRID = 8  # the 512x512 image is cut into 8x8 tiles of 64 px (about 2-4 nuclei), one case each


def stardist_source(images_dir: Path | None = None) -> DemoSource:
    """Fluorescence nuclei (img2d.tif + instance labels mask2d.tif), cut into tiles."""
    images_dir = images_dir or stardist_images_dir()
    image = np.asarray(Image.open(images_dir / "img2d.tif")).astype(np.float32)
    labels = np.asarray(Image.open(images_dir / "mask2d.tif")).astype(np.int32)
    if image.shape != labels.shape:
        raise ValueError(f"{images_dir}: img2d.tif {image.shape} and mask2d.tif {labels.shape} differ")
    low, high = np.percentile(image, [0.5, 99.8])
    pixels_full = to_uint8(image, low, high)
    classes = {"cell nucleus": 1}
    source = DemoSource("stardist", "microscopy_00", classes)
    tile_h, tile_w = image.shape[0] // STARDIST_TILE_GRID, image.shape[1] // STARDIST_TILE_GRID
    for row in range(STARDIST_TILE_GRID):
        for col in range(STARDIST_TILE_GRID):
            box = np.s_[row * tile_h:(row + 1) * tile_h, col * tile_w:(col + 1) * tile_w]
            size = output_size(tile_h, tile_w)
            pixels = resize_image(pixels_full[box], size)
            tile_labels = resize_labels(labels[box], size)
            instances = [piece for nucleus in np.unique(tile_labels) if nucleus
                         for piece in connected_instances(tile_labels == nucleus, classes["cell nucleus"])]
            if instances:
                tile = f"tile{row * STARDIST_TILE_GRID + col:02d}"
                source.images.append(DemoImage(tile, "2d_none", pixels, instances))
    source.sources_md = f"""## stardist (microscopy_00)

- Package: PyPI `stardist` 0.9.2 (installed with `--no-deps`, read without importing it); files
  `stardist/data/images/img2d.tif` (fluorescence nuclei, {image.shape[0]}x{image.shape[1]}, 16 bit)
  and `mask2d.tif` (nucleus instance labels, {len(np.unique(labels)) - 1} nuclei). The package
  credits the 2018 Kaggle Data Science Bowl (Caicedo et al., Nature Methods 2019).
- Licence as stated in the package (`stardist-0.9.2.dist-info/licenses/LICENSE.txt`):
  BSD 3-Clause, Copyright (c) 2018-2025 Uwe Schmidt, Martin Weigert.
- Conversion: 0.5-99.8 percentile window of the whole image to 8 bit; cut into
  {STARDIST_TILE_GRID}x{STARDIST_TILE_GRID} tiles of {tile_h}x{tile_w} px, each upscaled to
  {LONG_SIDE} px (bilinear image, nearest labels). One mask per nucleus (per 8-connected piece if a
  tile border splits one); pieces under {MIN_MASK_AREA} px (nuclei cut by a tile border) are omitted.
- Cases: `tileNN` = one tile, numbered in raster order.
"""
    return source


@dataclass
class SourceSpec:
    name: str
    build: Callable[[], DemoSource]
    install_hint: str
    available: Callable[[], bool]


DEFAULT_SOURCES = [
    SourceSpec("colin27aal", colin27_aal_source, "apt-get install mricron-data",
               lambda: all((MRICRON_TEMPLATES / f).is_file() for f in ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt"))),
    SourceSpec("invesalius", invesalius_source, "apt-get install invesalius-examples",
               INVESALIUS_PROJECT.is_file),
    SourceSpec("stardist", stardist_source, ".venv/bin/pip install --no-deps stardist==0.9.2",
               lambda: stardist_images_dir() is not None and (stardist_images_dir() / "mask2d.tif").is_file()),
]


def load_sources(specs: list[SourceSpec] = DEFAULT_SOURCES, log=print) -> list[DemoSource]:
    """Convert every source; if any is missing, fail naming all the packages to install."""
    missing = [f"{spec.name} ({spec.install_hint})" for spec in specs if not spec.available()]
    if importlib.util.find_spec("nibabel") is None:
        missing.append("nibabel, the NIfTI reader (.venv/bin/pip install nibabel==5.4.2)")
    if missing:
        raise MissingSourceError(
            "demo data sources are not installed: " + "; ".join(missing)
            + ". scripts/install_demo_sources.sh installs all of them."
        )
    sources = []
    for spec in specs:
        source = spec.build()
        log(f"{source.modality_sub}--{source.dataset}: converted {len(source.images)} images, "
            f"{sum(len(im.instances) for im in source.images)} masks")
        sources.append(source)
    return sources


# ----------------------------------------------------------------------------- selection + writing


def image_quotas(available: list[int], max_images: int | None) -> list[int]:
    """Split ``max_images`` over sources one image at a time in turn, so that small sources are
    taken whole and the large ones share the rest equally."""
    if max_images is None or max_images >= sum(available):
        return list(available)
    quotas = [0] * len(available)
    left = max_images
    while left > 0:
        for i, count in enumerate(available):
            if left > 0 and quotas[i] < count:
                quotas[i] += 1
                left -= 1
    return quotas


def select_images(sources: list[DemoSource], max_images: int | None, seed: int) -> None:
    """Keep at most ``max_images`` images in total, a seeded random subset of each source."""
    rng = np.random.default_rng(seed)
    quotas = image_quotas([len(s.images) for s in sources], max_images)
    for source, quota in zip(sources, quotas):
        if quota < len(source.images):
            keep = np.sort(rng.choice(len(source.images), size=quota, replace=False))
            source.images = [source.images[i] for i in keep]


def check_out_dir(out_dir: Path) -> None:
    """Only an empty folder or an earlier demo set (which is replaced) may be written to."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise FileExistsError(
            f"{out_dir} is not empty and holds no {MANIFEST}: refusing to write a demo set into it"
        )


def _prepare_out_dir(out_dir: Path) -> None:
    check_out_dir(out_dir)
    for sub in (IMAGES_DIR, MASKS_DIR):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir(parents=True)


def build_manifest(sources: list[DemoSource], seed: int, max_images: int | None) -> dict:
    modalities: dict[str, dict] = {}
    datasets: dict[str, dict] = {}
    for source in sources:
        modality = modality_of(source.modality_sub)
        names = {class_id: name for name, class_id in source.classes.items()}
        per_class: dict[str, dict[str, int]] = {}
        for image in source.images:
            for class_id in sorted({piece.class_id for piece in image.instances}):
                counts = per_class.setdefault(names[class_id], {"images": 0, "masks": 0})
                counts["images"] += 1
                counts["masks"] += sum(piece.class_id == class_id for piece in image.instances)
        cases = sorted({image.case for image in source.images})
        datasets[source.dataset] = {
            "modality_sub": source.modality_sub,
            "images": len(source.images),
            "masks": sum(len(image.instances) for image in source.images),
            "cases": cases,
            "classes": dict(sorted(per_class.items())),
        }
        entry = modalities.setdefault(modality, {"images": 0, "masks": 0, "cases": 0, "classes": {}})
        entry["images"] += datasets[source.dataset]["images"]
        entry["masks"] += datasets[source.dataset]["masks"]
        entry["cases"] += len(cases)
        for name, counts in per_class.items():
            total = entry["classes"].setdefault(name, {"images": 0, "masks": 0})
            total["images"] += counts["images"]
            total["masks"] += counts["masks"]
    return {
        "seed": seed,
        "max_images": max_images,
        "images": sum(d["images"] for d in datasets.values()),
        "masks": sum(d["masks"] for d in datasets.values()),
        "modalities": modalities,
        "datasets": datasets,
    }


def sources_markdown(sources: list[DemoSource], manifest: dict) -> str:
    header = f"""# Sources of this demo set

Built by `python -m paddlemix.tools.build_demo_data` (seed {manifest['seed']}, max_images
{manifest['max_images']}): {manifest['images']} images and {manifest['masks']} masks in the
SA-Med2D-20M layout, converted at build time from real images and masks shipped inside public
packages. Nothing here was drawn or synthesised by this project; the conversion only windows,
slices, tiles, resizes and splits masks into connected pieces.

Every package holds a single subject, so a *case* (the unit a train/test split groups by) is a
contiguous slab of slices of a volume (its size is in the source's section) or one tile of a large
2-D image: neighbouring slices stay on one side of a split. Cases of one dataset still share the subject, so a split by
case measures generalisation across slice positions, not across people.

"""
    return header + "\n".join(source.sources_md for source in sources)


def write_demo_set(sources: list[DemoSource], out_dir: Path, seed: int, max_images: int | None,
                   progress: bool = True) -> dict:
    """Write images, masks, the two JSON indexes, SOURCES.md and the manifest; return the manifest."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    index: dict[str, list[str]] = {}
    total = sum(len(source.images) for source in sources)
    with tqdm(total=total, desc="writing demo images", unit="img", disable=not progress,
              file=sys.stderr) as bar:
        for source in sources:
            for image in source.images:
                name = source.name(image)
                Image.fromarray(image.pixels).save(out_dir / name.image_file)
                counters: dict[int, int] = {}
                masks = []
                for piece in image.instances:
                    number = counters.get(piece.class_id, 0)
                    counters[piece.class_id] = number + 1
                    mask_file = name.mask_file(piece.class_id, number)
                    Image.fromarray(piece.full(image.pixels.shape[:2])).save(out_dir / mask_file)
                    masks.append(mask_file)
                index[name.image_file] = masks
                bar.update(1)
    mapping = class_mapping({source.dataset: source.classes for source in sources})
    manifest = build_manifest(sources, seed, max_images)
    for file_name, data in ((MASK_JSON, index), (CLASS_JSON, mapping), (MANIFEST, manifest)):
        write_json_atomic(out_dir / file_name, data, indent=1, sort_keys=True)
    write_text_atomic(out_dir / SOURCES, sources_markdown(sources, manifest))
    return manifest


def build_demo_set(out_dir: str | Path, max_images: int | None = DEFAULT_MAX_IMAGES, seed: int = 0,
                   progress: bool = True, log=print) -> dict:
    """Convert the installed sources and write the demo set to ``out_dir``; return the manifest."""
    check_out_dir(Path(out_dir))
    sources = load_sources(log=log)
    select_images(sources, max_images, seed)
    return write_demo_set(sources, Path(out_dir), seed, max_images, progress=progress)
