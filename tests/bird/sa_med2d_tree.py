"""A tiny SA-Med2D folder (images, one mask per instance, index and class JSON) written with PIL
alone, so construction tests check the package's layout code against an independent writer."""

import json
import os

import numpy as np
from PIL import Image

CLASSES = {
    "AbdCT": {"liver": "0001", "right_kidney": "0002", "tumor": "0003"},
    "BraTS": {"edema": "0001", "enhancing_tumor": "0002"},
    "ChestX": {"lung": "0001", "heart": "0002"},
    "ISIC": {"lesion": "0001"},
}
# modality_sub, dataset, number of cases, slices per case ("2d_none" for 2D images)
SOURCES = [
    ("ct_00", "AbdCT", 5, ["z_0010", "z_0011"]),
    ("mr_t1", "BraTS", 3, ["z_0050"]),
    ("x_ray", "ChestX", 4, ["2d_none"]),
    ("dermoscopy_00", "ISIC", 1, ["2d_none"]),
]
WIDTH, HEIGHT = 64, 48


def _blob(rng, width, height):
    """A random irregular foreground blob (a few overlapping ellipses) as a 0/255 mask."""
    mask = np.zeros((height, width), np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    cx, cy = rng.integers(4, width - 4), rng.integers(4, height - 4)
    for _ in range(rng.integers(1, 4)):
        ox, oy = cx + rng.integers(-5, 6), cy + rng.integers(-5, 6)
        rx, ry = rng.integers(2, 12), rng.integers(2, 10)
        mask[((xx - ox) / rx) ** 2 + ((yy - oy) / ry) ** 2 <= 1] = 255
    return mask


def make_sa_root(root, seed=0):
    """An SA-Med2D folder: images, one mask per instance, the index JSON and the class JSON."""
    rng = np.random.default_rng(seed)
    os.makedirs(root / "images")
    os.makedirs(root / "masks")
    index = {}
    for modality_sub, dataset, n_cases, slices in SOURCES:
        for c in range(n_cases):
            for slice_ in slices:
                stem = f"{modality_sub}--{dataset}--case_{c:02d}--{slice_}"
                pixels = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / "images" / f"{stem}.png")
                masks = []
                ids = sorted(int(v) for v in CLASSES[dataset].values())
                for class_id in ids:
                    for instance in range(1 + (class_id == ids[0] and c % 2)):
                        mask = _blob(rng, WIDTH, HEIGHT)
                        name = f"masks/{stem}--{class_id:04d}_{instance:03d}.png"
                        Image.fromarray(mask).save(root / name)
                        masks.append(name)
                index[f"images/{stem}.png"] = masks
    # A mask touching the right and bottom borders: its box must end at 999 on both axes.
    border = np.zeros((HEIGHT, WIDTH), np.uint8)
    border[HEIGHT - 7:, WIDTH - 9:] = 255
    border_name = "masks/ct_00--AbdCT--case_00--z_0010--0003_001.png"
    Image.fromarray(border).save(root / border_name)
    index["images/ct_00--AbdCT--case_00--z_0010.png"].append(border_name)
    with open(root / "SAMed2D_v1.json", "w") as f:
        json.dump(index, f)
    with open(root / "SAMed2D_v1_class_mapping_id.json", "w") as f:
        json.dump(CLASSES, f)
    return index
