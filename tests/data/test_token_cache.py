"""Tokenized splits are kept between commands (data/cache.py): a second `prepare` of the same files reads them back
equal, without tokenizing; another row, another tokenizer or another max_length tokenizes again; a damaged file is
tokenized again; the oldest files go past the size limit; a limit of 0 keeps nothing."""

import pytest
from helpers import tiny_recipe, write_ner, write_sentiment

import adapterkit.data.encoders as encoders
from adapterkit.config import resolve_paths
from adapterkit.data import prepare
from adapterkit.heads import HEADS
from adapterkit.model import recipe_from_dict
from adapterkit.model.backbone import load_tokenizer


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ADAPTERKIT_TOKEN_CACHE_MIB", "64")
    return tmp_path / "cache" / "tokens"


def _counting(monkeypatch, name: str) -> list:
    """Count calls of one encoder's `encode`."""
    calls: list = []
    enc = encoders.ENCODERS[name]
    real = enc.encode

    def encode(*args):
        calls.append(args[-2])  # the source
        return real(*args)

    monkeypatch.setitem(encoders.ENCODERS, name, encoders.Encoder(enc.name, enc.check_columns, encode, enc.generation))
    return calls


def _prepare(model_dir, files, tmp_path, task="sequence_classification", tokenizer=None, **data):
    r = tiny_recipe(model_dir, files, tmp_path / "run", task={"type": task})
    r["data"].update(data)
    recipe = resolve_paths(recipe_from_dict(r))
    return prepare(recipe, tokenizer or load_tokenizer(recipe.backbone), HEADS[task])


def test_a_second_prepare_reads_the_tokens_back(tiny_bert, tmp_path, cache, monkeypatch):
    files = write_sentiment(tmp_path)
    calls = _counting(monkeypatch, "text")
    first = _prepare(tiny_bert, files, tmp_path)
    assert len(calls) == 2 and len(list(cache.glob("*.arrow"))) == 2  # train and validation
    second = _prepare(tiny_bert, files, tmp_path)
    assert len(calls) == 2, "the second prepare tokenized again"
    for split in ("train", "validation"):
        assert second.splits[split].to_dict() == first.splits[split].to_dict()
        assert second.splits[split].cache_files  # read from the Arrow file, memory-mapped
    assert second.labels == first.labels

    _prepare(tiny_bert, files, tmp_path, max_length=8)
    assert len(calls) == 4, "another max_length must tokenize again"

    text = files["train"].read_text().splitlines()
    files["train"].write_text("\n".join(text[:1] + [text[1].replace(",", " again,", 1)] + text[2:]) + "\n")
    _prepare(tiny_bert, files, tmp_path)
    assert calls[4:] == [str(files["train"])], "only the changed file tokenizes again"

    tok = load_tokenizer(resolve_paths(recipe_from_dict(tiny_recipe(tiny_bert, files, tmp_path / "r"))).backbone)
    tok.add_tokens(["filmography"])
    _prepare(tiny_bert, files, tmp_path, tokenizer=tok)
    assert len(calls) == 7, "another tokenizer must tokenize again"


def test_damaged_file_tokenizes_again_and_limit_prunes(tiny_bert, tmp_path, cache, monkeypatch):
    files = write_ner(tmp_path)
    calls = _counting(monkeypatch, "words")
    first = _prepare(tiny_bert, files, tmp_path, task="token_classification")
    kept = sorted(cache.glob("*.arrow"), key=lambda p: p.stat().st_size)
    assert len(calls) == 2 and len(kept) == 2
    kept[0].write_bytes(b"not arrow")
    again = _prepare(tiny_bert, files, tmp_path, task="token_classification")
    assert len(calls) == 3  # the damaged one only
    assert again.splits["validation"].to_dict() == first.splits["validation"].to_dict()

    monkeypatch.setenv("ADAPTERKIT_TOKEN_CACHE_MIB", str(kept[1].stat().st_size / 2**20))  # room for the larger file
    _prepare(tiny_bert, files, tmp_path, task="token_classification", max_length=16)
    assert len(list(cache.glob("*.arrow"))) == 1, "the files over the limit are removed, oldest first"

    monkeypatch.setenv("ADAPTERKIT_TOKEN_CACHE_MIB", "0")
    n = len(calls)
    _prepare(tiny_bert, files, tmp_path, task="token_classification", max_length=16)
    _prepare(tiny_bert, files, tmp_path, task="token_classification", max_length=16)
    assert len(calls) == n + 4, "a limit of 0 turns the cache off"


def test_a_bad_cache_size_is_one_line(tiny_bert, tmp_path, monkeypatch):
    from helpers import one_error_line, write_recipe

    monkeypatch.setenv("ADAPTERKIT_TOKEN_CACHE_MIB", "lots")
    files = write_sentiment(tmp_path)
    line = one_error_line(["train", write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_bert, files, tmp_path / "run"))])
    assert "ADAPTERKIT_TOKEN_CACHE_MIB: 'lots'; expected a size in MiB" in line
