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


# ---- issue #36: YAML 1.2 scalars, bounded aliases, one key at a time through --set ----

@pytest.mark.parametrize("text,expected", [
    ("1:30", "1:30"),        # YAML 1.1: the sexagesimal 90
    ("010", 10),             # YAML 1.1: octal 8
    ("0o10", 8), ("0x1F", 31), ("+12", 12), ("-3", -3),
    ("1e-4", 1e-4),          # YAML 1.1: the string "1e-4"
    ("1.5e3", 1500.0), (".5", 0.5), ("-.inf", float("-inf")),
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("y", "y"),  # YAML 1.1: booleans
    ("true", True), ("FALSE", False),
    ("2024-01-01", "2024-01-01"),  # YAML 1.1: a date
    ("=", "="),              # YAML 1.1: a value tag PyYAML cannot even build
    ("1_000", "1_000"), ("~", None), ("null", None),
])
def test_recipe_yaml_is_read_with_yaml_1_2_core_scalars(text, expected):
    from adapterkit.config.load import parse_yaml

    assert parse_yaml(f"a: {text}") == {"a": expected}


def test_set_values_keep_what_was_written(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(BASE))
    r = load_recipe(p, ["training.max_steps=010", "training.seed=0o10", "training.lr=1e-4", "backbone.revision=2024-01-01",
                        "training.mixed_precision=no", "training.group_by_length=off"])
    assert (r.training.max_steps, r.training.seed, r.training.lr) == (10, 8, 1e-4)
    assert r.backbone.revision == "2024-01-01" and r.training.mixed_precision == "no" and r.training.group_by_length is False
    with pytest.raises(RecipeError, match=r"training.seed: .*valid integer"):
        load_recipe(p, ["training.seed=1:30"])  # the string '1:30', not 90
    p.write_text("backbone: {path: m}\ndata: {train: t.csv}\ntraining: {max_steps: 010, seed: 1_000}\n")
    r = load_recipe(p)
    assert r.training.max_steps == 10 and r.training.seed == 1000  # in a file too; pydantic reads "1_000" as 1000


