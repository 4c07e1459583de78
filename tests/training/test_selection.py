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
