"""Padding-free packing for causal-LM training: several samples share one row, nothing attends across them.

A batch of samples is packed first-fit-decreasing into rows of at most `row_tokens` tokens. Position ids
restart at 0 for every sample, no attention mask and no KV cache are sent: transformers (5.x) then derives the packed
block-diagonal causal mask from the position ids for sdpa/eager/flex attention
(masking_utils.find_packed_sequence_indices) and uses varlen kernels for flash attention, so no sample sees
another. The first label of every sample is -100, so the last token of one sample is never trained to
predict the first token of the next (the same separator DataCollatorWithFlattening uses). Rows are padded
only at their ends, with labels -100.

Our own collator rather than DataCollatorWithFlattening: that one puts the whole batch in a single row,
whose dense sdpa mask costs (sum of lengths)^2 on CPU and non-flash GPUs; bounded rows keep it at row_tokens^2.
"""

from __future__ import annotations

import torch

from ..errors import ModelError
from ..heads import IGNORE

PACKING_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2", "flash_attention_3")


def pack_rows(lengths: list[int], row_tokens: int) -> list[list[int]]:
    """Sample indices per row, first-fit decreasing; a sample longer than a row gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        slot = next((r for r, free in enumerate(room) if free >= n), None)
        if slot is None:
            rows.append([i])
            room.append(row_tokens - n)
        else:
            rows[slot].append(i)
            room[slot] -= n
    return rows


class PackingCollator:
    """Features with input_ids (and optionally labels, -100 = not trained) -> packed input_ids, labels, position_ids."""

    def __init__(self, pad_token_id: int, row_tokens: int):
        self.pad_token_id = int(pad_token_id if pad_token_id is not None else 0)
        self.row_tokens = int(row_tokens)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = [list(f["input_ids"]) for f in features]
        labels = [
            list(f["labels"]) if "labels" in f and f["labels"] is not None else list(x) for f, x in zip(features, ids)
        ]
        rows = pack_rows([len(x) for x in ids], self.row_tokens)
        width = max(sum(len(ids[i]) for i in row) for row in rows)
        out_ids, out_labels, out_pos = [], [], []
        for row in rows:
            r_ids, r_lab, r_pos = [], [], []
            for i in row:
                r_ids += ids[i]
                r_lab += [IGNORE] + labels[i][1:]
                r_pos += list(range(len(ids[i])))
            pad = width - len(r_ids)
            r_ids += [self.pad_token_id] * pad
            r_lab += [IGNORE] * pad
            # The tail continues the last sample's positions: causal attention means no real token sees it,
            # and position 0 then marks exactly one sample start (examples() counts them).
            r_pos += list(range(r_pos[-1] + 1, r_pos[-1] + 1 + pad))
            out_ids.append(r_ids)
            out_labels.append(r_lab)
            out_pos.append(r_pos)
        # use_cache=False: with a KV cache present transformers skips the packed-mask detection and samples would mix.
        return {
            "input_ids": torch.tensor(out_ids),
            "labels": torch.tensor(out_labels),
            "position_ids": torch.tensor(out_pos),
            "use_cache": False,
        }


def check_packing_support(model) -> None:
    """Packing relies on transformers building the mask from position ids; other attention code would mix samples."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl not in PACKING_ATTENTION:
        raise ModelError(
            f"training.packing: needs a model whose attention is one of {list(PACKING_ATTENTION)} "
            f"(this one uses {impl!r}); set training.packing: false"
        )


def examples(batch: dict) -> int:
    """Samples in a batch: packed rows hold several (each starts at position 0), padded rows one each."""
    pos = batch.get("position_ids")
    if pos is None or "attention_mask" in batch:
        return int(batch["input_ids"].shape[0])
    return int((pos == 0).sum())
