"""An injected NaN loss: `on_nonfinite: stop` names the step and leaves a loadable last checkpoint (training
continues from it with --resume); `skip` drops that optimizer step and finishes with finite weights."""
import json

import pytest
import torch
from torch import nn

from adapterkit.training import checkpoint
from adapterkit.heads import HEADS, Head, PooledClassifier, register_head
from adapterkit.training.nonfinite import NonFiniteError
from adapterkit.training import train
from helpers import as_recipe, tiny_recipe

pytestmark = pytest.mark.slow  # every test here trains a model

NAN_AT = {"call": None, "calls": 0}


def _loss(logits, labels):
    NAN_AT["calls"] += 1
    loss = nn.functional.cross_entropy(logits, labels)
    return loss * float("nan") if NAN_AT["calls"] == NAN_AT["call"] else loss


@pytest.fixture(autouse=True)
def nan_head():
    register_head(Head(name="test_nan_probe", metrics=("accuracy", "f1"),
                       module=lambda hidden, task, labels: PooledClassifier(hidden, task, labels), loss=_loss))
    yield
    HEADS.pop("test_nan_probe", None)


def _recipe(tiny_bert, files, out, mode):
    """The NaN-probe head, one epoch, a checkpoint every 2 steps, `training.on_nonfinite: mode`."""
    # 64 examples / batch 8: epoch 1 is steps 1-8; no evaluation before step 8, so loss call k is training step k.
    return as_recipe(tiny_recipe(tiny_bert, files, out, task={"type": "test_nan_probe", "pooling": "mean"},
                                 training={"epochs": 1, "checkpoint_every": 2, "on_nonfinite": mode, "log_every": 1}))


def test_nan_stops_with_step_and_last_checkpoint_loads(tiny_bert, sentiment_files, tmp_path):
    NAN_AT.update(call=5, calls=0)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteError) as e:
        train(_recipe(tiny_bert, sentiment_files, run, "stop"))
    msg = str(e.value)
    assert "\n" not in msg and "step 5" in msg and "loss is nan" in msg
    assert str(run / "checkpoints" / "step-00000004") in msg and "--resume" in msg
    found = checkpoint.list_checkpoints(run)
    assert [p.name for p in found] == ["step-00000002", "step-00000004"]
    state = checkpoint.verify(found[-1])
    assert state["position"]["step"] == 4
    from safetensors.torch import load_file

    weights = load_file(found[-1] / "trainable.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    events = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert events[-1] == {"event": "stopped", "step": 5, "reason": "loss is nan"}
    assert json.loads((run / "run.json").read_text())["status"] == "failed"  # not marked finished

    NAN_AT.update(call=None)  # the cause is fixed: continue from the last good checkpoint
    final = train(_recipe(tiny_bert, sentiment_files, run, "stop"), resume="latest")
    assert final["train"]["steps"] == 8
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def test_nan_skip_drops_the_step_and_finishes(tiny_bert, sentiment_files, tmp_path):
    NAN_AT.update(call=3, calls=0)
    run = tmp_path / "run"
    final = train(_recipe(tiny_bert, sentiment_files, run, "skip"))
    assert final["train"]["steps"] == 8
    events = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "skipped_step"] == [3]
    assert all(e["loss"] == e["loss"] for e in events if "loss" in e and e.get("event") is None)  # logged losses stay finite
    from safetensors.torch import load_file

    head = load_file(run / "head.safetensors")
    assert all(torch.isfinite(v).all() for v in head.values())
    assert final["validation"]["loss"] == final["validation"]["loss"]
