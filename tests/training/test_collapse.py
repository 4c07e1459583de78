"""The degenerate-training guard (training/collapse.py): findings on made-up predictions, and a tiny token
classification run at an absurd learning rate that collapses to all-`O`, warned about (or stopped) in every place a
user looks, while a healthy run stays silent."""
from __future__ import annotations

import json

import pytest
import torch

from adapterkit.heads import HEADS
from adapterkit.training import collapse
from helpers import cli, tiny_recipe, write_ner, write_recipe

CLS, TOK = HEADS["sequence_classification"], HEADS["token_classification"]


def test_one_class_for_every_example():
    refs = torch.tensor([0, 1, 1, 0, 1])
    found = collapse.findings(CLS, torch.ones(5, dtype=torch.long), refs, {"accuracy": 0.6}, ["neg", "pos"])
    assert found == ["the model predicts 'pos' for every validation example (the gold has 2 classes)"]
    assert collapse.findings(CLS, refs.clone(), refs, {"accuracy": 1.0}, ["neg", "pos"]) == []


def test_accuracy_at_the_majority_rate():
    refs = torch.tensor([1, 1, 1, 0])
    preds = torch.tensor([1, 1, 0, 1])  # two classes predicted, but 0.5 <= 0.75 (always 'pos')
    found = collapse.findings(CLS, preds, refs, {"accuracy": 0.5}, ["neg", "pos"])
    assert found and "commonest class (0.7500)" in found[0]


def test_all_o_tokens_and_zero_entity_f1():
    refs = torch.tensor([[3, 1, 3, -100], [0, 2, 3, -100]])
    preds = torch.full_like(refs, 3)
    found = collapse.findings(TOK, preds, refs, {"f1": 0.0}, ["B-LOC", "B-PER", "I-LOC", "O"])
    assert found[0].startswith("the model predicts 'O' for every validation token") and "entity F1 is 0" in found[1]
    ok = refs.clone()
    assert collapse.findings(TOK, ok, refs, {"f1": 1.0}, ["B-LOC", "B-PER", "I-LOC", "O"]) == []
    # no gold entities at all: nothing to say
    only_o = torch.tensor([[3, 3, -100]])
    assert collapse.findings(TOK, only_o, only_o, {"f1": 0.0}, ["B-LOC", "B-PER", "I-LOC", "O"]) == []


def _ner_recipe(tiny_bert, tmp_path, out, **training):
    files = write_ner(tmp_path)
    r = tiny_recipe(tiny_bert, files, tmp_path / out, task={"type": "token_classification"},
                    training={"epochs": 3, "batch_size": 16, "mixed_precision": "auto", **training})
    return r


@pytest.mark.slow
def test_absurd_learning_rate_warns_everywhere(tiny_bert, tmp_path, capsys):
    from adapterkit import recipe_from_dict, train

    run = tmp_path / "bad"
    final = train(recipe_from_dict(_ner_recipe(tiny_bert, tmp_path, "bad", lr=3.0, warmup_ratio=0.0)))
    err = capsys.readouterr().err
    assert "training looks collapsed" in err and "lower training.lr" in err and "on_collapse: stop" in err
    assert final["validation"]["f1"] == 0.0 and final["warnings"]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["warnings"] == final["warnings"]
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "warning" and e.get("kind") == "collapse" for e in events)
    assert "Warnings" in (run / "report.html").read_text()
    assert json.loads((run / "run.json").read_text())["status"] == "finished"  # warn: the run still finishes


@pytest.mark.slow
def test_on_collapse_stop_fails_the_run(tiny_bert, tmp_path):
    r = _ner_recipe(tiny_bert, tmp_path, "stop", lr=3.0, warmup_ratio=0.0, on_collapse="stop")
    res = cli("train", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 3 and "training looks collapsed" in res.err
    assert json.loads((tmp_path / "stop" / "run.json").read_text())["status"] == "failed"
    assert not (tmp_path / "stop" / "metrics.json").exists()


@pytest.mark.slow
def test_a_healthy_run_is_silent(tiny_bert, tmp_path, capsys):
    from adapterkit import recipe_from_dict, train

    final = train(recipe_from_dict(_ner_recipe(tiny_bert, tmp_path, "good", lr=1e-2, epochs=4, eval_every=3)))
    assert final["validation"]["f1"] > 0.5
    assert "warnings" not in final and "collapsed" not in capsys.readouterr().err
