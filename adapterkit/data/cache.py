"""Tokenized splits kept between commands: the second run of a recipe on the same files reads its token ids from an
Arrow file instead of tokenizing again (SST-2's 67,349 rows: 3.4 s of start-up).

The key is everything the token ids depend on: the rows' content (`datasets`' fingerprint, content-hashed for rows
read into memory), the tokenizer's own state (vocabulary, merges, added tokens, chat template), the recipe's data and
task sections, the label map, the head, and the versions of adapterkit, transformers and tokenizers. Files are Arrow
(data only, never a pickle), written to a temporary name and renamed, so processes of one launch never read a half
file; the oldest are removed past `ADAPTERKIT_TOKEN_CACHE_MIB` (default 2048; 0 turns the cache off).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from importlib.metadata import version

from ..errors import DataError
from ..files import cache_dir

DEFAULT_LIMIT_MIB = 2048


def limit_bytes() -> int:
    raw = os.environ.get("ADAPTERKIT_TOKEN_CACHE_MIB", str(DEFAULT_LIMIT_MIB))
    try:
        return int(float(raw) * 2**20)
    except ValueError:
        raise DataError(
            f"ADAPTERKIT_TOKEN_CACHE_MIB: {raw!r}; expected a size in MiB (0 turns the token cache off)"
        ) from None


def tokenizer_state(tokenizer) -> str:
    """What a tokenizer does to text, as one string: a fast tokenizer's full serialisation (3-25 ms), else its
    vocabulary; its chat template, special tokens and truncation side."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        core = json.dumps(sorted(tokenizer.get_vocab().items()))
    else:  # without the truncation and padding the last call left (each call sets its own)
        trunc, pad = backend.truncation, backend.padding
        backend.no_truncation()
        backend.no_padding()
        try:
            core = backend.to_str()
        finally:
            if trunc:
                backend.enable_truncation(**trunc)
            if pad:
                backend.enable_padding(**pad)
    extra = (
        getattr(tokenizer, "chat_template", None),
        str(getattr(tokenizer, "special_tokens_map", {})),
        getattr(tokenizer, "truncation_side", None),
        getattr(tokenizer, "padding_side", None),
        type(tokenizer).__name__,
    )
    return core + repr(extra)


def key(ds, tokenizer, recipe, head, labels, train: bool) -> str:
    parts = [
        ds._fingerprint,
        hashlib.sha256(tokenizer_state(tokenizer).encode()).hexdigest(),
        # the files' paths are not part of it: their rows are (the fingerprint), and another test file leaves the
        # training split's tokens valid
        recipe.data.model_dump_json(exclude={"train", "validation", "test"}),
        recipe.task.model_dump_json(),
        json.dumps(labels),
        head.name,
        train,
        *(version(p) for p in ("adapterkit", "transformers", "tokenizers")),
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def cached_encode(encode, ds, tokenizer, recipe, head, labels, source: str, train: bool):
    """`encode(ds, tokenizer, recipe, head, labels, source, train)`, or its result from an earlier command."""
    import datasets

    if limit_bytes() <= 0 or not datasets.is_caching_enabled():
        return encode(ds, tokenizer, recipe, head, labels, source, train)
    folder = cache_dir() / "tokens"
    path = folder / f"{key(ds, tokenizer, recipe, head, labels, train)}.arrow"
    if path.is_file():
        try:
            out = datasets.Dataset.from_file(str(path))
            os.utime(path)  # the oldest-used files go first
            return out
        except (OSError, ValueError):  # a damaged file (ArrowInvalid is a ValueError): tokenize again
            path.unlink(missing_ok=True)
    out = encode(ds, tokenizer, recipe, head, labels, source, train)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write(out, path)
        _prune(folder, limit_bytes())
    except OSError:  # a read-only or full cache costs the next command its tokenizing, not this one its run
        pass
    return out


def _write(ds, path) -> None:
    import pyarrow as pa

    table = ds.flatten_indices().data.table if ds._indices is not None else ds.data.table
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _prune(folder, limit: int) -> None:
    files = sorted(folder.glob("*.arrow"), key=lambda p: p.stat().st_mtime, reverse=True)
    total = 0
    for p in files:
        total += p.stat().st_size
        if total > limit:
            p.unlink(missing_ok=True)
