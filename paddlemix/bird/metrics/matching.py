"""One-to-one matching of predicted to reference boxes (Hungarian), for precision/recall/F1 at an IoU.

BiRD's ``Recall@0.5`` lets one predicted box find many reference boxes and ignores extra
predictions, so a response that sprays boxes scores well. Here every predicted box may match at
most one reference box and vice versa; a pair may match only when its IoU reaches the threshold;
among the matchings with the most pairs the one with the largest total IoU is taken. Pure
Python + numpy (no scipy), so it runs wherever the scorers run.
"""

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..boxes import iou


def max_weight_assignment(weights: np.ndarray) -> List[Tuple[int, int]]:
    """Row→column pairs of a maximum-weight assignment of a (rows, cols) matrix (Kuhn-Munkres).

    Every row of the smaller side is assigned; pairs of weight <= 0 are dropped from the result,
    so a zero weight means "may not match". O(n^2 m) with potentials (shortest augmenting paths).
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size == 0:
        return []
    transposed = weights.shape[0] > weights.shape[1]
    cost = -(weights.T if transposed else weights)  # minimise cost, n rows <= m columns
    n, m = cost.shape
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: 1-based row assigned to column j (0: none)
    for row in range(1, n + 1):
        owner[0] = row
        col = 0
        slack = np.full(m + 1, np.inf)
        came_from = np.zeros(m + 1, dtype=np.int64)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[col] = True
            r = owner[col]
            reduced = cost[r - 1] - u[r] - v[1:]
            free = ~used[1:]
            better = free & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            came_from[1:][better] = col
            candidates = np.where(free, slack[1:], np.inf)
            nxt = int(np.argmin(candidates)) + 1
            delta = candidates[nxt - 1]
            u[owner[used]] += delta
            v[used] -= delta
            slack[1:][free] -= delta
            col = nxt
            if owner[col] == 0:
                break
        while col:
            prev = came_from[col]
            owner[col] = owner[prev]
            col = prev
    pairs = []
    for j in range(1, m + 1):
        if owner[j]:
            i, jj = int(owner[j]) - 1, j - 1
            pair = (jj, i) if transposed else (i, jj)
            if weights[pair] > 0:
                pairs.append(pair)
    return sorted(pairs)


@dataclass
class MatchCounts:
    true_positives: int  # matched pairs
    n_predicted: int
    n_reference: int

    @property
    def false_positives(self) -> int:
        return self.n_predicted - self.true_positives

    @property
    def misses(self) -> int:
        return self.n_reference - self.true_positives


def match_boxes(
    predicted: Sequence[Sequence[float]], references: Sequence[Sequence[float]], iou_threshold: float = 0.5
) -> Tuple[List[Tuple[int, int]], MatchCounts]:
    """The one-to-one matching of predicted to reference boxes (pairs of indices) and its counts.

    A pair is allowed when IoU >= ``iou_threshold``. Its weight is ``bonus + IoU`` with a bonus
    larger than any total IoU, so a maximum-weight assignment has the most pairs first and the
    largest total IoU among those.
    """
    ious = np.asarray([[iou(p, r) for r in references] for p in predicted], dtype=np.float64).reshape(
        len(predicted), len(references)
    )
    bonus = float(min(len(predicted), len(references)) + 1)
    weights = np.where(ious >= iou_threshold, bonus + ious, 0.0)
    pairs = max_weight_assignment(weights)
    return pairs, MatchCounts(len(pairs), len(predicted), len(references))
