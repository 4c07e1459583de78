"""`task.o_weight` (issue #43): the `O` tag's weight in the token loss, by default from the training split's tag
counts (a sparse-entity set weighs `O` down, CoNLL-2003's density leaves the loss as it was); the weighted loss is
the weighted cross-entropy of the logits; a bad value is one line."""
import pytest
import torch
from datasets import Dataset

from helpers import cli, tiny_recipe, write_ner, write_recipe

LABELS = ["B-PER", "I-PER", "O"]


def _split(tags_per_row):
    return Dataset.from_dict({"labels": [[LABELS.index(t) for t in row] + [-100] for row in tags_per_row]})


def test_auto_weighs_o_by_the_entity_density_and_leaves_dense_sets_alone():
    from adapterkit.config import TaskConfig
    from adapterkit.heads.token import AUTO_O_RATIO, o_weights

    task = TaskConfig(type="token_classification")
    sparse = _split([["O"] * 19 + ["B-PER"]] * 10)  # 1 entity token per 19 O tokens
    weights = o_weights(task, LABELS, sparse)
    assert weights == [1.0, 1.0, round(AUTO_O_RATIO / 19, 4)]
    dense = _split([["O"] * 4 + ["B-PER"]] * 10)  # CoNLL-2003 has 0.20 entity tokens per O token: unchanged
    assert o_weights(task, LABELS, dense) is None
    fixed = TaskConfig(type="token_classification", o_weight=0.5)
    assert o_weights(fixed, LABELS, dense) == [1.0, 1.0, 0.5]
    assert o_weights(TaskConfig(type="token_classification", o_weight=1), LABELS, sparse) is None
    assert o_weights(task, ["B-X", "I-X"], sparse) is None  # no `O` tag: nothing to weigh


def test_the_weighted_training_loss_is_the_weighted_cross_entropy_of_the_logits(tiny_bert):
    from transformers import AutoModelForTokenClassification

    from adapterkit.config import TaskConfig
    from adapterkit.training.switches import training_loss

    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(tiny_bert, num_labels=3)
    recipe = type("R", (), {"training": type("T", (), {"loss_chunk_tokens": None})(),
                            "task": TaskConfig(type="token_classification")})()
    labels = torch.tensor([[2, 0, 1, 2, -100], [2, 2, 2, 0, 2]])
    batch = {"input_ids": torch.randint(5, 40, (2, 5)), "attention_mask": torch.ones(2, 5, dtype=torch.long),
             "labels": labels}
    plain, out = training_loss(recipe, model, batch)
    same, _ = training_loss(recipe, model, batch, class_weights=[1.0, 1.0, 1.0])
    torch.testing.assert_close(same, plain)
    w = torch.tensor([1.0, 1.0, 0.25])
    weighted, _ = training_loss(recipe, model, batch, class_weights=w.tolist())
    nll = -out.logits.float().log_softmax(-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    keep = labels != -100
    expected = (nll * w[labels.clamp(min=0)])[keep].sum() / w[labels.clamp(min=0)][keep].sum()
    torch.testing.assert_close(weighted, expected)
    assert not torch.allclose(weighted, plain)


def test_a_bad_o_weight_is_one_line(tiny_bert, tmp_path):
    files = write_ner(tmp_path)
    r = tiny_recipe(tiny_bert, files, tmp_path / "run", task={"type": "token_classification", "o_weight": 2})
    res = cli("train", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 2 and len(res.err_lines) == 1 and "task: o_weight: 2.0" in res.err_lines[0], res.err
    assert "expected auto or a weight in (0, 1]" in res.err_lines[0]


@pytest.mark.slow
def test_a_sparse_set_records_its_o_weight_in_the_run(tiny_bert, tmp_path):
    import json

    from adapterkit.data.readers import write_conll

    sents = [(["the", "day", "was", "long", "and", "grey", "again", "today"], ["O"] * 8) for _ in range(40)]
    sents += [(["Anna", "came", "home", "late", "that", "night", "again", "today"], ["B-PER"] + ["O"] * 7)] * 8
    files = {}
    for split in ("train", "validation"):
        files[split] = tmp_path / f"{split}.txt"
        write_conll(files[split], sents)
    out = tmp_path / "run"
    r = tiny_recipe(tiny_bert, files, out, task={"type": "token_classification"}, training={"epochs": 1})
    res = cli("train", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 0, res.err
    weights = json.loads((out / "run.json").read_text())["class_weights"]["main"]
    assert weights == {"B-PER": 1.0, "O": round(5 * 8 / (40 * 8 + 8 * 7), 4)}
