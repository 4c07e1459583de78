from adapterkit.adapters import method_settings
import pytest
import yaml

from adapterkit.model import load_recipe, recipe_from_dict
from adapterkit.errors import RecipeError

BASE = {"backbone": {"path": "m"}, "data": {"train": "t.csv"}}


def test_defaults_fill_in():
    r = recipe_from_dict(BASE)
    assert r.adapter.method == "lora" and method_settings(r.adapter).r == 8
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
    assert method_settings(r.adapter).r == 16 and r.data.max_length == 64
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

    for p in sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml")):
        load_recipe(p)


def test_schema_checks_structure_alone_and_the_loader_imports_plugins_first(tmp_path, monkeypatch):
    """adapterkit.config validates structure without any registry (and runs no plugin); adapterkit.recipe_from_dict
    imports the plugin a recipe names before it looks the head up, so a plugin head is found."""
    import sys

    from adapterkit import config
    from adapterkit.errors import RecipeError
    from adapterkit.model import recipe_from_dict

    (tmp_path / "plugin_probe_head.py").write_text(
        "from torch import nn\n"
        "from adapterkit.heads import Head, PooledClassifier, register_head\n"
        "register_head(Head(name='probe_head', module=lambda h, t, l: PooledClassifier(h, t, l),\n"
        "                   loss=lambda a, b: nn.functional.cross_entropy(a, b)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = {"backbone": {"path": "x"}, "adapter": {"method": "lora", "r": 4}, "task": {"plugin": "plugin_probe_head", "type": "probe_head"}}
    r = config.recipe_from_dict(data)  # structure only: no registry is consulted, the plugin is not imported
    assert r.task.type == "probe_head" and "plugin_probe_head" not in sys.modules
    assert config.recipe_from_dict({**data, "adapter": {"method": "nonsense"}}).adapter.method == "nonsense"
    r = recipe_from_dict(data)
    assert "plugin_probe_head" in sys.modules and r.task.type == "probe_head"
    with pytest.raises(RecipeError, match=r"recipe: adapter: unknown adapter method 'nonsense'"):
        recipe_from_dict({**data, "adapter": {"method": "nonsense"}})
    with pytest.raises(RecipeError, match=r"task.plugin: no module named 'no_such_plugin_module'"):
        recipe_from_dict({**data, "task": {"plugin": "no_such_plugin_module", "type": "probe_head"}})
    from adapterkit.heads import HEADS

    HEADS.pop("probe_head", None)
    sys.modules.pop("plugin_probe_head", None)
