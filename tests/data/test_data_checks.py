"""Nothing trains silently on bad data (issue #21): each bad data file is one stderr line naming the file, line and
column, exit code 2, before any model loads (table-driven, as tests/cli/test_bad_inputs.py); files that only look
unusual (a byte-order mark, semicolons with data.delimiter) read; data.allow_unseen_labels; and the data audit
(`adapterkit data check`, data/audit.py, the report's Data section) with exact counts on a small file."""
import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))

from adapterkit.config import resolve_paths  # noqa: E402
from adapterkit.data import prepare  # noqa: E402
from adapterkit.data.audit import audit, format_audit, to_dict  # noqa: E402
from adapterkit.heads import HEADS  # noqa: E402
from adapterkit.model import recipe_from_dict  # noqa: E402
from adapterkit.model.backbone import load_tokenizer  # noqa: E402
from adapterkit.training.preflight import preflight  # noqa: E402
from helpers import cli, one_error_line, tiny_recipe, write_ner, write_sentiment  # noqa: E402
from test_bad_inputs import Ctx  # noqa: E402

NL = "\n"


def _bytes(c: Ctx, name: str, data: bytes) -> str:
    p = c.root / name
    p.write_bytes(data)
    return str(p)


def _jsonl(c: Ctx, name: str, rows) -> str:
    return c.file(name, "".join(json.dumps(r) + NL for r in rows))


def _conll_empty_tag(c: Ctx) -> list[str]:
    r = c.recipe(task={"type": "token_classification"})
    r["data"] = {"train": c.file("train.txt", "EU\tB-ORG\nrejects\t\nGerman\tO\n\nPeter\tB-PER\n"), "max_length": 32}
    return c.train(recipe=r)


def _null_tags(c: Ctx) -> list[str]:
    r = c.recipe(task={"type": "token_classification"})
    r["data"] = {"train": _jsonl(c, "ner.jsonl", [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}, {"tokens": ["Peter"], "tags": None}]),
                 "max_length": 32}
    return c.train(recipe=r)


