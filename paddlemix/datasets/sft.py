"""Supervised fine-tuning batches: encoded samples, length-grouped batches, padding to the batch.

Upstream pads every sample to 2048 tokens. Here a batch is padded only to its longest sample, and
batches are drawn from groups of similar length, so padding is a small fraction of the tokens
computed. Samples are never packed together, so they cannot attend to each other.

The batch order depends only on ``(seed, epoch)``: a run resumed from a checkpoint sees exactly
the batches an uninterrupted run would.
"""

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from paddle.io import Dataset, DistributedBatchSampler
from tqdm import tqdm

from .medgrit import record_image
from ..processors.conversation import IGNORE_INDEX, SampleTooLong, encode_conversation


class SFTDataset(Dataset):
    """Normalised Med-GRIT records (see :func:`paddlemix.datasets.medgrit.load_medgrit`) as
    ``{"input_ids", "labels", "images"}`` samples.

    Every record is encoded up front so lengths are known for batching; a record that cannot be
    trained (its first turn longer than ``max_length``) is left out and counted in
    ``self.skipped`` with its id, never fed silently.
    """

    def __init__(self, records: Sequence[dict], tokenizer, image_processor, max_length: int, show_progress: bool = True):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_length = max_length
        self.samples: List[dict] = []
        self.skipped: Dict[str, List[str]] = {}
        self.turns_dropped = 0
        for rec in tqdm(records, desc="encoding conversations", disable=not show_progress, mininterval=2):
            try:
                enc = encode_conversation(tokenizer, rec["conversations"], max_length=max_length)
            except SampleTooLong as exc:
                self.skipped.setdefault("too_long", []).append(f"{rec['id']}: {exc}")
                continue
            self.turns_dropped += enc.n_turns_dropped
            # The span carries the path written in the conversation; load the resolved file.
            n_images = len(enc.image_paths)
            if n_images > 1:
                raise ValueError(f"record {rec['id']}: {n_images} images in one conversation; BiRD uses one")
            self.samples.append(
                {
                    "id": rec["id"],
                    "input_ids": np.asarray(enc.input_ids, dtype="int64"),
                    "labels": np.asarray(enc.labels, dtype="int64"),
                    "image_path": rec["image_path"] if n_images else None,
                    "view": rec.get("view"),
                }
            )

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> List[int]:
        return [len(s["input_ids"]) for s in self.samples]

    def summary(self) -> str:
        skipped = {k: len(v) for k, v in self.skipped.items()}
        return (
            f"{len(self.samples)} samples, skipped {skipped or 'none'}, "
            f"{self.turns_dropped} trailing turns dropped by max_length={self.max_length}"
        )

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        item = {"input_ids": s["input_ids"], "labels": s["labels"]}
        if s["image_path"] is not None:
            item["images"] = self.image_processor([record_image(s)])
        return item


def collate_sft(features: Sequence[dict], pad_token_id: int, pad_to_multiple_of: int = 1) -> dict:
    """Right-pad a batch to its longest sample; stack the images of all samples in order."""
    longest = max(len(f["input_ids"]) for f in features)
    length = int(math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of)
    n = len(features)
    input_ids = np.full((n, length), pad_token_id, dtype="int64")
    labels = np.full((n, length), IGNORE_INDEX, dtype="int64")
    attention_mask = np.zeros((n, length), dtype="int64")
    for i, f in enumerate(features):
        k = len(f["input_ids"])
        input_ids[i, :k] = f["input_ids"]
        labels[i, :k] = f["labels"]
        attention_mask[i, :k] = 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
    images = [f["images"] for f in features if f.get("images") is not None]
    if images:
        batch["images"] = np.concatenate(images, axis=0).astype("float32")
    return batch


class SFTCollator:
    """Picklable collate function (DataLoader workers) around :func:`collate_sft`."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 1):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features):
        return collate_sft(features, self.pad_token_id, self.pad_to_multiple_of)


def length_grouped_batches(
    lengths: Sequence[int],
    batch_size: int,
    num_replicas: int,
    rank: int,
    seed: int,
    epoch: int,
    group_batches: int = 64,
    drop_last: bool = False,
) -> List[List[int]]:
    """This rank's batches for one epoch.

    Shuffle with ``(seed, epoch)``; cut into groups of ``group_batches`` global batches; sort each
    group by length so a global batch holds similar lengths; deal each global batch out to the
    ranks; shuffle the order of the global batches. Short last batches are filled by wrapping
    around (as Paddle's distributed sampler does) unless ``drop_last``.
    """
    n = len(lengths)
    if n == 0:
        return []
    global_batch = batch_size * num_replicas
    rng = np.random.RandomState((seed * 1_000_003 + epoch) % (2**32))
    order = rng.permutation(n)
    if drop_last:
        order = order[: (n // global_batch) * global_batch]
    else:
        total = int(math.ceil(n / global_batch) * global_batch)
        order = np.concatenate([order, order[: total - n]]) if total > n else order
    lengths = np.asarray(lengths)
    group = global_batch * group_batches
    globals_: List[np.ndarray] = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        globals_.extend(chunk[i : i + global_batch] for i in range(0, len(chunk), global_batch))
    rng.shuffle(globals_)
    return [g[rank * batch_size : (rank + 1) * batch_size].tolist() for g in globals_]


class LengthGroupedBatchSampler(DistributedBatchSampler):
    """Deterministic, length-grouped, rank-aware batch sampler.

    A ``DistributedBatchSampler`` so PaddleNLP's ``Trainer`` calls :meth:`set_epoch` each epoch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, drop_last: bool = False, group_batches: int = 64):
        # Deliberately not calling the parent __init__: it needs a dataset and a live process group.
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.nranks = num_replicas
        self.local_rank = rank
        self.seed = seed
        self.drop_last = drop_last
        self.group_batches = group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int = 0, consumed_samples: Optional[int] = None) -> None:
        self.epoch = epoch

    def __iter__(self):
        yield from length_grouped_batches(
            self.lengths, self.batch_size, self.nranks, self.local_rank, self.seed, self.epoch,
            self.group_batches, self.drop_last,
        )

    def __len__(self) -> int:
        global_batch = self.batch_size * self.nranks
        n = len(self.lengths)
        return n // global_batch if self.drop_last else int(math.ceil(n / global_batch))


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[int], pad_to: Optional[int] = None) -> float:
    """Fraction of computed token positions that are padding, for batches of sample indices
    padded to their longest sample (or to ``pad_to`` tokens, as upstream does)."""
    real = computed = 0
    for b in batches:
        ls = [lengths[i] for i in b]
        width = pad_to if pad_to is not None else max(ls)
        real += sum(ls)
        computed += width * len(ls)
    return 1.0 - real / computed if computed else 0.0

