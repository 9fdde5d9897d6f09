"""Fixtures for the Qwen-VL model tests: the tiny preset, one seeded random model, prompt builders."""

import numpy as np
import pytest
from tests.models.qwen_vl.qwen_vl_reference import IMG_END, IMG_PAD, IMG_START


@pytest.fixture(scope="session")
def tiny_config():
    from paddlemix.models.qwen_vl.configuration import get_preset

    return get_preset("tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    """A randomly initialised tiny Qwen-VL in eval mode (do not modify it in a test)."""
    import paddle

    from paddlemix.models.qwen_vl.modeling import QWenVLForCausalLM

    paddle.seed(1234)
    model = QWenVLForCausalLM(tiny_config)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_pixels(tiny_config):
    """Three random images [3, 3, S, S] (float32, roughly CLIP-normalised scale)."""
    size = tiny_config.visual["image_size"]
    return np.random.default_rng(7).standard_normal([3, 3, size, size]).astype(np.float32)


@pytest.fixture(scope="session")
def make_prompt(tiny_config):
    """``make_prompt(before, path, after)``: ids with one image slot of the tiny model's span."""
    span = tiny_config.image_span

    def build(before, path, after):
        data = list(path.encode("utf-8"))
        assert len(data) <= span
        return list(before) + [IMG_START] + data + [IMG_PAD] * (span - len(data)) + [IMG_END] + list(after)

    return build