def _empty_tag_in_list(c: Ctx) -> list[str]:
    r = c.recipe(task={"type": "token_classification"})
    r["data"] = {"train": _jsonl(c, "et.jsonl", [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", " "]}]), "max_length": 32}
    return c.train(recipe=r)


def _check(c: Ctx, *overrides) -> list[str]:
    return ["data", "check", *c.train(*overrides)[1:]]


# ---- labels that are not what they look like (issue #36, class 6) ----

def _task(c: Ctx, task: str, train: str, validation: str | None = None, check: bool = False) -> list[str]:
    """`train` (or `data check` when `check`) of a recipe of `task` on these files."""
    r = c.recipe(task={"type": task})
    r["data"].update(train=train, validation=validation or train)
    argv = c.train(recipe=r)
    return ["data", "check", *argv[1:]] if check else argv


def _parquet(c: Ctx, name: str, columns: dict) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), c.root / name)
    return str(c.root / name)


REG_CSV = "text,label" + NL + "good,1.5" + NL + "bad,nan" + NL + "odd,inf" + NL + "huge,1e400" + NL + "fine,2" + NL
REG_JSONL = '{"text": "good", "label": 1.5}' + NL + '{"text": "bad", "label": NaN}' + NL + '{"text": "odd", "label": -Infinity}' + NL \
    + '{"text": "huge", "label": 1e400}' + NL + '{"text": "fine", "label": 2}' + NL
LABELS = [
    # non-finite regression targets: refused when the data is read, naming the rows (they made the loss NaN at step 1)
    ("regression-nan-csv", lambda c: _task(c, "regression", c.file("reg.csv", REG_CSV)),
     ["data.train", "'label'", "reg.csv lines 3, 4 and 5", "'nan', 'inf', '1e400'", "not a finite number"]),
    ("regression-nan-csv-check", lambda c: _task(c, "regression", c.file("reg.csv", REG_CSV), check=True),
     ["data.train", "reg.csv lines 3, 4 and 5", "not a finite number"]),
    ("regression-nan-jsonl", lambda c: _task(c, "regression", c.file("reg.jsonl", REG_JSONL)),
     ["data.train", "reg.jsonl lines 2, 3 and 4", "nan, -inf, inf", "not a finite number"]),
    ("regression-nan-parquet", lambda c: _task(c, "regression", _parquet(c, "reg.parquet", {"text": ["a", "b", "c"], "label": [0.5, float("nan"), 1.0]})),
     ["data.train", "reg.parquet row 2", "not a finite number"]),
    ("regression-inf-validation", lambda c: _task(c, "regression", c.file("ok.csv", "text,label" + NL + "a,1" + NL + "b,2" + NL),
                                                  c.file("val.csv", "text,label" + NL + "a,1" + NL + "b,-inf" + NL)),
     ["data.validation", "val.csv line 3", "not a finite number"]),
    ("regression-text-target", lambda c: _task(c, "regression", c.file("t.csv", "text,label" + NL + "a,1" + NL + "b,high" + NL)),
     ["data.train", "t.csv line 3", "'high'", "not a finite number"]),
    ("regression-boolean-target", lambda c: _task(c, "regression", _jsonl(c, "b.jsonl", [{"text": "a", "label": True}, {"text": "b", "label": False}])),
     ["data.train", "b.jsonl lines 1 and 2", "not a finite number"]),
    # lists in a single-label column would become classes named "['negative']"
    ("parquet-list-labels", lambda c: _task(c, "sequence_classification", _parquet(c, "l.parquet", {"text": ["a", "b"], "label": [["negative"], ["positive"]]})),
     ["data.train", "'label'", "l.parquet rows 1 and 2", "['negative']", "task.type: multi_label"]),
    ("jsonl-list-label-validation", lambda c: _task(c, "sequence_classification", str(c.data["train"]),
                                                    _jsonl(c, "v.jsonl", [{"text": "a", "label": ["pos"]}, {"text": "b", "label": ["neg", "pos"]}])),
     ["data.validation", "v.jsonl lines 1 and 2", "task.type: multi_label"]),
    ("jsonl-string-and-list-label", lambda c: _task(c, "sequence_classification", _jsonl(c, "sl.jsonl", [GOOD, {"text": "b", "label": ["neg", "pos"]}])),
     ["data.train", "sl.jsonl line 2", "'label' is a JSON list", "task.type: multi_label"]),
    ("jsonl-object-label", lambda c: _task(c, "sequence_classification", _jsonl(c, "o.jsonl", [{"text": "a", "label": {"name": "pos"}}] * 2), check=True),
     ["data.train", "o.jsonl lines 1 and 2", "one label per row"]),
    ("parquet-nan-class-label", lambda c: _task(c, "sequence_classification", _parquet(c, "n.parquet", {"text": ["a", "b", "c"], "label": [1.0, float("nan"), 0.0]})),
     ["data.train", "n.parquet row 2", "NaN for 'label'"]),
    # multi-label rows that are not lists of names
    ("multi-label-indicator-vector", lambda c: _task(c, "multi_label", _jsonl(c, "m.jsonl", [{"text": "a", "label": [0, 1, 1]}, {"text": "b", "label": [1, 0, 0]}])),
     ["data.train", "m.jsonl lines 1 and 2", "0/1 indicator vector", "label names"]),
    ("multi-label-object", lambda c: _task(c, "multi_label", _jsonl(c, "mo.jsonl", [{"text": "a", "label": {"x": 1}}, {"text": "b", "label": {"x": 0}}])),
     ["data.train", "mo.jsonl lines 1 and 2", "an object"]),
    ("multi-label-nan-in-list", lambda c: _task(c, "multi_label", _parquet(c, "mn.parquet", {"text": ["a", "b"], "label": [[1.0], [float("nan")]]})),
     ["data.train", "mn.parquet row 2", "not finite"]),
    # JSON Lines columns of two types: pyarrow's "Could not convert" named no line
    ("jsonl-label-number-and-string", lambda c: _task(c, "sequence_classification", c.file("mix.jsonl", '{"text": "a", "label": 1}' + NL + NL
                                                                                        + '{"text": "b", "label": 0}' + NL + '{"text": "c", "label": "1"}' + NL)),
     ["data.train", "mix.jsonl line 4", "'label' is a JSON string ('1')", "line 1 has a JSON number", "one type", "quote every value or none"]),
    ("jsonl-text-string-and-list", lambda c: _task(c, "sequence_classification", _jsonl(c, "tx.jsonl", [GOOD, {"text": ["bad", "film"], "label": "neg"}]), check=True),
     ["data.train", "tx.jsonl line 2", "'text' is a JSON list", "line 1 has a JSON string"]),
    ("jsonl-list-items-of-two-types", lambda c: _task(c, "multi_label", _jsonl(c, "li.jsonl", [{"text": "a", "label": ["x"]}, {"text": "b", "label": [2]}])),
     ["data.train", "li.jsonl line 2", "holds a JSON number (2) in its list", "line 1 holds a JSON string"]),
]


GOOD = {"text": "good film", "label": "pos"}

# (case id, argv builder, substrings the single error line must contain)
CASES = [
    ("empty-label-csv", lambda c: c.train(f"data.train={c.file('el.csv', 'text,label' + NL + 'good,pos' + NL + 'bad,' + NL)}"),
     ["data.train", "el.csv line 3", "an empty 'label'", "data.label_column"]),
    ("empty-label-tsv", lambda c: c.train(f"data.train={c.file('el.tsv', 'text' + chr(9) + 'label' + NL + 'good' + chr(9) + 'pos' + NL + NL + 'bad' + chr(9) + ' ' + NL)}"),
     ["data.train", "el.tsv line 4", "an empty 'label'"]),
    ("jsonl-missing-label", lambda c: c.train(f"data.train={_jsonl(c, 'ml.jsonl', [GOOD, {'text': 'bad film'}])}"),
     ["data.train", "ml.jsonl line 2", "no value for 'label' (a missing key or null)"]),
    ("jsonl-null-label", lambda c: c.train(f"data.train={_jsonl(c, 'nl.jsonl', [GOOD, GOOD, {'text': 'bad film', 'label': None}])}"),
     ["data.train", "nl.jsonl line 3", "no value for 'label'"]),
    ("jsonl-label-missing-in-first-row", lambda c: c.train(f"data.train={_jsonl(c, 'fl.jsonl', [{'text': 'bad film'}, GOOD])}"),
     ["data.train", "fl.jsonl line 1", "no value for 'label'"]),
    ("validation-empty-label", lambda c: c.train(f"data.validation={c.file('v.csv', 'text,label' + NL + 'good,pos' + NL + 'meh,' + NL)}"),
     ["data.validation", "v.csv line 3", "an empty 'label'"]),
    ("duplicate-header", lambda c: c.train(f"data.train={c.file('dh.csv', 'text,label,text' + NL + 'good,pos,x' + NL + 'bad,neg,y' + NL)}"),
     ["data.train", "dh.csv line 1", "'text' appears 2 times in the header (columns 1, 3)"]),
    ("conll-empty-tag", _conll_empty_tag, ["data.train", "train.txt line 2 has an empty tag (column 2 of 2)"]),
    ("jsonl-null-tags", _null_tags, ["data.train", "ner.jsonl line 2", "no value for 'tags'"]),
    ("jsonl-empty-tag", _empty_tag_in_list, ["data.train", "et.jsonl line 1", "an empty tag in 'tags'"]),
    ("jsonl-not-an-object", lambda c: c.train(f"data.train={c.file('na.jsonl', json.dumps(GOOD) + NL + json.dumps(['bad film', 'neg']) + NL)}"),
     ["data.train", "na.jsonl line 2 is not a JSON object", "list"]),
    ("not-utf8", lambda c: c.train(f"data.train={_bytes(c, 'l1.csv', b'text,label' + bytes([10]) + b'good,pos' + bytes([10]) + b'caf' + bytes([0xE9]) + b' film,neg' + bytes([10]))}"),
     ["data.train", "l1.csv is not UTF-8 text", "byte 0xe9 at byte offset 23 (line 3)"]),
    ("not-utf8-conll", lambda c: _conll_bytes(c), ["data.train", "l1.txt is not UTF-8 text", "byte 0xf6 at byte offset 10 (line 2)"]),
    ("semicolon-csv", lambda c: c.train(f"data.train={c.file('sc.csv', 'text;label' + NL + 'good;pos' + NL + 'bad;neg' + NL)}"),
     ["data.text_column: column 'text' not in", "sc.csv", "set data.delimiter: ';'"]),
    ("tab-in-csv", lambda c: c.train(f"data.train={c.file('tab.csv', 'text' + chr(9) + 'label' + NL + 'good' + chr(9) + 'pos' + NL)}"),
     ["data.text_column", "set data.format: tsv"]),
    ("delimiter-not-one-character", lambda c: c.train("data.delimiter=';;'"), ["data.delimiter", "1 character"]),
    ("unseen-label-hint", lambda c: c.train(f"data.validation={c.file('val.csv', 'text,label' + NL + 'so so,maybe' + NL + 'great,pos' + NL)}"),
     ["data.validation", "['maybe']", "data.allow_unseen_labels: true"]),
    ("unseen-label-outside-task-labels", lambda c: c.train(f"data.validation={c.file('val.csv', 'text,label' + NL + 'so so,maybe' + NL)}",
                                                           "data.allow_unseen_labels=true", "task.labels=[neg, pos]"),
     ["data.validation", "['maybe']", "task.labels"]),
    ("check-empty-label", lambda c: _check(c, f"data.train={c.file('el.csv', 'text,label' + NL + 'good,pos' + NL + 'bad,' + NL)}"),
     ["data.train", "el.csv line 3", "an empty 'label'"]),
    ("check-unseen-label", lambda c: _check(c, f"data.validation={c.file('val.csv', 'text,label' + NL + 'so so,maybe' + NL)}"),
     ["data.validation", "['maybe']"]),
    ("check-missing-column", lambda c: _check(c, "data.text_column=sentence"), ["data.text_column: column 'sentence' not in"]),
    # ---- files with no rows, and folders where a file belongs (issue #36, class 8) ----
    ("jsonl-blank-lines-only", lambda c: c.train(f"data.train={c.file('b.jsonl', NL + '  ' + NL)}"), ["data.train", "b.jsonl has no rows (only blank lines)"]),
    ("csv-blank-lines-only", lambda c: c.train(f"data.train={c.file('b.csv', NL + NL)}"), ["data.train", "b.csv has no header line"]),
    ("tsv-header-only", lambda c: c.train(f"data.validation={c.file('h.tsv', 'text' + chr(9) + 'label' + NL)}"), ["data.validation", "h.tsv has a header but no rows"]),
    ("csv-file-is-a-folder", lambda c: c.train(f"data.train={_folder(c, 'dir.csv')}"), ["data.train", "dir.csv is a folder, not a csv file", "data.format: disk"]),
    ("csv-format-folder", lambda c: c.train(f"data.train={_folder(c, 'plain')}", "data.format=csv"), ["data.train", "plain is a folder, not a csv file"]),
    ("jsonl-text-is-a-list", lambda c: c.train(f"data.train={_jsonl(c, 'tl.jsonl', [{'text': ['good', 'film'], 'label': 'pos'}, {'text': ['bad'], 'label': 'neg'}])}"),
     ["data.text_column: row 1", "tl.jsonl", "'text' holds a list, not a text", "token_classification"]),
    ("csv-field-over-the-csv-limit", lambda c: c.train(f"data.train={c.file('big.csv', 'text,label' + NL + 'x' * 200_000 + ',pos' + NL)}"),
     ["data.train", "big.csv line 2", "field larger than field limit"]),
    ("label-column-missing-in-validation", lambda c: c.train(f"data.validation={c.file('v.csv', 'text,sentiment' + NL + 'good,pos' + NL)}"),
     ["data.label_column: column 'label' not in", "v.csv", "'sentiment'"]),
] + LABELS


def _folder(c: Ctx, name: str) -> str:
    (c.root / name).mkdir()
    return str(c.root / name)


def _conll_bytes(c: Ctx) -> list[str]:
    r = c.recipe(task={"type": "token_classification"})
    r["data"] = {"train": _bytes(c, "l1.txt", b"EU\tB-ORG\nK" + bytes([0xF6]) + b"ln\tB-LOC\n"), "max_length": 32}
    return c.train(recipe=r)


@pytest.mark.parametrize("case,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_data_is_one_line(case, build, expected, tiny_bert, tmp_path, no_model):
    line = one_error_line(build(Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)))
    for s in expected:
        assert s in line, f"{s!r} not in {line!r}"


# ---- files that read ----

def _recipe(c: Ctx, **data):
    """The case's tiny recipe with `data` settings over its own, as a Recipe."""
    r = c.recipe()
    r["data"].update(data)
    return resolve_paths(recipe_from_dict(r))


def test_bom_csv_and_jsonl_read(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    bom = "\ufeff"
    csv_ = c.file("bom.csv", bom + "text,label" + NL + "good film,pos" + NL + "bad film,neg" + NL)
    jl = c.file("bom.jsonl", bom + json.dumps({"text": "fine film", "label": "pos"}) + NL + json.dumps({"text": "poor film", "label": "neg"}) + NL)
    r = _recipe(c, train=csv_, validation=jl)
    preflight(r)
    data = prepare(r, load_tokenizer(r.backbone), HEADS["sequence_classification"])
    assert data.labels == ["neg", "pos"] and len(data.splits["train"]) == 2 and len(data.splits["validation"]) == 2
    assert data.splits["train"]["labels"] == [1, 0]


def test_semicolon_csv_reads_with_data_delimiter(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    sc = c.file("sc.csv", 'text;label\n"good; really good";pos\nbad film;neg\n')
    r = _recipe(c, train=sc, validation=sc, delimiter=";")  # one separator for every file
    preflight(r)
    data = prepare(r, load_tokenizer(r.backbone), HEADS["sequence_classification"])
    assert data.labels == ["neg", "pos"] and data.splits["train"]["labels"] == [1, 0]
    tsv = c.file("pipe.tsv", "text|label\ngood film|pos\nbad film|neg\n")  # the delimiter overrides tsv's tab too
    assert prepare(_recipe(c, train=tsv, validation=tsv, delimiter="|"), load_tokenizer(r.backbone), HEADS["sequence_classification"]).labels == ["neg", "pos"]


def test_multi_label_rows_may_have_no_labels(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    train = c.file("ml.csv", 'text,label\ngood film,"a,b"\nbad film,\nok film,a\n')
    r = c.recipe(task={"type": "multi_label"})
    r["data"].update(train=train, validation=train)
    r = resolve_paths(recipe_from_dict(r))
    preflight(r)
    data = prepare(r, load_tokenizer(r.backbone), HEADS["multi_label"])
    assert data.labels == ["a", "b"] and data.splits["train"]["labels"][1] == [0.0, 0.0]


def test_allow_unseen_labels_adds_them_after_the_training_labels(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    val = c.file("val.csv", "text,label\nso so,maybe\ngreat,pos\nmeh,amazing\n")
    r = _recipe(c, validation=val, allow_unseen_labels=True)
    preflight(r)  # no refusal
    data = prepare(r, load_tokenizer(r.backbone), HEADS["sequence_classification"])
    assert data.labels == ["neg", "pos", "amazing", "maybe"]  # training labels keep their indices
    assert data.splits["validation"]["labels"] == [3, 1, 2]
    assert set(data.splits["train"]["labels"]) == {0, 1}


def test_labels_in_two_unicode_forms_are_one_class(tiny_bert, tmp_path, capsys, no_model):
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    train = c.file("u.csv", f"text,label\nan espresso,{nfc}\na latte,{nfd}\ngreen tea,tea\nblack tea,tea\n")
    r = _recipe(c, train=train, validation=train)
    capsys.readouterr()
    data = prepare(r, load_tokenizer(r.backbone), HEADS["sequence_classification"])
    assert data.labels == [nfc, "tea"] and data.splits["train"]["labels"] == [0, 0, 1, 1]  # two classes, not three
    err = capsys.readouterr().err
    assert "note: train: label(s) 'café'" in err and "more than one Unicode form" in err, err
    a = audit(r, lengths=False)
    assert a.splits["train"].labels == {nfc: 2, "tea": 2}
    assert any("'café'" in w and "Unicode" in w for w in a.warnings), a.warnings
    # task.labels typed in NFD names the same class
    r2 = _recipe(c, train=train, validation=train)
    r2.task.labels = [nfd, "tea"]
    assert prepare(r2, load_tokenizer(r.backbone), HEADS["sequence_classification"]).labels == [nfc, "tea"]
    # NFC-only data: no note
    clean = c.file("n.csv", f"text,label\nan espresso,{nfc}\ngreen tea,tea\n")
    capsys.readouterr()
    prepare(_recipe(c, train=clean, validation=clean), load_tokenizer(r.backbone), HEADS["sequence_classification"])
    assert "note:" not in capsys.readouterr().err


def test_one_number_written_two_ways_is_noted(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    train = c.file("n.csv", "text,label\ngood,1\nfine,1.0\nbad,0\npoor,0\n")
    a = audit(_recipe(c, train=train, validation=train), lengths=False)
    assert a.splits["train"].labels == {"0": 2, "1": 1, "1.0": 1}  # still separate classes: the data says so
    assert any("labels '1' and '1.0'" in w and "one number" in w for w in a.warnings), a.warnings
    clean = c.file("c.csv", "text,label\ngood,1\nbad,0\n")
    assert not any("one number" in w for w in audit(_recipe(c, train=clean, validation=clean), lengths=False).warnings)


def test_label_words_keys_in_another_unicode_form(tiny_llama, tmp_path):
    import unicodedata

    from adapterkit.heads.lm import label_word_config

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    r = recipe_from_dict(tiny_recipe(tiny_llama, write_sentiment(tmp_path), tmp_path / "out",
                                     task={"type": "label_words", "label_words": {nfd: nfd + " bar", "tea": "tea"}}))
    # the data's label 'café' (NFC) finds the key typed in NFD, and the word is in NFC as the model saw such words
    assert label_word_config(r, [nfc, "tea"]) == {nfc: nfc + " bar", "tea": "tea"}


def test_non_finite_targets_in_an_eval_file_and_in_encoding(tiny_bert, tmp_path, no_model):
    from adapterkit.data import encode_labels, load_eval_file
    from adapterkit.errors import DataError

    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    ok = c.file("ok.csv", "text,label\na,1\nb,2\n")
    r = c.recipe(task={"type": "regression"})
    r["data"].update(train=ok, validation=ok)
    r = resolve_paths(recipe_from_dict(r))
    bad = c.file("e.csv", "text,label\na,1\n\nb,NaN\n")
    with pytest.raises(DataError, match=r"--data: 'label' at .*e\.csv line 4 \('NaN'\) is not a finite number"):
        load_eval_file(r, load_tokenizer(r.backbone), HEADS["regression"], None, bad, "--data")
    # the last guard, for rows that reach encoding unchecked: names the row
    with pytest.raises(DataError, match=r"'label' in f\.csv row 6 is 'inf', not a finite number"):
        encode_labels(["1.5", "inf"], None, "float", "f.csv", "label", rows=[4, 5])
    assert encode_labels(["1.5", 2], None, "float", "f.csv", "label") == [1.5, 2.0]


# ---- the audit ----

LONG = " ".join(["word"] * 20)


def _audit_files(c: Ctx) -> dict:
    train = c.file("train.csv", NL.join(["text,label", "good film,pos", "good film,pos", "bad film,neg", "the same words,pos",
                                         "the same words,neg", f"{LONG},neg"]) + NL)
    val = c.file("validation.csv", NL.join(["text,label", "good film,pos", "BAD  film,neg", "fresh text,pos"]) + NL)
    test = c.file("test.csv", NL.join(["text,label", "fresh text,neg", "unique one,pos"]) + NL)
    return {"train": train, "validation": val, "test": test, "max_length": 8}


def test_audit_counts(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    a = _audit_with_lengths(_recipe(c, **_audit_files(c)))
    tr, va, te = a.splits["train"], a.splits["validation"], a.splits["test"]
    assert (tr.rows, tr.distinct_texts, tr.duplicate_rows, tr.conflicting_texts) == (6, 4, 1, 1)
    assert tr.labels == {"neg": 3, "pos": 3} and va.labels == {"neg": 1, "pos": 2}
    # [CLS] w.. [SEP]: good film 4, good film 4, bad film 4, the same words 5 (x2), 20 words 22
    assert tr.lengths == {"p50": 4, "p90": 22, "p99": 22, "max": 22} and tr.truncated == 1
    assert va.truncated == 0 and te.rows == 2 and te.duplicate_rows == 0
    overlaps = {tuple(o.splits): (o.exact, o.normalized, o.example) for o in a.overlaps}
    assert overlaps == {("train", "validation"): (1, 2, "good film"), ("validation", "test"): (1, 1, "fresh text")}
    assert len(a.warnings) == 4
    assert any("validation: 2 text(s) also in train (1 verbatim, 2 after whitespace/case normalisation)" in w for w in a.warnings)
    assert any("train: 1 of 6 examples are longer than data.max_length=8" in w for w in a.warnings)
    table = format_audit(a)
    assert "dup rows" in table and "overlap train/validation: 1 verbatim, 2 normalised" in table
    d = to_dict(a)
    assert json.loads(json.dumps(d))["splits"]["train"]["truncated"] == 1


def test_audit_without_tokenizer_has_no_lengths(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    a = audit(_recipe(c, **_audit_files(c)), lengths=False)
    assert a.splits["train"].lengths is None and a.splits["train"].duplicate_rows == 1 and len(a.warnings) == 3


def _audit_with_lengths(recipe):
    from adapterkit.model.backbone import tokenizer_only

    return audit(recipe, tokenizer_only(recipe.backbone))


def test_audit_token_classification_and_causal_lm(tiny_bert, tiny_llama, tmp_path, no_model):
    files = write_ner(tmp_path, n_train=12, n_val=4)
    r = tiny_recipe(tiny_bert, files, tmp_path / "out", task={"type": "token_classification"})
    a = _audit_with_lengths(resolve_paths(recipe_from_dict(r)))
    assert a.splits["train"].rows == 12 and "O" in a.splits["train"].labels and a.splits["train"].lengths["max"] > 2
    rows = [{"prompt": "Q: 2+2? A:", "completion": " 4"}] * 2 + [{"prompt": "Q: sky? A:", "completion": " blue"}]
    p = tmp_path / "lm.jsonl"
    p.write_text("".join(json.dumps(x) + NL for x in rows))
    r = tiny_recipe(tiny_llama, {"train": p, "validation": p}, tmp_path / "out2", task={"type": "causal_lm"})
    a = _audit_with_lengths(resolve_paths(recipe_from_dict(r)))
    assert (a.splits["train"].rows, a.splits["train"].duplicate_rows, a.splits["train"].labels) == (3, 1, None)
    assert a.splits["train"].lengths["max"] > 3 and a.overlaps[0].exact == 2


def test_data_check_command(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    r = c.recipe()
    r["data"] = _audit_files(c)
    path = c.write(r)
    res = cli("data", "check", path)  # warnings only: returns, exit 0
    assert res.code == 0, res.err
    out, err = res.out, res.err
    assert "data audit (sequence_classification" in out and "train" in out and "overlap validation/test" in out
    err = [l for l in err.splitlines() if l.strip()]
    assert len(err) == 4 and all(l.startswith("warning: ") for l in err), err
    res = cli("data", "check", path, "--json", "--set", "data.max_length=64")
    assert res.code == 0, res.err
    out, err = res.out, res.err
    d = json.loads(out)
    assert d["max_length"] == 64 and d["splits"]["train"]["truncated"] == 0 and d["splits"]["validation"]["rows"] == 3
    assert len([l for l in err.splitlines() if l.startswith("warning: ")]) == 3


def test_data_check_clean_data(tiny_bert, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    (tmp_path / "v").mkdir()
    files = write_sentiment(tmp_path / "v", n_train=4, n_val=2, seed=1)
    r = c.recipe()
    r["data"].update(validation=str(files["validation"]), max_length=64)
    r["data"]["train"] = c.file("uniq.csv", "text,label\nalpha beta,pos\ngamma delta,neg\n")
    res = cli("data", "check", c.write(r))
    assert res.code == 0, res.err
    out, err = res.out, res.err
    assert "overlap: no text shared between splits" in out and err.strip() == ""


def test_report_has_a_data_section(tiny_bert, tmp_path, no_model):
    from adapterkit.runs import write_report

    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    a = _audit_with_lengths(_recipe(c, **_audit_files(c)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 0.7, "lr": 1e-3}) + NL)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"data": {"max_length": 8}}))
    html = write_report(run).html.read_text()
    assert "<h2>Data</h2>" not in html
    (run / "data_audit.json").write_text(json.dumps(to_dict(a)))
    html = write_report(run).html.read_text()
    assert "<h2>Data</h2>" in html and "dup rows" in html and "overlap train/validation" in html and "will be truncated" in html
    (run / "data_audit.json").write_text(json.dumps({"sst2": to_dict(a), "ner": to_dict(a)}))  # a multi-task run
    html = write_report(run).html.read_text()
    assert "task sst2" in html and "task ner" in html
    (run / "data_audit.json").write_text("{torn")
    rep = write_report(run)
    assert any("data audit is corrupted" in n for n in rep.notes) and "<h2>Data</h2>" not in rep.html.read_text()


@pytest.mark.slow
def test_training_with_unseen_labels_gives_the_head_their_classes(tiny_bert, tmp_path):
    from adapterkit.training import train

    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    val = c.file("val.csv", "text,label\nso so,maybe\nthe film was great and great,pos\nthe film was bad and bad,neg\n")
    r = _recipe(c, validation=val, allow_unseen_labels=True)
    r.training.epochs = 1
    preflight(r)
    train(r)
    out = Path(r.training.output_dir)
    assert json.loads((out / "labels.json").read_text())["labels"] == ["neg", "pos", "maybe"]
    assert "validation" in json.loads((out / "metrics.json").read_text())
