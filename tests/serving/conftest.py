"""Serving fixtures: the tiny checkpoints the servers under test load, built once per session."""

import pytest
from tests.serving.serve_helpers import build_scripted_model, save_checkpoint, tiny_config


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """``{"random": dir, "scripted": dir}``."""
    import paddle

    from paddlemix.models.qwen_vl import QWenVLForCausalLM
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer

    root = tmp_path_factory.mktemp("serve_ckpt")
    config = tiny_config()
    tokenizer = QWenVLTokenizer(image_span=config.image_span)
    paddle.seed(3)
    random_dir = save_checkpoint(QWenVLForCausalLM(config), tokenizer, root / "random")
    scripted_dir = save_checkpoint(build_scripted_model(tokenizer), tokenizer, root / "scripted")
    return {"random": random_dir, "scripted": scripted_dir}
