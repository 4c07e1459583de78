"""The training step alone: set-up builds a session on a tiny model, `train_step` applies one optimiser update
(after the accumulated micro-batches) to the trainable weights only."""
import pytest
import torch

from adapterkit.config import resolve_paths
from adapterkit.model import recipe_from_dict
from adapterkit.runs import RunWriter
from adapterkit.training import loop
from helpers import tiny_recipe, write_sentiment


@pytest.mark.slow
def test_one_step_is_one_optimiser_update_of_the_trainable_weights(tiny_bert, tmp_path):
    files = write_sentiment(tmp_path, n_train=16, n_val=8)
    recipe = resolve_paths(recipe_from_dict(tiny_recipe(tiny_bert, files, tmp_path / "run",
                                                        training={"gradient_accumulation": 2, "warmup_ratio": 0.0})))
    writer = RunWriter(tmp_path / "run", recipe)
    writer.check_writable()
    s, state = loop.setup(recipe, tmp_path / "run", writer, None, loop.Timings())
    model = s.accelerator.unwrap_model(s.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lr_before = s.scheduler.get_last_lr()[0]

    assert loop.train_step(s, state, "main") is False  # first of two accumulated micro-batches: no update yet
    assert state.step == 0 and state.counts["main"] == 1 and state.windows["main"][1] == 1
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())

    assert loop.train_step(s, state, "main") is True
    assert state.step == 1 and state.counts["main"] == 2 and state.seen == 16
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable  # the frozen backbone never moves
    assert any("lora_" in n for n in changed) and any("classifier" in n for n in changed)
    steps = {int(st["step"]) for st in s.optimizer.optimizer.state.values()} if hasattr(s.optimizer, "optimizer") else \
        {int(st["step"]) for st in s.optimizer.state.values()}
    assert steps == {1}  # AdamW moved once
    assert s.scheduler.get_last_lr()[0] != lr_before  # linear decay advanced with the step
    s.accelerator.end_training()
