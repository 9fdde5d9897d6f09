"""chat(): the ChatML prompt with the image, generation, decoding, and the returned history."""

import numpy as np
import pytest
from PIL import Image

from paddlemix.models.qwen_vl.chat import chat
from paddlemix.models.qwen_vl.generation import generate_batch
from paddlemix.processors.image_processing import QWenVLImageProcessor


@pytest.fixture(scope="module")
def tokenizer(tiny_config):
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer

    return QWenVLTokenizer(image_span=tiny_config.image_span)


def test_two_turns(tiny_model, tiny_config, tokenizer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative path fits the tiny model's 64-id image slot
    Image.fromarray(np.random.default_rng(0).integers(0, 256, [40, 30], dtype=np.uint8)).save("ct.png")
    processor = QWenVLImageProcessor.from_config(tiny_config)

    response, history = chat(tiny_model, tokenizer, processor, "ct.png", "Where is the liver?", max_new_tokens=6)
    assert history == [("Picture 1: <img>ct.png</img>\nWhere is the liver?", response)]
    prompt = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Picture 1: <img>ct.png</img>\nWhere is the liver?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer.encode_text(prompt)
    assert ids.count(tokenizer.img_start_id) == 1
    expected = generate_batch(tiny_model, tokenizer, [ids], processor.to_tensor("ct.png"), max_new_tokens=6)[0]
    assert response == tokenizer.decode(expected, skip_special_tokens=True)

    second, history = chat(
        tiny_model, tokenizer, processor, None, "And the spleen?", history=history, max_new_tokens=4
    )
    assert [q for q, _ in history] == ["Picture 1: <img>ct.png</img>\nWhere is the liver?", "And the spleen?"]
    assert history[1][1] == second


def test_span_mismatch_is_explained(tiny_model, tiny_config, qwen_tokenizer):
    assert qwen_tokenizer.image_span == 256
    with pytest.raises(ValueError, match="image_span=64"):
        chat(tiny_model, qwen_tokenizer, QWenVLImageProcessor.from_config(tiny_config), None, "hi")
