"""Conversations → token ids and labels, the one encoding used by training and inference.

Each ChatML segment from :func:`~paddlemix.processors.chat_template.render_segments` is tokenized
piece by piece as Qwen-VL's ``make_context`` does (control markers by id, role, newline and
content each on its own, only image and ref/box/quad tags special inside content) and the ids
concatenated; labels copy the ids of trained segments (assistant answers and their
``<|im_end|>``) and are -100 elsewhere. The inference prompt goes through the same function with
an open assistant turn, so it is token-identical to the training context.

Truncation is by whole turns: a turn that does not fit in ``max_length`` is dropped with every
turn after it, so no answer is trained half-cut and no image span is split. A conversation whose
first turn alone does not fit has nothing left to train and raises :class:`SampleTooLong`.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from .chat_template import DEFAULT_SYSTEM, render_segments, render_turns

IGNORE_INDEX = -100


class SampleTooLong(ValueError):
    """A conversation whose first turn already exceeds ``max_length`` (nothing left to train)."""


@dataclass
class EncodedConversation:
    input_ids: List[int]
    labels: List[int]
    n_turns: int  # turns kept after truncation
    n_turns_dropped: int = 0
    image_paths: List[str] = field(default_factory=list)  # image paths carried by the spans

    @property
    def n_trained(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def _encode_segments(tokenizer, segments) -> Tuple[List[int], List[int]]:
    """Ids and labels of ``segments``, concatenated."""
    ids: List[int] = []
    labels: List[int] = []
    for pieces, trained in segments:
        seg = []
        for text, is_control in pieces:
            # Control markers by id; message text cannot produce one (see encode_content).
            seg.extend([tokenizer.convert_tokens_to_ids(text)] if is_control else tokenizer.encode_content(text))
        ids.extend(seg)
        labels.extend(seg if trained else [IGNORE_INDEX] * len(seg))
    return ids, labels


def encode_conversation(
    tokenizer,
    turns: Sequence[Tuple[str, Optional[str]]],
    max_length: Optional[int] = None,
    system: str = DEFAULT_SYSTEM,
) -> EncodedConversation:
    """Token ids and labels of a conversation (see the module doc for the truncation rule)."""
    system_segments, turn_segments = render_turns(turns, system)
    ids, labels = _encode_segments(tokenizer, system_segments)
    turn_ends = []  # where each turn's ids end
    for segments in turn_segments:
        turn_ids, turn_labels = _encode_segments(tokenizer, segments)
        ids.extend(turn_ids)
        labels.extend(turn_labels)
        turn_ends.append(len(ids))
    n_turns = len(turns)
    if max_length is not None and len(ids) > max_length:
        n_turns = sum(1 for end in turn_ends if end <= max_length)  # the ends only grow
        if n_turns == 0:
            raise SampleTooLong(f"first turn needs {turn_ends[0]} tokens but max_length is {max_length}")
        ids, labels = ids[: turn_ends[n_turns - 1]], labels[: turn_ends[n_turns - 1]]
    return EncodedConversation(
        input_ids=ids,
        labels=labels,
        n_turns=n_turns,
        n_turns_dropped=len(turns) - n_turns,
        image_paths=tokenizer.image_paths(ids),
    )


def encode_prompt(
    tokenizer,
    question: str,
    history: Sequence[Tuple[str, str]] = (),
    system: str = DEFAULT_SYSTEM,
) -> List[int]:
    """Ids of an inference prompt: ``history``, then ``question`` and an open assistant turn."""
    ids, _ = _encode_segments(tokenizer, render_segments(list(history) + [(question, None)], system))
    return ids
