"""Batches: dynamic padding, and length-grouped, seeded shuffling that spans the global batch."""

from __future__ import annotations

import torch


class Collator:
    """Dynamic padding to the longest example in the batch (transformers' DataCollatorWithPadding)."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        self.pad_tokens = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")  # pads labels with -100

    def __call__(self, features):
        lab = features[0].get("labels")
        token_labels = (
            isinstance(lab, list) and len(lab) == len(features[0]["input_ids"]) and (not lab or isinstance(lab[0], int))
        )
        batch = (self.pad_tokens if token_labels else self.pad)(features)
        if "labels" in batch and batch["labels"].dtype == torch.float64:
            batch["labels"] = batch["labels"].float()
        return batch


def dataloader(
    ds,
    tokenizer,
    batch_size: int,
    shuffle: bool,
    seed: int,
    group_by_length: bool,
    num_processes: int = 1,
    collate_fn=None,
    by_length: bool = False,
):
    """`num_processes`: length groups span the global batch (batch_size x processes), so a run sharded over
    N processes sees the same global batches as one process with an N times larger batch. `by_length`: without
    shuffling, longest examples first, so each batch pads little (for metrics that ignore order: evaluation of
    SST-2 validation took half the time, benchmarks/results/sst2_cpu.md)."""
    from torch.utils.data import DataLoader

    g = torch.Generator()
    g.manual_seed(seed)
    sampler: LengthGroupedBatches | list[int] | None = None
    if shuffle and group_by_length:
        sampler = LengthGroupedBatches(lengths(ds), batch_size * num_processes, g)
    elif by_length and not shuffle:
        sampler = length_order(ds)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        collate_fn=collate_fn or Collator(tokenizer),
        # an iterator without a generator draws its base seed from torch's global RNG: evaluation must not
        generator=None if shuffle and group_by_length else g,
    )


class LengthGroupedBatches(torch.utils.data.Sampler):
    """Indices whose consecutive `batch_size` slices are batches of similar length, the batches in random order.

    Like transformers' LengthGroupedSampler, each random draw of `group` batches' worth of examples is sorted by
    length and cut into batches; unlike it, the batches of the whole epoch are then shuffled. Kept sorted, an epoch
    sweeps from long to short examples once per group, and its last steps see only short ones: on SST-2 that cost
    0.6 points of test accuracy (LoRA and Pfeiffer, benchmarks/results/length_grouping.md); shuffling the batches
    wins them back and keeps the padding saved. The batch holding the longest example comes first (out of memory early, not
    late); a short last batch stays last so that every other slice is a whole batch."""

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 50):
        self.lengths, self.batch_size, self.generator = lengths, batch_size, generator
        self.group = max(1, min(group, len(lengths) // (batch_size * 4)))

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        n, bs, size = len(self.lengths), self.batch_size, self.batch_size * self.group
        order = torch.randperm(n, generator=self.generator).tolist()
        batches = []
        for i in range(0, n, size):
            chunk = sorted(order[i : i + size], key=lambda j: -self.lengths[j])
            batches += [chunk[k : k + bs] for k in range(0, len(chunk), bs)]
        tail = [batches.pop()] if batches and len(batches[-1]) < bs else []
        batches = [batches[k] for k in torch.randperm(len(batches), generator=self.generator).tolist()] + tail
        if batches:
            top = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            batches[0], batches[top] = batches[top], batches[0]
        return iter([j for b in batches for j in b])


def length_order(ds) -> list[int]:
    """Row indices, longest first (a stable sort: ties keep file order): the order of a `by_length` loader."""
    n = lengths(ds)
    return sorted(range(len(n)), key=lambda i: -n[i])


def lengths(ds) -> list[int]:
    """Tokens per example, read from the Arrow column a batch at a time (the token ids never become Python lists)."""
    import pyarrow.compute as pc

    out: list[int] = []
    for batch in ds.select_columns(["input_ids"]).with_format("arrow").iter(batch_size=65536):
        out.extend(pc.list_value_length(batch["input_ids"]).to_pylist())
    return out
