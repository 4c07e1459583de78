"""task.train_pooler (issue #23): BERT's pretrained pooler trains fully with the head (`full`, the default) or stays
frozen in the backbone where the adapter reaches it (`adapter`, as PEFT's SEQ_CLS with all-linear targets)."""
import pytest
from peft.tuners.lora import LoraLayer

from adapterkit.config import resolve_paths
from adapterkit.model import build, recipe_from_dict
from helpers import tiny_recipe


@pytest.mark.parametrize("mode", ["full", "adapter"])
def test_the_pooler_is_head_or_adapted(mode, tiny_bert, tmp_path):
    files = {"train": tmp_path / "t.csv", "validation": tmp_path / "v.csv"}
    r = tiny_recipe(tiny_bert, files, tmp_path / "run", task={"train_pooler": mode})
    model, head_modules = build(resolve_paths(recipe_from_dict(r)), ["neg", "pos"])
    pooler = model.get_base_model().bert.pooler.dense
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and ".pooler." in n}
    if mode == "full":
        assert "bert.pooler" in head_modules and not isinstance(pooler, LoraLayer)
        assert any(n.endswith("pooler.dense.weight") for n in trainable)
    else:
        assert "bert.pooler" not in head_modules and isinstance(pooler, LoraLayer)
        assert trainable and all("lora_" in n for n in trainable)   # the pretrained weights stay frozen


def test_a_bad_train_pooler_names_the_key(tiny_bert, tmp_path):
    from adapterkit.errors import RecipeError

    files = {"train": tmp_path / "t.csv", "validation": tmp_path / "v.csv"}
    with pytest.raises(RecipeError, match="task.train_pooler"):
        recipe_from_dict(tiny_recipe(tiny_bert, files, tmp_path / "run", task={"train_pooler": "yes"}))
