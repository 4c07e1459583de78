"""Task heads beyond sequence classification: CoNLL reading, sub-word label alignment, token classification with
entity-level metrics, regression with target normalization, multi-label, and a custom head from a recipe plugin."""
import json
import random
import sys
from pathlib import Path

import pytest
import torch
import yaml

from adapterkit.config import resolve_paths
from adapterkit.model import recipe_from_dict
from adapterkit.errors import DataError, RecipeError
from adapterkit.inference import eval_run, predict
from adapterkit.model import load_run
from adapterkit.data.readers import read_conll, write_conll
from adapterkit.data.words import IGNORE, align_labels
from adapterkit.training import train
from helpers import ROOT, as_recipe, cli, minilm_dir, shared_data, tiny_recipe, write_ner, write_recipe

# ---- CoNLL reader ------------------------------------------------------------------------------------------


def test_conll_reader_spaces_docstart_and_tag_column(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n\n")
    ds = read_conll(p)
    assert ds["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert ds["tags"] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    cfg = recipe_from_dict({"backbone": {"path": "x"}, "data": {"conll_tag_column": 2}}).data
    assert read_conll(p, "data.train", cfg)["tags"][1] == ["B-NP", "I-NP"]


def test_conll_reader_tabs_keep_spaces_in_tokens(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("New York\tB-LOC\nis\tO\n")
    ds = read_conll(p)
    assert ds["tokens"] == [["New York", "is"]] and ds["tags"] == [["B-LOC", "O"]]
    cfg = recipe_from_dict({"backbone": {"path": "x"}, "data": {"conll_separator": "|"}}).data
    (tmp_path / "b.txt").write_text("New York|B-LOC\n")
    assert read_conll(tmp_path / "b.txt", "data.train", cfg)["tokens"] == [["New York"]]


@pytest.mark.parametrize("text, match", [
    ("EU NNP B-ORG\nrejects O\n", r"line 2 has 2 columns, expected 3 \(ragged"),
    ("EU\nrejects\n", "line 1 has one column"),
    ("\n\n-DOCSTART- -X- O\n\n", "no sentences"),
])
def test_conll_reader_bad_files(tmp_path, text, match):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=match):
        read_conll(p, "data.train")


def test_conll_reader_fixed_column_count(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("EU B-ORG\nrejects O\n")
    cfg = recipe_from_dict({"backbone": {"path": "x"}, "data": {"conll_columns": 3}}).data
    with pytest.raises(DataError, match="line 1 has 2 columns, expected 3"):
        read_conll(p, "data.train", cfg)


# ---- alignment ----------------------------------------------------------------------------------------------


def test_align_first_and_all_subwords():
    word_ids = [None, 0, 0, 1, 2, 2, 2, None]
    tags = [3, 0, 5]        # B-PER, O, B-LOC
    cont = [4, 0, 6]        # I-PER, O, I-LOC
    assert align_labels(word_ids, tags, "first", cont) == [IGNORE, 3, IGNORE, 0, 5, IGNORE, IGNORE, IGNORE]
    assert align_labels(word_ids, tags, "all", cont) == [IGNORE, 3, 4, 0, 5, 6, 6, IGNORE]


def test_entity_metrics_skip_ignored_positions_and_honour_strict_mode():
    from adapterkit.heads.token import token_metrics

    labels = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    B_PER, I_PER, B_LOC, I_LOC, O = 1, 3, 0, 2, 4
    refs = torch.tensor([[IGNORE, B_PER, I_PER, O, IGNORE], [IGNORE, B_LOC, O, IGNORE, IGNORE]])
    # second sentence predicts I-LOC where B-LOC is expected; position 3 of row 1 is padding and must not count
    preds = torch.tensor([[O, B_PER, I_PER, O, B_LOC], [O, I_LOC, O, B_PER, B_PER]])
    lenient = token_metrics(preds, refs, labels, recipe_from_dict({"backbone": {"path": "x"}, "task": {"type": "token_classification"}}).task)
    assert lenient["f1"] == 1.0 and lenient["per_type"]["LOC"]["number"] == 1
    strict = token_metrics(preds, refs, labels, recipe_from_dict(
        {"backbone": {"path": "x"}, "task": {"type": "token_classification", "entity_scheme": "IOB2"}}).task)
    assert strict["per_type"]["LOC"]["f1"] == 0.0 and strict["per_type"]["PER"]["f1"] == 1.0 and strict["f1"] == pytest.approx(2 / 3, abs=1e-5)  # P 1/1, R 1/2


def test_tokenize_words_aligns_to_the_real_tokenizer(tiny_bert, tmp_path):
    from transformers import AutoTokenizer

    from adapterkit import data as data_mod
    from adapterkit.heads import HEADS

    write_conll(tmp_path / "train.txt", [(["Blackburnshire", "won"], ["B-LOC", "O"]), (["Peter", "Blackburnshire"], ["B-PER", "I-PER"])])
    files = {"train": tmp_path / "train.txt", "validation": tmp_path / "train.txt"}
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    n_sub = len(tok.tokenize("Blackburnshire"))
    assert n_sub > 1  # the test needs a word split into several pieces
    for mode, expect_cont in (("first", IGNORE), ("all", None)):
        r = as_recipe(tiny_recipe(tiny_bert, files, tmp_path / "r", task={"type": "token_classification"},
                                  data={"subword_labels": mode}))
        _prepared = data_mod.prepare(r, tok, HEADS["token_classification"])
        splits, labels = _prepared.splits, _prepared.labels
        assert labels == ["B-LOC", "B-PER", "I-PER", "O"]
        row = splits["train"][0]["labels"]
        assert row[0] == IGNORE and row[1] == labels.index("B-LOC") and row[-1] == IGNORE
        cont = row[2:1 + n_sub]
        # later pieces of "Blackburnshire" are ignored, or carry I-LOC -- absent from the labels, so B-LOC stays
        assert cont == [IGNORE] * (n_sub - 1) if mode == "first" else cont == [labels.index("B-LOC")] * (n_sub - 1)
        second = splits["train"][1]["labels"]
        if mode == "all":
            assert second[3:2 + n_sub] == [labels.index("I-PER")] * (n_sub - 1)
        # evaluation splits always score first sub-tokens only
        assert splits["validation"][0]["labels"][2:1 + n_sub] == [IGNORE] * (n_sub - 1)


# ---- token classification -------------------------------------------------------------------------------------



@pytest.mark.slow
def test_token_classification_trains_reports_entities_and_reloads(tiny_bert, tmp_path):
    files = write_ner(tmp_path)
    run = tmp_path / "ner"
    r = as_recipe(tiny_recipe(tiny_bert, files, run, task={"type": "token_classification"},
                              training={"epochs": 5, "lr": 1e-2, "batch_size": 16}, data={"test": str(files["validation"])}))
    final = train(r)
    val = final["validation"]
    assert val["f1"] > 0.8, val["report"]
    assert set(val["per_type"]) == {"LOC", "PER"} and val["per_type"]["PER"]["number"] > 0
    assert "micro avg" in val["report"] and "PER" in val["report"]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["per_type"]["LOC"]["f1"] == pytest.approx(val["per_type"]["LOC"]["f1"])
    assert json.loads((run / "labels.json").read_text())["labels"] == ["B-LOC", "B-PER", "I-LOC", "O"]
    again = eval_run(run, "validation")
    assert again["f1"] == pytest.approx(val["f1"], abs=1e-6) and again["loss"] == pytest.approx(val["loss"], rel=1e-4)
    model = load_run(run).model
    assert type(model.get_base_model()).__name__ == "BertForTokenClassification"
    rows = predict(run, ["john went to paris city", "the mary"])
    assert rows[0]["entities"] == [{"type": "PER", "text": "john", "start": 0, "end": 1},
                                   {"type": "LOC", "text": "paris city", "start": 3, "end": 5}]
    assert [t for _, t in rows[1]["tags"]] == ["O", "B-PER"]
    res = cli("eval", run, "--split", "test")
    assert res.code == 0, res.err
    out = res.out
    shown = json.loads(out[:out.index("\nentity-level report")])
    assert "report" not in shown and shown["f1"] == pytest.approx(saved["test"]["f1"], abs=1e-6)
    assert "micro avg" in out.split("entity-level report")[1] and "LOC" in out.split("entity-level report")[1]


def test_unknown_tag_in_validation_names_the_file(tiny_bert, tmp_path):
    files = write_ner(tmp_path, n_train=8, n_val=4)
    write_conll(files["validation"], [(["john", "went"], ["B-PER", "B-ORG"])])
    r = as_recipe(tiny_recipe(tiny_bert, files, tmp_path / "r", task={"type": "token_classification"}))
    with pytest.raises(DataError, match=r"tag 'B-ORG' in sentence 1 of .*validation.txt is not in the label map"):
        train(r)
    from adapterkit.training.preflight import check_labels
    from adapterkit.heads import HEADS

    with pytest.raises(RecipeError, match=r"data.validation: label\(s\) \['B-ORG'\] in .*validation.txt"):
        check_labels(r, HEADS["token_classification"])  # the CLI finds it before loading a model


def test_token_data_from_json_lines_and_mismatched_tags(tiny_bert, tmp_path):
    rows = [{"tokens": ["john", "went"], "tags": ["B-PER", "O"]}, {"tokens": ["mary"], "tags": ["B-PER", "O"]}]
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in rows))
    r = as_recipe(tiny_recipe(tiny_bert, {"train": p, "validation": p}, tmp_path / "r", task={"type": "token_classification"}))
    with pytest.raises(DataError, match=r"row 2 of .*t.jsonl has 1 words but 2 tags"):
        train(r)


# ---- regression -------------------------------------------------------------------------------------------------

POS, NEG = ["great", "lovely", "excellent", "superb"], ["awful", "bad", "poor", "broken"]


def write_scores(dir_: Path, n_train=96, n_val=32, seed=0) -> dict:
    """score = 10 * (number of positive words) + 50: far from zero mean/unit scale, so normalization matters."""
    rnd = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        lines = ["text,score"]
        for _ in range(n):
            k = rnd.randint(0, 3)
            words = [rnd.choice(POS) for _ in range(k)] + [rnd.choice(NEG) for _ in range(3 - k)]
            rnd.shuffle(words)
            lines.append(f"the film was {' and '.join(words)},{10 * k + 50}")
        (dir_ / f"{split}.csv").write_text("\n".join(lines) + "\n")
        out[split] = dir_ / f"{split}.csv"
    return out


@pytest.mark.slow
def test_regression_normalizes_targets_learns_and_predicts_in_original_units(tiny_bert, tmp_path):
    files = write_scores(tmp_path)
    run = tmp_path / "reg"
    r = as_recipe(tiny_recipe(tiny_bert, files, run, task={"type": "regression", "normalize_targets": True, "pooling": "mean"},
                              data={"label_column": "score"}, training={"epochs": 6, "lr": 1e-2, "batch_size": 16}))
    final = train(r)["validation"]
    ys = [float(l.split(",")[-1]) for l in files["validation"].read_text().splitlines()[1:]]
    var = sum((y - sum(ys) / len(ys)) ** 2 for y in ys) / len(ys)
    assert final["mse"] < 0.5 * var, final  # metrics are in the original units and beat predicting the mean
    assert final["r2"] > 0.5
    saved = yaml.safe_load((run / "recipe.yaml").read_text())["task"]
    assert 60 < saved["target_mean"] < 70 and 5 < saved["target_std"] < 15
    assert eval_run(run)["mse"] == pytest.approx(final["mse"], rel=1e-4)
    rows = predict(run, ["the film was great and lovely and superb", "the film was awful and bad and poor"])
    assert rows[0]["value"] > rows[1]["value"] and 30 < rows[1]["value"] < 90


def test_regression_rejects_non_numbers_and_foreign_keys(tiny_bert, tmp_path):
    files = write_scores(tmp_path, n_train=8, n_val=4)
    files["validation"].write_text("text,score\nfine,lots\n")
    r = as_recipe(tiny_recipe(tiny_bert, files, tmp_path / "r", task={"type": "regression"}, data={"label_column": "score"}))
    with pytest.raises(DataError, match=r"data\.validation: 'score' at .*validation\.csv line 2 \('lots'\) is not a finite number"):
        train(r)
    with pytest.raises(RecipeError, match="threshold: unknown key for this task type"):
        recipe_from_dict({"backbone": {"path": "x"}, "task": {"type": "regression", "threshold": 0.3}})


# ---- multi-label --------------------------------------------------------------------------------------------------

TOPICS = {"sport": ["goal", "match", "team"], "money": ["bank", "price", "stocks"], "food": ["pizza", "bread", "soup"]}


def write_topics(dir_: Path, n_train=128, n_val=48, seed=0) -> dict:
    rnd = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        with open(dir_ / f"{split}.jsonl", "w") as f:
            for _ in range(n):
                on = [t for t in TOPICS if rnd.random() < 0.45]
                words = [rnd.choice(TOPICS[t]) for t in on] + ["news"] * rnd.randint(1, 3)
                rnd.shuffle(words)
                f.write(json.dumps({"text": "the " + " ".join(words), "label": on}) + "\n")
        out[split] = dir_ / f"{split}.jsonl"
    return out


@pytest.mark.slow
def test_multi_label_trains_with_threshold_and_per_label_f1(tiny_bert, tmp_path):
    files = write_topics(tmp_path)
    run = tmp_path / "ml"
    r = as_recipe(tiny_recipe(tiny_bert, files, run, task={"type": "multi_label", "threshold": 0.4, "pooling": "mean"},
                              training={"epochs": 6, "lr": 1e-2, "batch_size": 16}))
    final = train(r)["validation"]
    assert set(final["per_label_f1"]) == {"food", "money", "sport"}
    assert final["micro_f1"] > 0.8 and final["macro_f1"] > 0.7, final
    assert min(final["per_label_f1"].values()) <= final["macro_f1"] <= max(final["per_label_f1"].values())
    assert eval_run(run)["micro_f1"] == pytest.approx(final["micro_f1"])
    rows = predict(run, ["the news pizza news", "the goal news bank"])
    for row in rows:  # decoded with the recipe's threshold, not 0.5
        assert row["labels"] == sorted(l for l, s in row["scores"].items() if s >= 0.4)
    assert max(rows[0]["scores"], key=rows[0]["scores"].get) == "food"
    assert "food" not in rows[1]["labels"] and rows[1]["scores"]["money"] > rows[1]["scores"]["food"]


def test_multi_label_label_outside_the_map(tiny_bert, tmp_path):
    files = write_topics(tmp_path, n_train=16, n_val=4)
    files["validation"].write_text(json.dumps({"text": "the weather", "label": ["weather"]}) + "\n")
    r = as_recipe(tiny_recipe(tiny_bert, files, tmp_path / "r", task={"type": "multi_label"}))
    with pytest.raises(DataError, match=r"label 'weather' in .*validation.jsonl is not in the label map"):
        train(r)
    with pytest.raises(RecipeError, match="threshold"):
        recipe_from_dict({"backbone": {"path": "x"}, "task": {"type": "multi_label", "threshold": 1.5}})


# ---- custom head from a recipe plugin -------------------------------------------------------------------------------


@pytest.mark.slow
def test_custom_head_example_trains_from_a_recipe_file(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the plugin module is examples/custom_head.py, found like `python -m` would
    run = tmp_path / "mlp"
    rec = tiny_recipe(tiny_bert, sentiment_files, run, task={"plugin": "examples.custom_head", "type": "mlp_classifier", "mlp_hidden": 32},
                      training={"epochs": 8, "lr": 1e-2})
    res = cli("train", write_recipe(tmp_path / "recipe.yaml", rec))
    assert res.code == 0, res.err  # a user error would exit 2 here
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] >= 0.9
    model = load_run(run).model
    assert [m.out_features for m in model.get_base_model().head.mlp if isinstance(m, torch.nn.Linear)] == [32, 2]
    assert eval_run(run)["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])


def test_bad_plugin_names_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match="task.plugin: no module named 'nope.heads'"):
        recipe_from_dict({"backbone": {"path": "x"}, "task": {"plugin": "nope.heads", "type": "x"}})
    (tmp_path / "broken_heads.py").write_text("raise ValueError('head table is missing')\n")
    with pytest.raises(RecipeError, match="task.plugin: importing 'broken_heads' failed: ValueError: head table is missing"):
        recipe_from_dict({"backbone": {"path": "x"}, "task": {"plugin": "broken_heads", "type": "x"}})
    with pytest.raises(RecipeError, match="is not a Python module name"):
        recipe_from_dict({"backbone": {"path": "x"}, "task": {"plugin": "os; rm -rf /", "type": "x"}})


# ---- real CoNLL-2003 files and the shipped recipes (no training) ---------------------------------------------------


def test_real_conll2003_and_recipes_pass_preflight(tmp_path, monkeypatch):
    from adapterkit.model import load_recipe
    from adapterkit.training.preflight import preflight

    src = shared_data("conll2003")
    minilm_dir()  # skips when the packaged model is absent
    ds = read_conll(src / "validation.txt")
    assert len(ds) == 3250 and {t for s in ds["tags"] for t in s} == {"O", *(f"{p}-{e}" for p in "BI" for e in ("PER", "ORG", "LOC", "MISC"))}
    monkeypatch.chdir(ROOT)
    r = resolve_paths(load_recipe("recipes/conll2003-lora-int8.yaml", [f"training.output_dir={tmp_path / 'ner'}"]))
    assert (r.data.text_column, r.data.label_column) == ("tokens", "tags")
    preflight(r)
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import conll_derived
    finally:
        sys.path.remove(str(ROOT / "examples"))
    conll_derived.main(["--src", str(src), "--out", str(tmp_path / "derived")])
    first = json.loads((tmp_path / "derived" / "train.jsonl").read_text().splitlines()[0])
    assert first == {"text": "EU rejects German call to boycott British lamb .", "entity_types": ["MISC", "ORG"], "entities": 3}
    for name in ("conll2003-entity-types-multilabel", "conll2003-entity-count-regression"):
        sets = [f"data.{s}={tmp_path / 'derived' / (s + '.jsonl')}" for s in ("train", "validation", "test")]
        preflight(resolve_paths(load_recipe(f"recipes/{name}.yaml", sets + [f"training.output_dir={tmp_path / name}"])))
