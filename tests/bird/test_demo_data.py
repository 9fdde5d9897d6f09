"""The embedded demo set: SA-Med2D layout, names, masks and determinism, checked from the files."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from paddlemix.bird import demo_data
from paddlemix.tools import build_demo_data, build_medgrit

IMAGE_NAME = re.compile(
    r"^(?P<modality_sub>(?P<modality>[a-z0-9]+)_[a-z0-9]+)--(?P<dataset>[A-Za-z0-9]+)"
    r"--(?P<case>[A-Za-z0-9]+)--(?P<position>[xyz]_\d{4}|2d_none)\.png$"
)
MASK_NAME = re.compile(r"^(?P<stem>.+)--(?P<class_id>\d{4})_(?P<instance>\d{3})\.png$")


def _build(out_dir: Path, max_images, seed: int) -> dict:
    return demo_data.build_demo_set(out_dir, max_images=max_images, seed=seed, progress=False,
                                    log=lambda message: None)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo_small")
    _build(out_dir, max_images=36, seed=0)
    return out_dir


@pytest.fixture(scope="module")
def full_set(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo_full")
    assert build_demo_data.main(["--out_dir", str(out_dir), "--no_progress"]) == 0
    return out_dir


def _load(out_dir: Path, name: str):
    return json.loads((out_dir / name).read_text())


def _tree_digest(out_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(out_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out_dir.rglob("*")) if p.is_file()}


def test_layout_and_image_names(small_set):
    images = sorted(p.name for p in (small_set / "images").iterdir())
    assert len(images) == 36
    parsed = [IMAGE_NAME.match(name) for name in images]
    assert all(parsed), [n for n, m in zip(images, parsed) if not m]
    assert {m["modality"] for m in parsed} >= {"mr", "ct", "microscopy"}
    for match in parsed:
        # the modality is the prefix before the first "_", the case carries no separator
        assert match.group(0).split("_", 1)[0] == match["modality"]
        assert "--" not in match["case"] and "_" not in match["case"]
    for name in ("SAMed2D_v1.json", "SAMed2D_v1_class_mapping_id.json", "SOURCES.md", "demo_manifest.json"):
        assert (small_set / name).is_file()


def test_index_references_every_file_once(small_set):
    index = _load(small_set, "SAMed2D_v1.json")
    on_disk_images = {f"images/{p.name}" for p in (small_set / "images").iterdir()}
    on_disk_masks = {f"masks/{p.name}" for p in (small_set / "masks").iterdir()}
    assert set(index) == on_disk_images
    listed = [mask for masks in index.values() for mask in masks]
    assert len(listed) == len(set(listed))
    assert set(listed) == on_disk_masks
    for image, masks in index.items():
        assert masks, f"{image} has no masks"
        stem = Path(image).stem
        assert all(MASK_NAME.match(Path(m).name)["stem"] == stem for m in masks)


def test_masks_are_binary_single_instances_of_image_size(small_set):
    index = _load(small_set, "SAMed2D_v1.json")
    for image, masks in index.items():
        size = Image.open(small_set / image).size
        pixels = np.asarray(Image.open(small_set / image))
        assert pixels.dtype == np.uint8 and pixels.max() > pixels.min()
        for mask_path in masks:
            mask = np.asarray(Image.open(small_set / mask_path))
            assert mask.shape == (size[1], size[0]), mask_path
            assert set(np.unique(mask)) == {0, 255}, mask_path
            _, pieces = ndimage.label(mask > 0, structure=np.ones((3, 3)))
            assert pieces == 1, f"{mask_path}: {pieces} connected pieces"
            assert (mask > 0).sum() >= demo_data.MIN_MASK_AREA


def test_class_ids_come_from_the_per_dataset_mapping(small_set):
    mapping = _load(small_set, "SAMed2D_v1_class_mapping_id.json")
    assert set(mapping) == {"colin27aal", "invesalius", "stardist"}
    for dataset, classes in mapping.items():
        ids = list(classes.values())
        assert all(re.fullmatch(r"\d{4}", i) for i in ids) and len(set(ids)) == len(ids)
    assert mapping["invesalius"] == {"bone": "0001", "head": "0002"}
    assert mapping["stardist"] == {"cell nucleus": "0001"}
    assert {"left hippocampus", "right hippocampus", "left frontal lobe", "cerebellar vermis"} <= set(mapping["colin27aal"])
    for masks in _load(small_set, "SAMed2D_v1.json").values():
        for mask in masks:
            match = MASK_NAME.match(Path(mask).name)
            dataset = IMAGE_NAME.match(match["stem"] + ".png")["dataset"]
            assert match["class_id"] in mapping[dataset].values(), mask


@pytest.mark.slow  # builds the set twice more
def test_same_seed_gives_identical_files_and_another_seed_another_subset(small_set, tmp_path):
    _build(tmp_path / "again", max_images=36, seed=0)
    assert _tree_digest(tmp_path / "again") == _tree_digest(small_set)
    _build(tmp_path / "other", max_images=36, seed=1)
    other = {p.name for p in (tmp_path / "other" / "images").iterdir()}
    assert other != {p.name for p in (small_set / "images").iterdir()}


@pytest.mark.slow  # the full demo set
def test_full_set_counts_cases_and_manifest(full_set):
    index = _load(full_set, "SAMed2D_v1.json")
    manifest = _load(full_set, "demo_manifest.json")
    assert 300 <= len(index) <= demo_data.DEFAULT_MAX_IMAGES
    per_modality: dict[str, dict] = {}
    for image, masks in index.items():
        match = IMAGE_NAME.match(Path(image).name)
        entry = per_modality.setdefault(match["modality"], {"images": 0, "masks": 0, "cases": set()})
        entry["images"] += 1
        entry["masks"] += len(masks)
        entry["cases"].add((match["dataset"], match["case"]))
    assert set(per_modality) == {"mr", "ct", "microscopy"}
    for modality, counts in per_modality.items():
        assert len(counts["cases"]) >= 6, modality
        assert manifest["modalities"][modality]["images"] == counts["images"]
        assert manifest["modalities"][modality]["masks"] == counts["masks"]
        assert manifest["modalities"][modality]["cases"] == len(counts["cases"])
    assert manifest["images"] == len(index)
    grid = demo_data.STARDIST_TILE_GRID
    assert grid == 8 and manifest["datasets"]["stardist"]["images"] == grid * grid  # 8x8 tiles of the 512 px image
    sources_md = (full_set / "SOURCES.md").read_text()
    for needle in ("mricron-data", "invesalius-examples", "stardist", "BSD-3-clause", "GPL-2", "BSD 3-Clause"):
        assert needle in sources_md


@pytest.mark.slow
def test_ct_slabs_of_six_slices_put_two_slabs_in_the_default_test_split(full_set, tmp_path):
    """One CT test slab let one generic box fit every CT question; six-slice slabs give two."""
    ct_names = [IMAGE_NAME.match(Path(image).name) for image in _load(full_set, "SAMed2D_v1.json")
                if Path(image).name.startswith("ct_")]
    for match in ct_names:
        assert match["case"] == f"slab{int(match['position'][2:]) // 6:02d}", match.group(0)
    n_cases = len({match["case"] for match in ct_names})
    # the demo's split takes round(0.1 * 18) = 2 of them as test cases (split_cases, seed 0)
    assert n_cases == 18
    out_dir = tmp_path / "medgrit"
    assert build_medgrit.main(["--sa_root", str(full_set), "--out_dir", str(out_dir), "--max_turns", "3",
                               "--split_turns", "VG,RO", "--test_questions", "4", "--no_progress"]) == 0
    test_vg = _load(out_dir, "test_VG.json")
    ct_slabs = {record["id"].split("--")[2] for record in test_vg if record["id"].startswith("ct_")}
    assert len(ct_slabs) == 2


@pytest.mark.slow
def test_left_structures_are_on_the_image_right(full_set):
    """Radiological display: the patient's left hemisphere is drawn on the right of the image."""
    mapping = _load(full_set, "SAMed2D_v1_class_mapping_id.json")["colin27aal"]
    side_of = {mapping["left hippocampus"]: "left", mapping["right hippocampus"]: "right",
               mapping["left frontal lobe"]: "left", mapping["right frontal lobe"]: "right"}
    checked = 0
    for image, masks in _load(full_set, "SAMed2D_v1.json").items():
        if IMAGE_NAME.match(Path(image).name)["dataset"] != "colin27aal":
            continue
        width = Image.open(full_set / image).size[0]
        for mask_path in masks:
            side = side_of.get(MASK_NAME.match(Path(mask_path).name)["class_id"])
            if side:
                columns = np.nonzero(np.asarray(Image.open(full_set / mask_path)))[1]
                assert (columns.mean() > width / 2) == (side == "left"), mask_path
                checked += 1
    assert checked > 100


