"""Search-space files: what each entry becomes, conditions, and bad entries as one line naming the key."""
import pytest

from adapterkit.errors import RecipeError
from adapterkit.tuning.space import dump_value, parse_space


def test_kinds_and_grid():
    ps = parse_space({"training.lr": {"low": "1e-4", "high": 1.0e-2, "log": True},
                      "adapter.r": {"choices": [4, 8]},
                      "adapter.alpha": {"low": 8, "high": 32, "step": 8},
                      "adapter.dropout": {"low": 0.0, "high": 0.2, "step": 0.1}}, "space.yaml")
    assert [p.kind for p in ps] == ["float", "categorical", "int", "float"]
    assert ps[0].low == 1e-4  # YAML's 1e-4 string read as a number
    assert ps[2].grid("s") == [8, 16, 24, 32]
    assert ps[3].grid("s") == [0.0, 0.1, 0.2]
    with pytest.raises(RecipeError, match=r"s: training.lr: the grid sampler needs `choices` or a `step`"):
        ps[0].grid("s")


def test_conditions_read_earlier_choices_or_the_recipe():
    ps = parse_space({"adapter.method": {"choices": ["lora", "ia3"]},
                      "adapter.r": {"choices": [4, 8], "when": {"adapter.method": "lora"}},
                      "training.head_lr": {"low": 1e-4, "high": 1e-2, "when": {"task.type": ["sequence_classification"]}}}, "s")
    recipe = {"task.type": "sequence_classification"}.get
    assert ps[1].active({"adapter.method": "lora"}, recipe)
    assert not ps[1].active({"adapter.method": "ia3"}, recipe)
    assert ps[2].active({}, recipe) and not ps[2].active({}, {"task.type": "causal_lm"}.get)


@pytest.mark.parametrize("space,expected", [
    ({"lr": {"low": 1, "high": 2}}, "s: 'lr': expected a dotted recipe key"),
    ({"training.lr": {"lo": 1, "high": 2}}, "s: training.lr: unknown field(s) ['lo']"),
    ({"training.lr": {"low": 2, "high": 1}}, "s: training.lr: low (2) must be below high (1)"),
    ({"training.lr": {"low": 0, "high": 1, "log": True}}, "s: training.lr: a log scale needs low > 0"),
    ({"training.lr": {"low": "x", "high": 1}}, "s: training.lr.low: expected a number, got 'x'"),
    ({"adapter.r": {"choices": []}}, "s: adapter.r.choices: expected a non-empty list"),
    ({"adapter.r": {"choices": [4], "low": 1}}, "s: adapter.r: give `choices` or a range"),
    ({"adapter.r": {"choices": [4], "when": {"adapter.method": "lora"}}, "adapter.method": {"choices": ["lora"]}},
     "s: adapter.r.when: adapter.method is chosen later in the space; list it before adapter.r"),
    ([1, 2], "s: expected a mapping of recipe keys"),
])
def test_bad_space_is_one_line(space, expected):
    with pytest.raises(RecipeError) as e:
        parse_space(space, "s")
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_values_round_trip_through_set():
    import yaml

    for v in (1.5e-3, 8, "lora", True, 0.0):
        assert yaml.safe_load(dump_value(v)) == v



def test_shipped_spaces_parse_and_name_recipe_keys():
    from pathlib import Path

    from adapterkit.model import load_recipe
    from adapterkit.tuning.space import load_space

    root = Path(__file__).parents[2]
    spaces = sorted((root / "recipes" / "spaces").glob("*.yaml"))
    assert spaces
    for path in spaces:
        for p in load_space(path):  # every value at the ends of each range gives a valid recipe
            for v in (p.choices or (p.low, p.high)):
                load_recipe(root / "recipes" / "sst2-lora-int8.yaml", [f"{p.key}={dump_value(v)}"])


# ---- issue #36: bounded grids, finite ranges, YAML 1.2 space files ----

def test_grid_steps_stop_inside_the_range():
    """A step that does not divide the range stops at the last value inside it (rounding added 1.2 above high: 1)."""
    p = parse_space({"adapter.dropout": {"low": 0.0, "high": 1.0, "step": 0.6}}, "s")[0]
    assert p.grid("s") == [0.0, 0.6] and p.grid_size("s") == 2
    assert parse_space({"adapter.dropout": {"low": 0.0, "high": 0.3, "step": 0.1}}, "s")[0].grid("s") == [0.0, 0.1, 0.2, 0.3]


def test_grid_size_is_bounded_before_any_list_is_made():
    from adapterkit.tuning.space import MAX_GRID_VALUES, check_grid

    ok = parse_space({"training.max_steps": {"low": 1, "high": MAX_GRID_VALUES, "step": 1}}, "s")
    assert ok[0].grid_size("s") == MAX_GRID_VALUES
    with pytest.raises(RecipeError, match=r"^s: training.max_steps: the grid would try 100,000,000,000,000,000,000 values \(low 1 to high"):
        parse_space({"training.max_steps": {"low": 1, "high": 10**20, "step": 1}}, "s")[0].grid("s")
    two = parse_space({"training.max_steps": {"low": 1, "high": 1000, "step": 1}, "training.log_every": {"low": 1, "high": 1000, "step": 1}}, "s")
    with pytest.raises(RecipeError, match=r"^s: the grid has more than 100,000 combinations"):
        check_grid(two, "s")
    check_grid(two[:1], "s")


@pytest.mark.parametrize("field", ["low", "high", "step"])
def test_range_ends_must_be_finite(field):
    spec = {"low": 1e-4, "high": 1e-2, "step": 1e-3, field: float("inf")}
    with pytest.raises(RecipeError, match=rf"s: training.lr.{field}: inf is not a finite number"):
        parse_space({"training.lr": spec}, "s")


def test_space_file_is_read_as_recipes_are(tmp_path):
    from adapterkit.tuning.space import load_space

    p = tmp_path / "space.yaml"
    p.write_text("training.mixed_precision: {choices: [no, bf16]}\ntraining.max_steps: {choices: [010, 20]}\n"
                 "training.lr: {low: 1e-4, high: 1e-2, log: true}\n")
    mp, steps, lr = load_space(p)
    assert mp.choices == ("no", "bf16") and steps.choices == (10, 20) and (lr.low, lr.high) == (1e-4, 1e-2)
    p.write_text("l0: &l0 [" + ", ".join(["x"] * 9) + "]\n" + "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 12)))
    with pytest.raises(RecipeError, match=r"space.yaml: YAML aliases"):
        load_space(p)


def test_conditions_match_booleans_written_as_words():
    """YAML 1.2 reads `yes` as a word: a condition written so still holds for a recipe's boolean true (and back)."""
    p = parse_space({"training.lr": {"low": 1e-4, "high": 1e-2, "when": {"training.packing": "yes"}}}, "s")[0]
    assert p.active({}, {"training.packing": True}.get) and not p.active({}, {"training.packing": False}.get)
    q = parse_space({"training.lr": {"low": 1e-4, "high": 1e-2, "when": {"training.packing": True}}}, "s")[0]
    assert q.active({}, {"training.packing": "on"}.get) and not q.active({}, {"training.packing": "off"}.get)
    r = parse_space({"training.lr": {"low": 1e-4, "high": 1e-2, "when": {"training.mixed_precision": "no"}}}, "s")[0]
    assert r.active({}, {"training.mixed_precision": "no"}.get) and not r.active({}, {"training.mixed_precision": "bf16"}.get)
