"""Request checking without a server: prompts, image numbering, sampling settings, refusals."""

import base64
import hashlib
import io
import json

import pytest
from PIL import Image

from paddlemix.serving.chat_request import Limits, RequestError, parse_chat_request


def png(width, height) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def part(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}


def parse(body, **kw):
    return parse_chat_request(json.dumps(body).encode(), Limits(**kw))


def key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def test_images_are_numbered_through_the_conversation_and_boxes_refer_to_the_last():
    a, b = png(20, 10), png(30, 40)
    request = parse({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "compare"}, part(a)]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [part(b), {"type": "text", "text": "and"}, {"type": "text", "text": "this?"}]},
    ]})
    assert request.history == [(f"Picture 1: <img>{key(a)}</img>\ncompare", "ok")]
    assert request.question == f"Picture 2: <img>{key(b)}</img>\nand\nthis?"
    assert set(request.images) == {key(a), key(b)} and request.image_size == (30, 40)
    assert request.sampling is None and request.max_tokens == 256 and not request.stream


@pytest.mark.parametrize("settings, sampling", [
    ({}, None),
    ({"temperature": 0}, None),
    ({"temperature": 0, "top_p": 0.5}, None),
    ({"temperature": 0.7}, (0.7, 1.0)),
    ({"top_p": 0.8}, (1.0, 0.8)),
    ({"temperature": 0.5, "top_p": 0.9}, (0.5, 0.9)),
])
def test_greedy_unless_sampling_is_asked_for(settings, sampling):
    assert parse({"messages": [{"role": "user", "content": "hi"}], **settings}).sampling == sampling


@pytest.mark.parametrize("body, fragment", [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "expected role 'assistant'"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]}, "may only come first"),
    ({"messages": [{"role": "user", "content": "<|endoftext|>"}]}, "control string"),
    ({"messages": [{"role": "system", "content": "<imgpad>"}, {"role": "user", "content": "a"}]}, "control string"),
    ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "a part must be"),
    ({"messages": [{"role": "user", "content": "a"}], "n": 2}, "n = 1"),
    ({"messages": [{"role": "user", "content": "a"}], "top_p": 0}, "greater than 0"),
    ({"messages": [{"role": "user", "content": "a"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "a"}], "stream": "yes"}, "stream"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}]}, "--image_root"),
])
def test_refusals_name_what_is_wrong(body, fragment):
    with pytest.raises(RequestError) as error:
        parse(body)
    assert fragment in error.value.message and 400 <= error.value.status < 500


def test_markup_is_allowed_and_image_limits_hold():
    ro = parse({"messages": [{"role": "user", "content": "What is in <box>(1,2),(3,4)</box>? <ref>x</ref><quad>"}]})
    assert ro.question.startswith("What is in <box>")
    with pytest.raises(RequestError) as error:
        parse({"messages": [{"role": "user", "content": [part(png(101, 100))]}]}, max_image_pixels=100 * 100)
    assert error.value.status == 413 and "10100 pixels" in error.value.message
    with pytest.raises(RequestError) as error:
        parse({"messages": [{"role": "user", "content": [part(png(1, 1))] * 3}]}, max_images=2)
    assert "at most 2 images" in error.value.message