@pytest.mark.slow
def test_ct_head_is_one_piece_and_bone_lies_inside_it(full_set):
    index = _load(full_set, "SAMed2D_v1.json")
    ct_images = [image for image in index if Path(image).name.startswith("ct_")]
    assert len(ct_images) > 50
    for image in ct_images:
        head = [m for m in index[image] if MASK_NAME.match(Path(m).name)["class_id"] == "0002"]
        assert len(head) == 1, image
        head_mask = np.asarray(Image.open(full_set / head[0])) > 0
        for mask in index[image]:
            if MASK_NAME.match(Path(mask).name)["class_id"] == "0001":
                assert not (np.asarray(Image.open(full_set / mask)) > 0)[~head_mask].any(), mask


def test_aal_names_group_into_left_right_classes():
    classes, lut = demo_data.aal_class_table(demo_data.MRICRON_TEMPLATES / "aal.nii.txt")
    assert len(classes) == 2 * len(demo_data.AAL_GROUPS) + 1
    assert sorted(classes.values()) == list(range(1, len(classes) + 1))
    names = {v: k for k, v in classes.items()}
    # aal.nii.txt: 37 Hippocampus_L, 38 Hippocampus_R, 55 Fusiform_L, 116 Vermis_10
    assert names[lut[37]] == "left hippocampus" and names[lut[38]] == "right hippocampus"
    assert names[lut[55]] == "left temporal lobe"
    assert names[lut[116]] == "cerebellar vermis"
    assert lut[0] == 0 and all(lut[1:117])


def test_image_quotas_take_small_sources_whole_and_share_the_rest():
    assert demo_data.image_quotas([236, 106, 16], None) == [236, 106, 16]
    assert demo_data.image_quotas([236, 106, 16], 400) == [236, 106, 16]
    assert demo_data.image_quotas([236, 106, 16], 36) == [12, 12, 12]
    assert demo_data.image_quotas([236, 106, 16], 100) == [42, 42, 16]
    assert demo_data.image_quotas([5, 2], 4) == [2, 2]


def test_missing_source_names_the_package_to_install():
    spec = demo_data.SourceSpec("invesalius", demo_data.invesalius_source,
                                "apt-get install invesalius-examples", lambda: False)
    with pytest.raises(demo_data.MissingSourceError, match="apt-get install invesalius-examples"):
        demo_data.load_sources([spec])


def test_refuses_to_write_into_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    assert build_demo_data.main(["--out_dir", str(tmp_path), "--max_images", "3", "--no_progress"]) == 2
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "images").exists()
