"""Task heads: the registry (`registry.py`), shared head modules (`modules.py`) and one module per head family.
The built-in heads register here, on import.

    classification.py   sequence_classification
    token.py            token_classification (NER, seqeval)
    regression.py       regression
    multi_label.py      multi_label
    lm.py               causal_lm, label_words (decoders; prompt and chat rendering)
"""

from . import classification, lm, multi_label, regression, token  # noqa: F401  (each registers its heads)
from .modules import HeadModel, PooledClassifier, label_maps, pool
from .registry import HEADS, IGNORE, Head, HeadContext, register_head, task_settings

BUILTIN_HEADS = frozenset(HEADS)  # what docs/recipe-reference.md documents; plugin heads come later

__all__ = [
    "BUILTIN_HEADS",
    "HEADS",
    "IGNORE",
    "Head",
    "HeadContext",
    "HeadModel",
    "PooledClassifier",
    "label_maps",
    "pool",
    "register_head",
    "task_settings",
]
