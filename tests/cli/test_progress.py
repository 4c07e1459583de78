"""Progress bars: on for terminals, off in logs, forced by ADAPTERKIT_PROGRESS; chunked tokenizing changes nothing."""
import io

import pytest

from adapterkit.progress import chunks, enabled, progress, stage


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _no_force(monkeypatch):
    monkeypatch.delenv("ADAPTERKIT_PROGRESS", raising=False)


def test_bars_follow_the_terminal_and_the_override(monkeypatch):
    log, tty = io.StringIO(), Tty()
    assert not enabled(log) and enabled(tty)
    assert progress(range(3), file=log).disable and not progress(range(3), file=tty).disable
    monkeypatch.setenv("ADAPTERKIT_PROGRESS", "0")
    assert not enabled(tty)
    monkeypatch.setenv("ADAPTERKIT_PROGRESS", "1")
    assert enabled(log)


def test_stage_shows_the_step_on_a_terminal_and_nothing_in_a_log():
    tty, log = Tty(), io.StringIO()
    with stage("loading backbone", file=tty):
        pass
    with stage("loading backbone", file=log):
        pass
    assert "loading backbone: 00:0" in tty.getvalue()
    assert log.getvalue() == ""
    with pytest.raises(ValueError):  # a failing step closes its bar and the error goes through
        with stage("merging", file=tty):
            raise ValueError("boom")


def test_chunks_cover_every_item_once():
    starts = list(chunks(10_001, 4096, "x"))
    assert starts == [0, 4096, 8192]


def test_chunked_tokenizing_equals_one_call(tiny_bert):
    import datasets
    from transformers import AutoTokenizer

    from adapterkit.config import DataConfig
    from adapterkit.data import tokenize

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    texts = [f"review {i}: " + "good " * (i % 17) for i in range(9000)]  # > two chunks
    ds = datasets.Dataset.from_dict({"text": texts, "label": ["pos" if i % 2 else "neg" for i in range(9000)]})
    out = tokenize(ds, tok, DataConfig(max_length=12), ["neg", "pos"], "class", "mem.csv")
    ref = tok(texts, truncation=True, max_length=12)
    assert out["input_ids"] == ref["input_ids"] and out["attention_mask"] == ref["attention_mask"]
    assert out["labels"][:4] == [0, 1, 0, 1]
