import pytest
import yaml

from adapterkit.config import load_recipe, recipe_from_dict
from adapterkit.errors import RecipeError

BASE = {"backbone": {"path": "m"}, "data": {"train": "t.csv"}}


def test_defaults_fill_in():
    r = recipe_from_dict(BASE)
    assert r.adapter.method == "lora" and r.adapter.typed().r == 8
    assert r.training.batch_size == 32 and r.task.type == "sequence_classification"


@pytest.mark.parametrize("data,expected", [
    ({**BASE, "trainig": {}}, "trainig: unknown key"),
    ({**BASE, "training": {"lrr": 1}}, "training.lrr: unknown key"),
    ({**BASE, "training": {"batch_size": "big"}}, "training.batch_size: Input should be a valid integer"),
    ({**BASE, "training": {"batch_size": 0}}, "training.batch_size: Input should be greater than 0"),
    ({"data": {"train": "x"}}, "backbone: required key is missing"),
    ({**BASE, "adapter": {"method": "lora", "rank": 4}}, "adapter.rank: unknown key"),
    ({**BASE, "adapter": {"method": "magic"}}, "adapter: unknown adapter method 'magic'"),
    ({**BASE, "task": {"type": "nope"}}, "task: unknown task type 'nope'"),
    ({**BASE, "backbone": {"path": "m", "quantization": "int4"}}, "backbone.quantization: Input should be 'none', 'int8' or 'nf4'"),
])
def test_errors_name_the_key(data, expected):
    with pytest.raises(RecipeError) as e:
        recipe_from_dict(data)
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


def test_overrides(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(BASE))
    r = load_recipe(p, ["training.lr=3e-4", "training.early_stopping.patience=2", "adapter.r=16", "data.max_length=64"])
    assert r.training.lr == 3e-4 and r.training.early_stopping.patience == 2
    assert r.adapter.typed().r == 16 and r.data.max_length == 64
    with pytest.raises(RecipeError, match="training.nope: unknown key"):
        load_recipe(p, ["training.nope=1"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(p, ["training.lr"])


def test_bad_yaml(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("backbone: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML at line"):
        load_recipe(p)


def test_recipe_is_never_executed(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("backbone: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)


def test_shipped_recipes_validate():
    from pathlib import Path

    for p in sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml")):
        load_recipe(p)
