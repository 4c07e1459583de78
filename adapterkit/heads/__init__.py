"""Task heads: the registry (`registry.py`), shared head modules (`modules.py`) and one module per head family.
The built-in heads register here, on import.

    classification.py   sequence_classification
    token.py            token_classification (NER, seqeval)
    regression.py       regression
    multi_label.py      multi_label
    lm.py               causal_lm, label_words (decoders; prompt and chat rendering)
    modules.py          the torch modules of custom heads (loaded when a model is built)
"""

from ..lazy import lazy_attributes
from . import classification, lm, multi_label, regression, token  # noqa: F401  (each registers its heads)
from .labels import label_maps
from .registry import HEADS, IGNORE, Head, HeadContext, register_head, task_settings

# The torch modules load on first use: the registry (recipe validation, --help) imports no torch.
__getattr__ = lazy_attributes(__name__, dict.fromkeys(("HeadModel", "PooledClassifier", "pool"), "modules"))


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
