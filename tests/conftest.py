"""Shared fixtures: the real Qwen tokenizer is loaded once per test session."""

import pytest


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer

    return QWenVLTokenizer()
