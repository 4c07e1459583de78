"""Multi-task recipes go through the one training loop, so they get what single-task runs have: checkpoints and
bit-exact `--resume` after SIGKILL, the non-finite guard, trackers, early stopping, the speed switches and the
preflight checks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from adapterkit.heads import HEADS, Head, PooledClassifier, register_head
from helpers import ROOT, cli, cli_start, tiny_recipe, wait_for, write_recipe, write_sentiment
from test_multitask import write_ner

pytestmark = pytest.mark.slow


def joint_dict(model_dir, d: Path, out: Path, sampling="proportional", **training) -> dict:
    sent = write_sentiment(d, n_train=48, n_val=16)
    ner = write_ner(d)
    base = tiny_recipe(model_dir, sent, out, adapter={"dropout": 0.1})
    base.pop("task"), base.pop("data")
    base["training"].update(dict(epochs=2, batch_size=8, lr=1e-2, log_every=3, warmup_ratio=0.1), **training)
    base["tasks"] = [
        {"name": "sentiment", "task": {"type": "sequence_classification", "pooling": "mean"}, "metric": "accuracy",
         "data": {"train": str(sent["train"]), "validation": str(sent["validation"]), "max_length": 32}},
        {"name": "ner", "task": {"type": "token_classification"},
         "data": {"train": str(ner["train"]), "validation": str(ner["validation"]), "max_length": 32}, "weight": 2.0},
    ]
    base["multitask"] = {"adapter": "per_task", "sampling": sampling}
    return base


def _dir(root: Path, name: str) -> Path:
    (root / f"data-{name}").mkdir()
    return root / f"data-{name}"


def task_weights(out: Path) -> dict:
    w = {}
    for task in ("sentiment", "ner"):
        w.update({f"{task}/adapter/{k}": v for k, v in load_file(out / task / "adapter" / "adapter_model.safetensors").items()})
        w.update({f"{task}/head/{k}": v for k, v in load_file(out / task / "head.safetensors").items()})
    return w


def test_sigkill_then_resume_is_bit_exact(tiny_bert, tmp_path):
    # 6 + 6 batches an epoch, 2 epochs = 24 steps, a checkpoint every 2; proportional (random) task sampling,
    # LoRA dropout, length-grouped shuffling and evaluation at each epoch end all draw random numbers.
    training = dict(checkpoint_every=2, keep_checkpoints=2)
    ref = write_recipe(tmp_path / "ref.yaml", joint_dict(tiny_bert, tmp_path, tmp_path / "ref", **training))
    assert cli("train", ref).code == 0
    killed_out = tmp_path / "killed"
    killed = write_recipe(tmp_path / "killed.yaml", joint_dict(tiny_bert, tmp_path, killed_out, **training))
    proc = cli_start("train", killed, cwd=ROOT, stdout=subprocess.DEVNULL,
                     env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "ADAPTERKIT_TEST_SLEEP_IN_SAVE": "14:30"})
    # asleep inside the save of step 14
    wait_for(proc, lambda: (killed_out / "checkpoints" / ".tmp-step-00000014").is_dir(), "the kill point")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert sorted(p.name for p in (killed_out / "checkpoints").glob("step-*")) == ["step-00000010", "step-00000012"]
    assert not (killed_out / "metrics.json").exists()
    state = json.loads((killed_out / "checkpoints" / "step-00000012" / "state.json").read_text())
    assert set(state["streams"]) == {"sentiment", "ner"} and "task_sampler" in state

    assert cli("train", killed, "--resume").code == 0
    a, b = task_weights(killed_out), task_weights(tmp_path / "ref")
    assert a.keys() == b.keys() and len(a) > 8
    different = [k for k in a if not torch.equal(a[k].contiguous().view(torch.uint8), b[k].contiguous().view(torch.uint8))]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (killed_out, tmp_path / "ref"))
    assert ma["tasks"]["sentiment"]["validation"] == mb["tasks"]["sentiment"]["validation"]
    assert ma["train"]["batches_per_task"] == mb["train"]["batches_per_task"] and ma["train"]["steps"] == 24
    log = [json.loads(l) for l in (killed_out / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" for r in log)


NAN = {"call": None, "calls": 0}


def _nan_loss(logits, labels):
    NAN["calls"] += 1
    loss = nn.functional.cross_entropy(logits, labels)
    return loss * float("nan") if NAN["calls"] == NAN["call"] else loss


@pytest.fixture
def nan_head():
    register_head(Head(name="test_mt_nan", metrics=("accuracy", "f1"),
                       module=lambda hidden, task, labels: PooledClassifier(hidden, task, labels), loss=_nan_loss))
    yield
    HEADS.pop("test_mt_nan", None)


def test_nan_in_one_task_stops_like_a_single_task_run(tiny_bert, tmp_path, nan_head):
    from adapterkit.training import checkpoint, train
    from adapterkit.training.nonfinite import NonFiniteError
    from adapterkit.model import recipe_from_dict

    data = joint_dict(tiny_bert, tmp_path, tmp_path / "run", sampling="round_robin", checkpoint_every=2, epochs=1)
    data["tasks"][0]["task"]["type"] = "test_mt_nan"
    NAN.update(call=3, calls=0)  # round robin: the sentiment task trains steps 1, 3, 5, ...: its 3rd loss is step 5
    with pytest.raises(NonFiniteError) as e:
        train(recipe_from_dict(data))
    msg = str(e.value)
    assert "\n" not in msg and "step 5" in msg and "loss is nan" in msg and "step-00000004" in msg and "--resume" in msg
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "run")] == ["step-00000002", "step-00000004"]
    log = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1] == {"event": "stopped", "step": 5, "reason": "loss is nan"}
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    NAN.update(call=None)
    final = train(recipe_from_dict(data), resume="latest")  # fixed: continue from the last good checkpoint
    assert final["train"]["steps"] == 12


def test_trackers_early_stopping_and_switches(tiny_bert, tmp_path):
    from adapterkit.training import train
    from adapterkit.model import recipe_from_dict

    data = joint_dict(tiny_bert, tmp_path, tmp_path / "run", sampling="round_robin", epochs=6, eval_every=2, lr=1e-1,
                      trackers=["tensorboard"], early_stopping={"metric": "sentiment/accuracy", "patience": 1})
    data["backbone"]["gradient_checkpointing"] = True
    final = train(recipe_from_dict(data))
    out = tmp_path / "run"
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    stops = [r for r in log if r.get("event") == "early_stop"]
    assert stops and final["train"]["steps"] == stops[0]["step"] < 72  # 6 epochs x 12 steps, stopped early
    evals = [r for r in log if r.get("event") == "eval" and "best" in r]
    assert {r["task"] for r in evals} == {"sentiment", "ner"}
    best = max((r for r in evals if r["task"] == "sentiment"), key=lambda r: (r["accuracy"], -r["step"]))
    assert final["train"]["best_step"] == best["step"]
    events = list((out / "trackers").rglob("events.out.tfevents.*"))
    assert events, "tensorboard wrote no event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss/sentiment", "train/loss/ner", "sentiment/validation/accuracy", "ner/validation/loss"} <= tags, tags
    # Gradient checkpointing is on in the shared backbone of the per-task models.
    assert json.loads((out / "sentiment" / "run.json").read_text())["status"] == "finished"


def test_preflight_and_switch_errors_are_one_line_before_any_model_loads(tiny_bert, tmp_path, monkeypatch):
    import adapterkit.model.assemble

    def no_model_load(*a, **k):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(adapterkit.model.assemble, "load_model", no_model_load)
    cases = []
    bad_column = joint_dict(tiny_bert, _dir(tmp_path, "a"), tmp_path / "a")
    bad_column["tasks"][0]["data"]["text_column"] = "sentence"
    cases.append((bad_column, "data.text_column: column 'sentence' not in"))
    packing = joint_dict(tiny_bert, _dir(tmp_path, "b"), tmp_path / "b", packing=True)
    cases.append((packing, "training.packing: only for task.type causal_lm"))
    full = joint_dict(tiny_bert, _dir(tmp_path, "c"), tmp_path / "c")
    full["adapter"] = {"method": "full"}
    cases.append((full, "adapter.method: multi-task training needs an adapter method"))
    unseen = joint_dict(tiny_bert, _dir(tmp_path, "d"), tmp_path / "d")
    val = Path(unseen["tasks"][0]["data"]["validation"])
    val.write_text(val.read_text() + "the film was odd,maybe\n")
    cases.append((unseen, "data.validation: label(s) ['maybe']"))
    for i, (data, expected) in enumerate(cases):
        res = cli("train", write_recipe(tmp_path / f"bad{i}.yaml", data))
        assert res.code == 2
        assert len(res.err_lines) == 1 and expected in res.err_lines[0], (expected, res.err_lines)


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_joint_model_gets_the_backbone_switches(tiny_bert, tmp_path, quantization):
    """Gradient checkpointing reaches the shared backbone and the int8 dequantize path its frozen int8 layers,
    as they do for single-task models."""
    import bitsandbytes as bnb

    from adapterkit.model import recipe_from_dict
    from adapterkit.training.multitask import build_joint, task_recipe

    data = joint_dict(tiny_bert, tmp_path, tmp_path / "run")
    data["backbone"].update(gradient_checkpointing=True, quantization=quantization, int8_matmul="dequantize")
    recipe = recipe_from_dict(data)
    subs = {s.name: task_recipe(recipe, s) for s in recipe.tasks}
    joint = build_joint(recipe, subs, {"sentiment": ["neg", "pos"], "ner": ["B-LOC", "B-PER", "O"]})
    inner = joint.model.get_base_model()
    assert inner.tasks["sentiment"].backbone.encoder is inner.tasks["ner"].bert.encoder
    assert inner.tasks["ner"].is_gradient_checkpointing and inner.tasks["sentiment"].backbone.is_gradient_checkpointing
    int8 = [m for m in inner.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert bool(int8) == (quantization == "int8")
    assert all("forward" in vars(m) for m in int8)  # routed through dequantize + dense GEMM
