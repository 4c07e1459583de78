"""Data: files -> checked, tokenized `datasets` splits -> batches.

readers.py    CSV/TSV/JSON Lines, and the READERS registry by format name (CoNLL)
labels.py     label names and indices per label kind
encoders.py   the ENCODERS registry: a head's `inputs` -> how rows become model inputs
text.py       `text` encoder (a text or a text pair per row)
words.py      `words` encoder (pre-split words with tags: NER)
lm.py         `completion` (causal LM) and `label_words` encoders
sources.py    where a split's rows come from: files, save_to_disk folders, Hub data sets; the validation hold-out
prepare.py    every split of a recipe, read, checked and encoded
loaders.py    padding collator and (length-grouped) data loaders
packing.py    padding-free packing for causal-LM training
audit.py      the data audit (rows, duplicates, labels, token lengths, overlaps): `adapterkit data check`
"""

from . import lm, text, words  # noqa: F401  (each registers its encoders)
from .encoders import ENCODERS, Encoder, encoder_for, register_encoder
from .labels import encode_labels, label_names, split_multi
from .loaders import Collator, dataloader
from .prepare import (
    Prepared,
    load_eval_file,
    load_eval_split,
    load_generation_rows,
    prepare,
    raw_splits,
    wants_generation,
)
from .readers import READERS, column, file_format, read_file
from .sources import SPLITS, describe, has_split, holdout, read_split
from .text import check_columns, tokenize

__all__ = [
    "ENCODERS",
    "Encoder",
    "encoder_for",
    "register_encoder",
    "encode_labels",
    "label_names",
    "split_multi",
    "Collator",
    "dataloader",
    "SPLITS",
    "Prepared",
    "load_eval_file",
    "load_eval_split",
    "load_generation_rows",
    "wants_generation",
    "prepare",
    "raw_splits",
    "READERS",
    "file_format",
    "column",
    "read_file",
    "describe",
    "has_split",
    "holdout",
    "read_split",
    "check_columns",
    "tokenize",
]
