"""Shared fixtures: the real Qwen tokenizer is loaded once per test session."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    from paddlemix.models.qwen_vl.tokenizer import QWenVLTokenizer

    return QWenVLTokenizer()
