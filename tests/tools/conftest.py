"""Fixtures for the training-tool tests: one tiny demo data set and one tiny base checkpoint per session."""

import sys

import pytest
from tests.tools.train_helpers import run


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """``{"sa_root", "images", "train_json", "medgrit"}``: 24 real demo images as Med-GRIT records
    (two turns per record, so samples stay short)."""
    root = tmp_path_factory.mktemp("demo")
    sa_root, medgrit = root / "sa_med2d", root / "medgrit"
    py = sys.executable
    run([py, "-m", "paddlemix.tools.build_demo_data", "--out_dir", str(sa_root), "--max_images", "24", "--no_progress"])
    run([py, "-m", "paddlemix.tools.build_medgrit", "--sa_root", str(sa_root), "--out_dir", str(medgrit),
         "--max_turns", "2", "--no_progress"])
    return {"sa_root": str(sa_root), "images": str(sa_root / "images"), "train_json": str(medgrit / "train.json"),
            "medgrit": str(medgrit)}


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A seeded random tiny Qwen-VL saved as a checkpoint, for runs that start from ``model_name_or_path``."""
    import paddle

    from paddlemix.models.qwen_vl import QWenVLForCausalLM, get_preset

    path = tmp_path_factory.mktemp("tiny_base")
    paddle.seed(7)
    QWenVLForCausalLM(get_preset("tiny")).save_pretrained(str(path))
    return str(path)
