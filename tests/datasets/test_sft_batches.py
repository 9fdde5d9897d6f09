"""Length-grouped batches and padding: determinism, coverage, rank split, padding fraction."""

import numpy as np

from paddlemix.datasets.sft import LengthGroupedBatchSampler, collate_sft, length_grouped_batches, padding_fraction


def test_batches_are_deterministic_and_cover_every_sample():
    rng = np.random.RandomState(0)
    lengths = rng.randint(300, 700, size=103).tolist()
    a = length_grouped_batches(lengths, batch_size=4, num_replicas=1, rank=0, seed=7, epoch=3)
    b = length_grouped_batches(lengths, batch_size=4, num_replicas=1, rank=0, seed=7, epoch=3)
    c = length_grouped_batches(lengths, batch_size=4, num_replicas=1, rank=0, seed=7, epoch=4)
    assert a == b and a != c
    flat = [i for batch in a for i in batch]
    assert len(flat) == 104  # 103 wrapped up to a multiple of 4
    assert set(flat) == set(range(103))


def test_ranks_get_disjoint_halves_of_each_global_batch():
    lengths = list(range(10, 90))
    r0 = length_grouped_batches(lengths, 4, 2, 0, seed=1, epoch=0)
    r1 = length_grouped_batches(lengths, 4, 2, 1, seed=1, epoch=0)
    assert len(r0) == len(r1) == 10
    for x, y in zip(r0, r1):
        assert not set(x) & set(y)
    assert sorted(i for b in r0 + r1 for i in b) == list(range(80))


def test_sampler_follows_set_epoch():
    lengths = list(range(50))
    sampler = LengthGroupedBatchSampler(lengths, batch_size=5, seed=2)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert len(sampler) == 10


def test_grouping_cuts_padding_against_random_batches():
    rng = np.random.RandomState(1)
    lengths = rng.randint(100, 1000, size=2000).tolist()
    grouped = length_grouped_batches(lengths, 8, 1, 0, seed=0, epoch=0)
    random_batches = [list(range(i, i + 8)) for i in range(0, 2000, 8)]
    g = padding_fraction(grouped, lengths)
    r = padding_fraction(random_batches, lengths)
    upstream = padding_fraction(random_batches, lengths, pad_to=2048)
    assert g < 0.05 < r < upstream


def test_padding_fraction_by_hand():
    assert padding_fraction([[0, 1]], [3, 1]) == 1 - 4 / 6
    assert padding_fraction([[0], [1]], [3, 1], pad_to=4) == 1 - 4 / 8


def test_collate_pads_right_and_stacks_images():
    feats = [
        {"input_ids": np.array([5, 6, 7]), "labels": np.array([-100, 6, 7]), "images": np.ones((1, 3, 4, 4), "float32")},
        {"input_ids": np.array([9]), "labels": np.array([9]), "images": np.zeros((1, 3, 4, 4), "float32")},
    ]
    batch = collate_sft(feats, pad_token_id=0, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [9, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [9, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["images"].shape == (2, 3, 4, 4) and batch["images"][0].max() == 1 and batch["images"][1].max() == 0
