"""The Med-GRIT image tag: ``Picture 1: <img>path</img>\\n`` at the start of a record's first question.

Med-GRIT records and Qwen-VL prompts name the image of a conversation this way
(docs/ARCHITECTURE.md, "Med-GRIT file and image tag"): construction writes the tag, the readers
repoint it at the resolved image, the image shuffle repoints it at another image, inference and the
baselines strip it from the question they record, and the chat template passes it through as
ordinary user text.
"""

import re
from typing import Optional, Tuple

_IMAGE_TAG_RE = re.compile(r"^\s*Picture \d+:\s*<img>(.*?)</img>\n?", re.S)


def image_prefix(path: str, index: int = 1) -> str:
    """The tag that puts an image in a user turn: ``Picture 1: <img>path</img>\\n``."""
    return f"Picture {index}: <img>{path}</img>\n"


def split_image_prefix(question: str) -> Tuple[Optional[str], str]:
    """``(path, rest)`` for a question that starts with an image tag, else ``(None, question)``."""
    m = _IMAGE_TAG_RE.match(question)
    if m is None:
        return None, question
    return m.group(1), question[m.end():]


def with_image(question: str, path: str) -> str:
    """The question with its image tag (re)pointing at ``path``; adds the tag when missing."""
    _, rest = split_image_prefix(question)
    return image_prefix(path) + rest
