"""Qwen-VL-Chat's ChatML rendering, shared by training, inference and ``chat()``.

One function renders a conversation into segments tagged with whether a model should be trained
to produce them; training masks labels from those tags, inference takes the concatenated text
with an open assistant turn. Because both go through :func:`render_segments`, the prompt a model
sees at inference is byte-identical to the one it was trained on.

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    Picture 1: <img>images/x.png</img>
    Where is the liver?<|im_end|>
    <|im_start|>assistant
    <ref>liver</ref><box>(120,300),(480,700)</box><|im_end|>

Only the assistant's answer and its closing ``<|im_end|>`` are trained; the newline after it, the
role headers, the system prompt and the user turns are context.
"""

import re
from typing import List, Optional, Sequence, Tuple

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
DEFAULT_SYSTEM = "You are a helpful assistant."

_IMAGE_TAG_RE = re.compile(r"^\s*Picture \d+:\s*<img>(.*?)</img>\n?", re.S)

Turn = Tuple[str, Optional[str]]


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


def render_segments(turns: Sequence[Turn], system: str = DEFAULT_SYSTEM) -> List[Tuple[str, bool]]:
    """A conversation as ``(text, trained)`` segments in order.

    ``turns`` is a list of ``(user, assistant)``; the last assistant may be None, which renders the
    open ``<|im_start|>assistant\\n`` header a model continues from.
    """
    if not turns:
        raise ValueError("a conversation needs at least one turn")
    segments: List[Tuple[str, bool]] = [(f"{IM_START}system\n{system}{IM_END}\n", False)]
    for i, (user, assistant) in enumerate(turns):
        segments.append((f"{IM_START}user\n{user}{IM_END}\n{IM_START}assistant\n", False))
        if assistant is None:
            if i != len(turns) - 1:
                raise ValueError(f"turn {i}: only the last turn may lack an answer")
            break
        segments.append((f"{assistant}{IM_END}", True))
        segments.append(("\n", False))
    return segments


def render_chatml(turns: Sequence[Turn], system: str = DEFAULT_SYSTEM) -> str:
    """The whole conversation as one string (see :func:`render_segments`)."""
    return "".join(text for text, _ in render_segments(turns, system))


def render_prompt(question: str, history: Sequence[Tuple[str, str]] = (), system: str = DEFAULT_SYSTEM) -> str:
    """The inference prompt: earlier turns, then ``question`` with an open assistant turn."""
    return render_chatml(list(history) + [(question, None)], system)
