"""Length-grouped batches: little padding, like transformers' LengthGroupedSampler, but in random order."""
import torch

from adapterkit.data.loaders import LengthGroupedBatches

BS = 16


def batches(lengths, seed=0, bs=BS):
    g = torch.Generator()
    g.manual_seed(seed)
    idx = list(LengthGroupedBatches(lengths, bs, g))
    return idx, [idx[k:k + bs] for k in range(0, len(idx), bs)]


def lengths(n=2003):
    gen = torch.Generator().manual_seed(1)
    return torch.randint(1, 65, (n,), generator=gen).tolist()


def test_every_example_once_and_batches_of_similar_length():
    L = lengths()
    idx, bs = batches(L)
    assert sorted(idx) == list(range(len(L)))
    padded = sum(max(L[i] for i in b) * len(b) for b in bs)
    g = torch.Generator().manual_seed(0)
    shuffled = torch.randperm(len(L), generator=g).tolist()
    padded_random = sum(max(L[i] for i in shuffled[k:k + BS]) * len(shuffled[k:k + BS]) for k in range(0, len(L), BS))
    assert padded / sum(L) < 1.1 < padded_random / sum(L)


def test_batch_order_is_random_not_a_long_to_short_sweep():
    L = lengths()
    _, bs = batches(L)
    maxima = [max(L[i] for i in b) for b in bs[:-1]]
    ascents = sum(b > a for a, b in zip(maxima, maxima[1:]))
    # sorted groups of 50 batches would rise only at the few group boundaries
    assert ascents > len(maxima) // 4


def test_longest_batch_first_short_batch_last_and_seeded():
    L = lengths()
    idx, bs = batches(L)
    assert max(L[i] for i in bs[0]) == max(L)
    assert len(bs[-1]) == len(L) % BS and all(len(b) == BS for b in bs[:-1])
    assert batches(L)[0] == idx and batches(L, seed=1)[0] != idx


def test_each_epoch_draws_a_new_order_from_the_generator():
    L = lengths()
    g = torch.Generator()
    g.manual_seed(0)
    s = LengthGroupedBatches(L, BS, g)
    assert list(s) != list(s)


def test_tiny_data_sets_still_batch():
    idx, bs = batches([3, 1, 2, 5, 4], bs=2)
    assert sorted(idx) == [0, 1, 2, 3, 4] and len(bs[-1]) == 1