def test_saved_recipe_quotes_strings_yaml_1_2_reads_as_numbers(tmp_path):
    """`1e5` is a string to YAML 1.1 (safe_dump leaves it bare) but a float to YAML 1.2: saved quoted, it reads back."""
    from adapterkit.config import save_recipe

    r = recipe_from_dict({**BASE, "task": {"labels": ["1e5", "0o7", "no", "1:30", "010"]}})
    save_recipe(r, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml").task.labels == ["1e5", "0o7", "no", "1:30", "010"]


def test_anchors_and_merge_keys_still_work(tmp_path):
    """A recipe may still share settings through an anchor and a merge key (`<<: *d`): a bounded expansion."""
    p = tmp_path / "r.yaml"
    p.write_text("backbone: {path: m}\n"
                 "tasks:\n"
                 "  - {name: a, data: &d {train: a.csv, max_length: 64, text_column: sentence}}\n"
                 "  - {name: b, data: {<<: *d, train: b.csv}}\n")
    r = load_recipe(p)
    assert [(t.data.train, t.data.max_length, t.data.text_column) for t in r.tasks] == [("a.csv", 64, "sentence"), ("b.csv", 64, "sentence")]


def test_alias_expansion_is_bounded_without_expanding():
    """Aliases may add up to MAX_ALIAS_VALUES values; one past it is refused, before anything is built from it."""
    import time

    from adapterkit.config.load import MAX_ALIAS_VALUES, parse_yaml

    def doc(aliases):  # each *a repeats a list of 999 values: 1000 nodes, one of them counted once already
        return "a: &a [" + ", ".join(["1"] * 999) + "]\nb: [" + ", ".join(["*a"] * aliases) + "]\n"

    assert len(parse_yaml(doc(MAX_ALIAS_VALUES // 1000), "ok.yaml")["b"]) == MAX_ALIAS_VALUES // 1000  # exactly the limit
    over = doc(MAX_ALIAS_VALUES // 1000 + 1)
    with pytest.raises(RecipeError, match=r"^over.yaml: YAML aliases \(\*name\) expand to more than 100,000 extra values"):
        parse_yaml(over, "over.yaml")
    bomb = "l0: &l0 [" + ", ".join(["x"] * 9) + "]\n" + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 30))
    t = time.perf_counter()
    with pytest.raises(RecipeError, match="aliases"):
        parse_yaml(bomb, "bomb.yaml")  # 9**30 values if expanded
    assert time.perf_counter() - t < 5


def test_a_key_written_twice_is_refused_naming_its_line(tmp_path):
    """YAML readers keep the last of two equal keys: a second `training:` block silently replaced the first."""
    p = tmp_path / "r.yaml"
    p.write_text("backbone: {path: m}\ntraining: {lr: 0.01, epochs: 3}\ndata: {train: t.csv}\ntraining:\n  max_steps: 10\n")
    with pytest.raises(RecipeError, match=r"r.yaml: line 4: the key 'training' appears twice in one mapping"):
        load_recipe(p)
    p.write_text("backbone: {path: m}\ndata: {<<: {train: t.csv, max_length: 32}, max_length: 64}\n")
    assert load_recipe(p).data.max_length == 64  # a merged key (<<) overridden by an explicit one is no duplicate


def test_set_refuses_a_whole_section_but_takes_mappings_for_mapping_keys(tmp_path):
    from adapterkit.adapters import method_settings

    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({**BASE, "training": {"lr": 0.01, "epochs": 3}}))
    for key in ("training", "training.early_stopping", "data", "adapter", "export"):
        with pytest.raises(RecipeError, match=rf"^--set {key}: {key} is a section; .* set its keys one at a time, e.g. --set {key}.x=1$"):
            load_recipe(p, [f"{key}={{x: 1}}"])
    r = load_recipe(p, ["backbone.rope_scaling={rope_type: linear, factor: 2}", "adapter.rank_pattern={query: 4}"])
    assert r.backbone.rope_scaling == {"rope_type": "linear", "factor": 2} and method_settings(r.adapter).rank_pattern == {"query": 4}
    assert r.training.epochs == 3  # untouched


def test_counts_have_upper_bounds_and_the_bounds_themselves_load(tmp_path):
    from adapterkit.config.schema import MAX_BATCH, MAX_STEPS, MAX_TOKENS

    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(BASE))
    r = load_recipe(p, [f"training.max_steps={MAX_STEPS}", f"training.batch_size={MAX_BATCH}", f"data.max_length={MAX_TOKENS}"])
    assert (r.training.max_steps, r.training.batch_size, r.data.max_length) == (MAX_STEPS, MAX_BATCH, MAX_TOKENS)
    for key, value in (("training.max_steps", MAX_STEPS + 1), ("training.batch_size", MAX_BATCH + 1), ("data.max_length", MAX_TOKENS + 1),
                       ("training.epochs", 10**6), ("training.log_every", 10**10), ("training.early_stopping.patience", 10**7),
                       ("data.max_train_samples", 10**13), ("training.loss_chunk_tokens", 10**9)):
        with pytest.raises(RecipeError, match=rf"{key}: Input should be less than or equal to"):
            load_recipe(p, [f"{key}={value}"])


@pytest.mark.parametrize("data,expected", [
    ({**BASE, "adapter": {"layers": [1, True]}}, "adapter.layers.1: expected an integer, not the boolean true"),
    ({**BASE, "adapter": {"method": "ia3", "layers": [False]}}, "adapter.layers.0: expected an integer, not the boolean false"),
    ({**BASE, "adapter": {"method": "bottleneck", "layers": []}}, "adapter.layers: an empty list"),
    ({**BASE, "adapter": {"alpha_pattern": {"query": True}}}, "adapter.alpha_pattern.query: expected a number, not the boolean true"),
    ({**BASE, "adapter": {"alpha_pattern": {"query": "nan"}}}, "adapter.alpha_pattern.query: nan is not a finite number"),
    ({**BASE, "adapter": {"method": "ia3", "target_modules": []}}, "adapter.target_modules: an empty list"),
    ({**BASE, "task": {"labels": []}}, "task.labels: an empty list"),
    ({**BASE, "tasks": [{"name": "a", "data": {"train": "a.csv", "max_length": True}}, {"name": "b", "data": {"train": "b.csv"}}]},
     "tasks.0.data.max_length: expected an integer, not the boolean true"),
])
def test_booleans_and_empty_lists_are_refused_at_any_depth(data, expected):
    with pytest.raises(RecipeError) as e:
        recipe_from_dict(data)
    assert expected in str(e.value), str(e.value)


def test_inspect_set_reads_values_as_train_does():
    from adapterkit.model.inspect import parse_settings

    assert parse_settings(["r=010", "adapter.target_modules=[query, value]", "init_text=@x", "dropout="]) == \
        {"r": 10, "target_modules": ["query", "value"], "init_text": "@x", "dropout": None}
    with pytest.raises(RecipeError, match="--set layers: YAML aliases"):
        parse_settings(["layers=[&a [1,1,1,1,1,1,1,1,1,1], &b [" + ",".join(["*a"] * 10) + "], &c [" + ",".join(["*b"] * 10) +
                        "], &d [" + ",".join(["*c"] * 10) + "], &e [" + ",".join(["*d"] * 10) + "], &f [" + ",".join(["*e"] * 10) + "]]"])
