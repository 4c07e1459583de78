"""The registry of data encoders: a head's `inputs` name -> how rows become model inputs.

A leaf module (it imports nothing of adapterkit above the errors). The built-in encoders register from the
package `__init__`: `text` (text.py), `words` (words.py), `completion` and `label_words` (lm.py). A plugin head
with its own input format registers an `Encoder` here and names it in `Head.inputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from ..errors import AdapterkitError


@dataclass(frozen=True)
class Encoder:
    name: str
    # (ds, cfg: DataConfig, path, field, need_label) -> None; raises DataError naming the missing column.
    check_columns: Callable
    # (ds, tokenizer, recipe, head, labels, path, train) -> datasets.Dataset with input_ids, attention_mask and
    # (when the rows carry them) labels.
    encode: Callable
    # (ds, tokenizer, recipe, path) -> (prompt token ids, reference lists): what generated-text metrics generate from.
    generation: Optional[Callable] = None


ENCODERS: dict[str, Encoder] = {}


def register_encoder(encoder: Encoder) -> Encoder:
    ENCODERS[encoder.name] = encoder
    return encoder


def encoder_for(head) -> Encoder:
    if head.inputs not in ENCODERS:
        raise AdapterkitError(
            f"task.type: head {head.name!r} reads inputs {head.inputs!r}, which no data encoder handles "
            f"(known: {sorted(ENCODERS)})"
        )
    return ENCODERS[head.inputs]
