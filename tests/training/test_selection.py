"""Honest headline numbers: metrics.json `selection` names the weights scored and heads the run with the held-out
test split when there is one (a split that chose the checkpoint reports an optimistic number)."""
from __future__ import annotations

import json

import pytest

from adapterkit.training.loop import _selection
from helpers import cli, tiny_recipe, write_recipe


def test_selection_names_weights_and_prefers_the_held_out_split():
    both = {"validation": {"accuracy": 0.9}, "test": {"accuracy": 0.8}}
    s = _selection(both, "accuracy", best_step=40, step=100, selected=True)
    assert s["weights"] == "best step 40" and s["chosen_on"] == "validation"
    assert s["headline"] == {"split": "test", "metric": "accuracy", "value": 0.8}
    s = _selection({"validation": {"accuracy": 0.9}}, "accuracy", best_step=40, step=100, selected=True)
    assert s["headline"]["split"] == "validation" and "optimistic" in s["headline"]["note"]
    s = _selection({"validation": {"accuracy": 0.9}}, "accuracy", best_step=100, step=100, selected=True)
    assert s["weights"] == "final (step 100)" and s["chosen_on"] is None and "note" not in s["headline"]
    assert "headline" not in _selection({}, "accuracy", None, 10, False)
    s = _selection({"test": {"loss": 1.6, "bleu": 40.3, "chrf": 58.9}}, "bleu", 40, 100, True, ("bleu", "chrf"))
    assert s["headline"] == {"split": "test", "metric": "bleu", "value": 40.3, "also": {"chrf": 58.9}}


def test_generation_metrics_select_unless_the_recipe_says_otherwise(tiny_llama, tmp_path):
    from adapterkit.model import recipe_from_dict

    files = {"train": tmp_path / "t.jsonl", "validation": tmp_path / "t.jsonl"}
    r = tiny_recipe(tiny_llama, files, tmp_path / "run", task={"type": "causal_lm", "generation_metrics": ["chrf", "bleu"]})
    assert recipe_from_dict(r).training.early_stopping.metric == "chrf"
    assert recipe_from_dict(r, ["training.early_stopping.metric=loss"]).training.early_stopping.metric == "loss"
    r["task"] = {"type": "causal_lm"}
    assert recipe_from_dict(r).training.early_stopping.metric == "loss"


@pytest.mark.slow
def test_a_run_reports_its_headline(tiny_bert, sentiment_files, tmp_path):
    r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run", data={"test": str(sentiment_files["validation"])},
                    training={"epochs": 1, "eval_every": 2})
    res = cli("train", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 0, res.err
    out = res.out
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    h = saved["selection"]["headline"]
    assert h["split"] == "test" and h["value"] == saved["test"][h["metric"]]
    assert f"headline: test {h['metric']} {h['value']} with the {saved['selection']['weights']} weights" in out
    assert "weights scored" in (tmp_path / "run" / "report.html").read_text()
    import csv

    train = [r["label"] for r in csv.DictReader(open(sentiment_files["train"]))]
    test = [r["label"] for r in csv.DictReader(open(sentiment_files["validation"]))]
    common = max(sorted(set(train)), key=train.count)  # ties: the first label index, as the baseline picks
    b = saved["selection"]["baseline"]
    assert b == {"answer": common, "split": "test", "accuracy": round(test.count(common) / len(test), 6)}
    assert f"baseline: always answering {common!r} (the commonest training label): test accuracy {b['accuracy']}" in out
    kept = [json.loads(x) for x in (tmp_path / "run" / "predictions" / "test.jsonl").read_text().splitlines()]
    assert [k["row"] for k in kept] == list(range(1, len(test) + 1)) and [k["label"] for k in kept] == test
    assert sum(k["label"] == k["prediction"] for k in kept) / len(kept) == pytest.approx(saved["test"]["accuracy"])


@pytest.mark.slow
def test_token_classification_keeps_its_test_predictions_per_word(tiny_bert, tmp_path):
    from helpers import write_ner

    from adapterkit.data.readers import read_file

    files = write_ner(tmp_path, n_train=48, n_val=16)
    r = tiny_recipe(tiny_bert, files, tmp_path / "run", task={"type": "token_classification"},
                    data={"test": str(files["validation"])}, training={"epochs": 2, "lr": 1e-2})
    assert cli("train", write_recipe(tmp_path / "r.yaml", r)).code == 0
    kept = [json.loads(x) for x in (tmp_path / "run" / "predictions" / "test.jsonl").read_text().splitlines()]
    gold = read_file(str(files["validation"]), "conll")
    assert [k["tags"] for k in kept] == [list(t) for t in gold["tags"]]
    assert all(len(k["predicted"]) == len(k["tags"]) for k in kept) and kept[0]["text"]


@pytest.mark.slow
def test_the_final_evaluation_reuses_the_scores_of_the_weights_it_ends_with(tiny_bert, sentiment_files, tmp_path,
                                                                              monkeypatch):
    """Validation is scored once per evaluation: the final results reuse the evaluation of the weights the run
    ends with (the best step's, or the last step's), not a second pass over the same weights."""
    import adapterkit.training.loop as loop
    from adapterkit.model import recipe_from_dict

    calls = []
    real = loop.evaluate_split

    def counting(s, monitor, name, loader, split):
        calls.append(split)
        return real(s, monitor, name, loader, split)

    monkeypatch.setattr(loop, "evaluate_split", counting)
    r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "run", data={"test": str(sentiment_files["validation"])},
                    training={"epochs": 2, "eval_every": 3, "on_collapse": "warn"})
    final = loop.train(recipe_from_dict(r))
    evals = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"best"' in x]
    assert calls.count("validation") == len(evals) and calls.count("test") == 1
    best = next(e for e in evals if e["step"] == final["train"]["best_step"])
    assert final["validation"]["accuracy"] == best["accuracy"] and final["validation"]["loss"] == best["loss"]
