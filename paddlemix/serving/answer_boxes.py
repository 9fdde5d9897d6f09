"""The ``boxes`` of a reply: every box the model wrote, in grid units and image pixels, with a score.

A box's ``score`` is the mean probability the model gave to the digits of its four coordinates,
as written: Qwen's tokenizer splits numbers into single digits, so ``(12,34),(567,890)`` has ten
coordinate tokens, and the score is the mean of their ten probabilities (each from a
teacher-forced pass over prompt + answer, see :func:`paddlemix.serving.engine.answer_token_probs`).

Boxes are read with :func:`paddlemix.bird.boxes.parse_boxes` (the scorers' lenient grammar) and
matched to the place they were written by :func:`~paddlemix.bird.boxes.corner_pair_spans`, run over
the answer's bytes decoded as Latin-1 so that a character offset is a byte offset and the tokens'
byte ranges line up. A box the two cannot agree on gets ``score`` None. No paddle here.
"""

from typing import List, Optional, Sequence, Tuple

from paddlemix.bird.boxes import corner_pair_spans, grid_to_box, parse_boxes

PIXEL_DECIMALS = 2


def _as_number(value: float):
    return int(value) if float(value).is_integer() else value


def box_token_scores(token_bytes: Sequence[bytes], token_probs: Sequence[float]) -> List[Tuple[tuple, Optional[float]]]:
    """``(box, score)`` for every corner pair in the answer, in text order; ``score`` is the mean
    probability of the digit tokens inside the pair (None for a degenerate box or no digits)."""
    starts, pos = [], 0
    for piece in token_bytes:
        starts.append(pos)
        pos += len(piece)
    text = b"".join(token_bytes).decode("latin-1")
    scored = []
    for start, end, box in corner_pair_spans(text):
        if box is None:
            continue
        probs = [
            p for piece, begin, p in zip(token_bytes, starts, token_probs)
            if piece.isdigit() and begin >= start and begin + len(piece) <= end
        ]
        scored.append((box, sum(probs) / len(probs) if probs else None))
    return scored


def answer_boxes(
    content: str,
    token_bytes: Optional[Sequence[bytes]] = None,
    token_probs: Optional[Sequence[float]] = None,
    image_size: Optional[Tuple[int, int]] = None,
) -> List[dict]:
    """The reply's ``boxes`` (docs/ARCHITECTURE.md, "Serving reply"): ``label``, ``box`` in pixels of
    the image of ``image_size`` = (width, height) (None without an image), ``box_grid`` and ``score``."""
    parsed = parse_boxes(content)
    unscored = box_token_scores(token_bytes, token_probs) if token_bytes is not None and token_probs is not None else []
    boxes = []
    for label, grid in zip(parsed.refs, parsed.boxes):
        score = None
        for k, (box, box_score) in enumerate(unscored):
            if tuple(box) == tuple(grid):
                score = box_score
                del unscored[k]
                break
        pixels = None
        if image_size is not None:
            pixels = [round(v, PIXEL_DECIMALS) for v in grid_to_box(grid, image_size[0], image_size[1])]
        boxes.append({
            "label": label,
            "box": pixels,
            "box_grid": [_as_number(v) for v in grid],
            "score": score,
        })
    return boxes
