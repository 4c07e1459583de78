"""Word-level tagging data (NER): tokenize pre-split words and align word tags to sub-word tokens."""

from __future__ import annotations

from ..errors import DataError
from ..heads import IGNORE
from .encoders import Encoder, register_encoder
from .labels import label_text
from .readers import column
from .text import check_columns


def continuation_tag(tag: str) -> str:
    """The tag for a word's later sub-tokens: B-X becomes I-X so an entity is not split in two."""
    return "I-" + tag[2:] if tag.startswith("B-") else tag


def align_labels(
    word_ids: list, tag_ids: list[int], mode: str = "first", cont_ids: list[int] | None = None
) -> list[int]:
    """One label per sub-word token. Special tokens get IGNORE; a word's first sub-token gets its tag;
    later sub-tokens get IGNORE (`first`) or the word's continuation tag (`all`, `cont_ids[word]`)."""
    out, prev = [], None
    for w in word_ids:
        if w is None:
            out.append(IGNORE)
        elif w != prev:
            out.append(tag_ids[w])
        else:
            out.append((cont_ids or tag_ids)[w] if mode == "all" else IGNORE)
        prev = w
    return out


def tokenize_words(ds, tokenizer, cfg, labels: list[str] | None, path: str, train: bool = False):
    """input_ids / attention_mask / labels for a dataset of word lists (and tag lists, when present).
    Evaluation splits always label only each word's first sub-token, so entity metrics stay word-level."""
    import datasets

    words = column(ds, cfg.text_column)
    labels = labels or []  # no label column: encoded without labels
    for i, w in enumerate(words):
        if not isinstance(w, (list, tuple)):
            raise DataError(
                f"data.text_column: row {i + 1} of {path}: {cfg.text_column!r} must be a list of words for token "
                f"classification (use a CoNLL file or JSON Lines lists), got {type(w).__name__}"
            )
        if not w or not any(str(x).strip() for x in w):
            raise DataError(f"data.text_column: row {i + 1} of {path} has no words")
    words = [[str(x) for x in w] for w in words]
    if not getattr(tokenizer, "is_fast", False):
        raise DataError(
            f"data: token classification needs a fast tokenizer (word alignment); {type(tokenizer).__name__} is not"
        )
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=cfg.max_length)
    cols = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    if cfg.label_column in ds.column_names:
        index = {l: i for i, l in enumerate(labels)}
        cont = {l: index.get(continuation_tag(l), index[l]) for l in labels}  # tag -> continuation index
        mode = getattr(cfg, "subword_labels", "first") if train else "first"
        out = []
        for i, (w, tags) in enumerate(zip(words, column(ds, cfg.label_column))):
            if not isinstance(tags, (list, tuple)) or len(tags) != len(w):
                got = len(tags) if isinstance(tags, (list, tuple)) else type(tags).__name__
                raise DataError(f"data.label_column: row {i + 1} of {path} has {len(w)} words but {got} tags")
            tags = [label_text(t) for t in tags]
            bad = next((t for t in tags if t not in index), None)
            if bad is not None:
                raise DataError(
                    f"data.label_column: tag {bad!r} in sentence {i + 1} of {path} is not in the label map {labels} "
                    f"(task.labels or the training tags)"
                )
            out.append(align_labels(enc.word_ids(i), [index[t] for t in tags], mode, [cont[t] for t in tags]))
        cols["labels"] = out
    return datasets.Dataset.from_dict(cols)


def encode_words(ds, tokenizer, recipe, head, labels, path: str, train: bool = False):
    return tokenize_words(ds, tokenizer, recipe.data, labels, path, train)


register_encoder(Encoder("words", check_columns, encode_words))
