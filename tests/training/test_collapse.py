"""The degenerate-training guard (training/collapse.py): findings on made-up predictions, and a tiny token
classification run at an absurd learning rate that collapses to all-`O`, warned about (or stopped) in every place a
user looks, while a healthy run stays silent; `on_collapse: recover` (the default, training/recovery.py) brings such a
run back, or fails it after its last recovery, and a resume after a recovery is bit-exact."""
from __future__ import annotations

import json

import pytest
import torch

from adapterkit.heads import HEADS
from adapterkit.training import collapse
from helpers import ROOT, cli, cli_start, tiny_recipe, wait_for, write_ner, write_recipe

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
    final = train(recipe_from_dict(_ner_recipe(tiny_bert, tmp_path, "bad", lr=3.0, warmup_ratio=0.0, on_collapse="warn")))
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


def _recovering(tiny_bert, tmp_path, out, **training):
    # 96 sentences / 16 = 6 steps an epoch, 36 in all; lr 3 tags every token `O` by step 18 (evaluations every 3)
    return _ner_recipe(tiny_bert, tmp_path, out, lr=3.0, warmup_ratio=0.0, epochs=6, eval_every=3,
                       **{"on_collapse": "recover", **training})


def test_recover_is_the_default():
    from adapterkit.config.schema import TrainingConfig

    assert TrainingConfig().on_collapse == "recover"


@pytest.mark.slow
def test_recover_brings_a_collapsed_run_back(tiny_bert, tmp_path, capsys):
    from adapterkit import recipe_from_dict, train

    run = tmp_path / "rec"
    final = train(recipe_from_dict(_recovering(tiny_bert, tmp_path, "rec", collapse_lr_factor=0.01)))
    err = capsys.readouterr().err
    assert "training looks collapsed" in err and "recovering (attempt 1 of 2)" in err
    assert final["validation"]["f1"] > 0.5, final["validation"]
    (rec,) = final["recoveries"]
    assert rec["restored"] == "the start" and rec["lr_factor"] == 0.01 and rec["lr"] < 0.05
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "recovered"] == [rec["step"]]
    steps = [e for e in events if "lr" in e and e.get("event") is None]
    assert all(e["lr"] < 0.05 for e in steps if e["step"] > rec["step"])  # the rest of the schedule, lowered
    assert json.loads((run / "metrics.json").read_text())["recoveries"] == final["recoveries"]
    assert "Recoveries from collapse" in (run / "report.html").read_text()
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_recover_fails_after_the_last_attempt(tiny_bert, tmp_path):
    r = _recovering(tiny_bert, tmp_path, "fail", collapse_lr_factor=0.9, collapse_retries=1)
    res = cli("train", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 3 and "recovering (attempt 1 of 1)" in res.err and "still collapsed" in res.err, res.err
    run = tmp_path / "fail"
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    kinds = [e.get("event") for e in events]
    assert kinds.count("recovered") == 1 and "stopped" in kinds and kinds.index("recovered") < kinds.index("stopped")


@pytest.mark.slow
def test_resume_after_a_recovery_is_bit_exact(tiny_bert, tmp_path):
    import os
    import signal
    import subprocess

    from safetensors.torch import load_file

    from adapterkit.training import checkpoint

    def recipe(name):
        r = _recovering(tiny_bert, tmp_path, name, collapse_lr_factor=0.01, checkpoint_every=3, keep_checkpoints=20)
        return write_recipe(tmp_path / f"{name}.yaml", r)

    assert cli("train", recipe("ref")).code == 0
    recovered = [json.loads(x) for x in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    at = next(e["step"] for e in recovered if e.get("event") == "recovered")
    # killed after the checkpoint that follows the recovery (the next save stalls), then resumed
    proc = cli_start("train", recipe("killed"), cwd=ROOT, stdout=subprocess.DEVNULL,
                     env={"HF_HUB_OFFLINE": "1", checkpoint.SLEEP_ENV: f"{at + 6}:300"})
    wait_for(proc, lambda: (tmp_path / "killed" / "checkpoints" / f"step-{at + 3:08d}").is_dir(), "the kill point")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    res = cli("train", tmp_path / "killed.yaml", "--resume")
    assert res.code == 0, res.err
    a, b = (load_file(tmp_path / n / "adapter" / "adapter_model.safetensors") for n in ("ref", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("ref", "killed"))
    assert ma["recoveries"] == mb["recoveries"] and ma["validation"] == mb["validation"]
