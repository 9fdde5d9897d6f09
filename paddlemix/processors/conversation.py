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

from .chat_template import DEFAULT_SYSTEM, render_segments

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


def _encode_segments(tokenizer, segments) -> Tuple[List[int], List[int], List[int]]:
    """Ids, labels and the index where each segment ends."""
    ids: List[int] = []
    labels: List[int] = []
    ends: List[int] = []
    for pieces, trained in segments:
        seg = []
        for text, is_control in pieces:
            # Control markers by id; message text cannot produce one (see encode_content).
            seg.extend([tokenizer.convert_tokens_to_ids(text)] if is_control else tokenizer.encode_content(text))
        ids.extend(seg)
        labels.extend(seg if trained else [IGNORE_INDEX] * len(seg))
        ends.append(len(ids))
    return ids, labels, ends


def encode_conversation(
    tokenizer,
    turns: Sequence[Tuple[str, Optional[str]]],
    max_length: Optional[int] = None,
    system: str = DEFAULT_SYSTEM,
) -> EncodedConversation:
    """Token ids and labels of a conversation (see the module doc for the truncation rule)."""
    segments = render_segments(turns, system)
    ids, labels, ends = _encode_segments(tokenizer, segments)
    n_turns = len(turns)
    if max_length is not None and len(ids) > max_length:
        # Segment layout: [system] then per answered turn [user+header, answer, "\n"].
        kept = 0
        for t in range(n_turns):
            turn_end = ends[min(3 * t + 3, len(ends) - 1)] if turns[t][1] is not None else ends[-1]
            if turn_end > max_length:
                break
            kept = t + 1
        if kept == 0:
            raise SampleTooLong(
                f"first turn needs {ends[min(3, len(ends) - 1)]} tokens but max_length is {max_length}"
            )
        cut = ends[3 * kept] if 3 * kept < len(ends) else ends[-1]
        ids, labels = ids[:cut], labels[:cut]
        n_turns = kept
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
    ids, _, _ = _encode_segments(tokenizer, render_segments(list(history) + [(question, None)], system))
    return ids
