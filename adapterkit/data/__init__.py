"""Data: files -> checked, tokenized `datasets` splits -> batches.

    readers.py    CSV/TSV/JSON Lines, and the READERS registry by format name (CoNLL)
    labels.py     label names and indices per label kind
    encoders.py   the ENCODERS registry: a head's `inputs` -> how rows become model inputs
    text.py       `text` encoder (a text or a text pair per row)
    words.py      `words` encoder (pre-split words with tags: NER)
    lm.py         `completion` (causal LM) and `label_words` encoders
    prepare.py    every split of a recipe, read, checked and encoded
    loaders.py    padding collator and (length-grouped) data loaders
    packing.py    padding-free packing for causal-LM training
"""
from . import lm, text, words  # noqa: F401  (each registers its encoders)
from .encoders import ENCODERS, Encoder, encoder_for, register_encoder
from .labels import encode_labels, label_names, split_multi
from .loaders import Collator, dataloader
from .prepare import SPLITS, load_eval_file, prepare
from .readers import READERS, file_format, read_file
from .text import check_columns, tokenize

__all__ = ["ENCODERS", "Encoder", "encoder_for", "register_encoder", "encode_labels", "label_names", "split_multi", "Collator",
           "dataloader", "SPLITS", "load_eval_file", "prepare", "READERS", "file_format", "read_file", "check_columns", "tokenize"]
