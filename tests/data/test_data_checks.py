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

from adapterkit.cli import main  # noqa: E402
from adapterkit.config import resolve_paths  # noqa: E402
from adapterkit.data import prepare  # noqa: E402
from adapterkit.data.audit import audit, format_audit, to_dict  # noqa: E402
from adapterkit.heads import HEADS  # noqa: E402
from adapterkit.model import recipe_from_dict  # noqa: E402
from adapterkit.model.backbone import load_tokenizer  # noqa: E402
from adapterkit.training.preflight import preflight  # noqa: E402
from conftest import one_error_line, tiny_recipe, write_ner, write_sentiment  # noqa: E402
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
]


def _conll_bytes(c: Ctx) -> list[str]:
    r = c.recipe(task={"type": "token_classification"})
    r["data"] = {"train": _bytes(c, "l1.txt", b"EU\tB-ORG\nK" + bytes([0xF6]) + b"ln\tB-LOC\n"), "max_length": 32}
    return c.train(recipe=r)


@pytest.mark.parametrize("case,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_data_is_one_line(case, build, expected, tiny_bert, tmp_path, capsys, no_model):
    line = one_error_line(build(Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)), capsys)
    for s in expected:
        assert s in line, f"{s!r} not in {line!r}"


# ---- files that read ----

def _recipe(c: Ctx, **data):
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
    a = audit(_recipe(c, **_audit_files(c)))
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


def test_audit_token_classification_and_causal_lm(tiny_bert, tiny_llama, tmp_path, no_model):
    files = write_ner(tmp_path, n_train=12, n_val=4)
    r = tiny_recipe(tiny_bert, files, tmp_path / "out", task={"type": "token_classification"})
    a = audit(resolve_paths(recipe_from_dict(r)))
    assert a.splits["train"].rows == 12 and "O" in a.splits["train"].labels and a.splits["train"].lengths["max"] > 2
    rows = [{"prompt": "Q: 2+2? A:", "completion": " 4"}] * 2 + [{"prompt": "Q: sky? A:", "completion": " blue"}]
    p = tmp_path / "lm.jsonl"
    p.write_text("".join(json.dumps(x) + NL for x in rows))
    r = tiny_recipe(tiny_llama, {"train": p, "validation": p}, tmp_path / "out2", task={"type": "causal_lm"})
    a = audit(resolve_paths(recipe_from_dict(r)))
    assert (a.splits["train"].rows, a.splits["train"].duplicate_rows, a.splits["train"].labels) == (3, 1, None)
    assert a.splits["train"].lengths["max"] > 3 and a.overlaps[0].exact == 2


def test_data_check_command(tiny_bert, tmp_path, capsys, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    r = c.recipe()
    r["data"] = _audit_files(c)
    path = c.write(r)
    capsys.readouterr()
    main(["data", "check", path])  # warnings only: returns, exit 0
    out, err = capsys.readouterr()
    assert "data audit (sequence_classification" in out and "train" in out and "overlap validation/test" in out
    err = [l for l in err.splitlines() if l.strip()]
    assert len(err) == 4 and all(l.startswith("warning: ") for l in err), err
    main(["data", "check", path, "--json", "--set", "data.max_length=64"])
    out, err = capsys.readouterr()
    d = json.loads(out)
    assert d["max_length"] == 64 and d["splits"]["train"]["truncated"] == 0 and d["splits"]["validation"]["rows"] == 3
    assert len([l for l in err.splitlines() if l.startswith("warning: ")]) == 3


def test_data_check_clean_data(tiny_bert, tmp_path, capsys, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    (tmp_path / "v").mkdir()
    files = write_sentiment(tmp_path / "v", n_train=4, n_val=2, seed=1)
    r = c.recipe()
    r["data"].update(validation=str(files["validation"]), max_length=64)
    r["data"]["train"] = c.file("uniq.csv", "text,label\nalpha beta,pos\ngamma delta,neg\n")
    capsys.readouterr()
    main(["data", "check", c.write(r)])
    out, err = capsys.readouterr()
    assert "overlap: no text shared between splits" in out and err.strip() == ""


def test_report_has_a_data_section(tiny_bert, tmp_path, no_model):
    from adapterkit.runs import write_report

    c = Ctx(tmp_path, tiny_bert, tiny_bert, lambda: None)
    a = audit(_recipe(c, **_audit_files(c)))
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
