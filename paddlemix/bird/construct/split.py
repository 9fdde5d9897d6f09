"""The train/test split by case, per modality, and the seeded RNG every construction choice uses."""

import hashlib
import random
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Tuple

from paddlemix.bird.construct.regions import ImageEntry


def stable_rng(*parts) -> random.Random:
    """A ``random.Random`` seeded from the SHA-256 of ``parts`` (same everywhere, any order)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_cases(entries: Iterable[ImageEntry], test_ratio: float, seed: int) -> Dict[str, Dict[str, list]]:
    """``{modality: {"train": [case keys], "test": [case keys]}}``; a case belongs to one modality.

    A case's modality is the most common one among its images (ties: alphabetical). Within a
    modality the cases are shuffled by a seeded RNG and the first ``round(n * test_ratio)`` go
    to test, at least one when there are two or more cases and never all of them.
    """
    if not 0 <= test_ratio < 1:
        raise ValueError(f"test_ratio must be in [0, 1), got {test_ratio}")
    modalities: Dict[Tuple[str, str], Counter] = defaultdict(Counter)
    for e in entries:
        modalities[e.name.case_key][e.name.modality] += 1
    per_modality: Dict[str, List[Tuple[str, str]]] = defaultdict(list)
    for key, counts in modalities.items():
        modality = min(counts, key=lambda m: (-counts[m], m))
        per_modality[modality].append(key)
    split = {}
    for modality in sorted(per_modality):
        keys = sorted(per_modality[modality])
        stable_rng(seed, "split", modality).shuffle(keys)
        n = len(keys)
        n_test = 0 if test_ratio == 0 or n < 2 else min(n - 1, max(1, round(n * test_ratio)))
        split[modality] = {"train": sorted(keys[n_test:]), "test": sorted(keys[:n_test])}
    return split
