"""Qwen-VL-Chat's ChatML rendering, shared by training, inference and ``chat()``.

One function renders a conversation into segments tagged with whether a model should be trained
to produce them (each a list of pieces: ChatML control tokens, roles, newlines, message content);
training masks labels from those tags, inference takes the concatenated text with an open
assistant turn. Because both go through :func:`render_segments`, the prompt a model
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

from typing import List, Optional, Sequence, Tuple

from .special_tokens import IM_END, IM_START

DEFAULT_SYSTEM = "You are a helpful assistant."

Turn = Tuple[str, Optional[str]]
Piece = Tuple[str, bool]  # (text, is a ChatML control token)
Segment = Tuple[List[Piece], bool]  # (pieces, trained)


def render_segments(turns: Sequence[Turn], system: str = DEFAULT_SYSTEM) -> List[Segment]:
    """A conversation as ``(pieces, trained)`` segments in order.

    ``turns`` is a list of ``(user, assistant)``; the last assistant may be None, which renders the
    open ``<|im_start|>assistant\n`` header a model continues from. Each piece is ``(text,
    is_control)``: the ChatML markers are control pieces; a role, its newline and a message's
    content are separate text pieces, so each is tokenized on its own as Qwen-VL's
    ``make_context`` and fine-tuning script do (content that starts with a newline does not merge
    with the header's).
    """
    system_segments, turn_segments = render_turns(turns, system)
    return system_segments + [segment for segments in turn_segments for segment in segments]


def render_turns(turns: Sequence[Turn], system: str = DEFAULT_SYSTEM) -> Tuple[List[Segment], List[List[Segment]]]:
    """:func:`render_segments` grouped: ``(system prompt's segments, each turn's segments)``, so a
    caller can cut a conversation after any whole turn. A turn is its user message and the
    assistant header, then (when answered) the answer with its ``<|im_end|>`` and the newline after it."""
    if not turns:
        raise ValueError("a conversation needs at least one turn")

    def message(role: str, content: str) -> List[Piece]:
        return [(IM_START, True), (role, False), ("\n", False), (content, False), (IM_END, True)]

    system_segments: List[Segment] = [(message("system", system) + [("\n", False)], False)]
    turn_segments: List[List[Segment]] = []
    for i, (user, assistant) in enumerate(turns):
        header = [(IM_START, True), ("assistant", False), ("\n", False)]
        segments: List[Segment] = [(message("user", user) + [("\n", False)] + header, False)]
        if assistant is None:
            if i != len(turns) - 1:
                raise ValueError(f"turn {i}: only the last turn may lack an answer")
        else:
            segments.append(([(assistant, False), (IM_END, True)], True))
            segments.append(([("\n", False)], False))
        turn_segments.append(segments)
    return system_segments, turn_segments


def segment_text(pieces: Sequence[Piece]) -> str:
    return "".join(text for text, _ in pieces)


def render_chatml(turns: Sequence[Turn], system: str = DEFAULT_SYSTEM) -> str:
    """The whole conversation as one string (see :func:`render_segments`)."""
    return "".join(segment_text(pieces) for pieces, _ in render_segments(turns, system))


def render_prompt(question: str, history: Sequence[Tuple[str, str]] = (), system: str = DEFAULT_SYSTEM) -> str:
    """The inference prompt: earlier turns, then ``question`` with an open assistant turn."""
    return render_chatml(list(history) + [(question, None)], system)
