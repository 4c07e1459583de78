"""A search space file: recipe keys (the dotted keys of `--set`) -> what to try.

    training.lr:      {low: 1.0e-4, high: 3.0e-3, log: true}
    adapter.alpha:    {low: 8, high: 64, step: 8}            # integers when low and high are
    adapter.dropout:  {low: 0.0, high: 0.2}
    adapter.method:   {choices: [lora, ia3]}
    adapter.r:        {choices: [8, 16], when: {adapter.method: lora}}   # only tried where the condition holds

A `when` condition names a recipe key and the value (or list of values) it must have: an earlier key of the space
(as this trial chose it) or the recipe's own value."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config.load import MAX_DEPTH, parse_yaml
from ..errors import RecipeError

FIELDS = {"low", "high", "log", "step", "choices", "when"}
# The grid sampler lists every value of a key, and optuna every combination of them, up front: a `step` far below
# the range (1e-300, or high: 1e20 with step 1) would fill memory before the first trial.
MAX_GRID_VALUES = 10_000
MAX_GRID_POINTS = 100_000
# A boolean key compared with a word a `when` condition wrote (YAML 1.2 reads `yes` as the string "yes").
BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class Param:
    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    when: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high))
        return "int" if ints and (self.step is None or float(self.step).is_integer()) else "float"

    def bounds(self) -> tuple[Any, Any]:
        """(low, high) of a numeric parameter (load_space gives every non-categorical one both)."""
        assert self.low is not None and self.high is not None, f"{self.key}: a numeric parameter without low/high"
        return self.low, self.high

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        low, high = self.bounds()
        if self.kind == "int":
            return trial.suggest_int(self.key, low, high, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(low), float(high), step=self.step, log=self.log)

    def grid(self, source: str) -> list:
        """Every value the grid sampler tries."""
        if self.choices is not None:
            return list(self.choices)
        n = self.grid_size(source) - 1
        low, step = self.bounds()[0], self.step or 1
        values = [low + i * step for i in range(n + 1)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def grid_size(self, source: str) -> int:
        """How many values the grid sampler tries, counted without listing them. Steps that do not divide the range
        stop at the last one inside it (rounding used to add one above `high`)."""
        if self.choices is not None:
            return len(self.choices)
        if self.step is None:
            raise RecipeError(f"{source}: {self.key}: the grid sampler needs `choices` or a `step`")
        low, high = self.bounds()
        if all(isinstance(v, int) for v in (low, high, self.step)):
            n = int((high - low) // self.step + 1)  # exact for integers of any size
        else:
            n = math.floor((high - low) / self.step + 1e-9) + 1
        if n > MAX_GRID_VALUES:
            raise RecipeError(
                f"{source}: {self.key}: the grid would try {n:,} values (low {self.low} to high {self.high} "
                f"in steps of {self.step}); at most {MAX_GRID_VALUES:,}: use a larger step"
            )
        return n

    def active(self, chosen: dict, recipe_value) -> bool:
        for key, want in self.when.items():
            have = chosen[key] if key in chosen else recipe_value(key)
            if not any(_same(have, w) for w in (want if isinstance(want, list) else [want])):
                return False
        return True


def _same(have, want) -> bool:
    # true/false against yes/no/on/off either way round, as the recipe's boolean keys read them
    if isinstance(have, bool) and isinstance(want, str):
        return BOOL_WORDS.get(want.strip().lower()) is have
    if isinstance(want, bool) and isinstance(have, str):
        return BOOL_WORDS.get(have.strip().lower()) is want
    return have == want


def check_grid(params, source: str) -> None:
    """The grid sampler's values, per key and all combinations, within bounds (before optuna lists them)."""
    points = 1
    for p in params:
        points *= p.grid_size(source)
        if points > MAX_GRID_POINTS:
            raise RecipeError(
                f"{source}: the grid has more than {MAX_GRID_POINTS:,} combinations of values "
                f"({', '.join(f'{q.key}: {q.grid_size(source)}' for q in params)}); use fewer values or the tpe or random sampler"
            )


def _number(source: str, key: str, name: str, v):
    if isinstance(v, str):  # a YAML 1.1 reader gives 1e-4 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RecipeError(f"{source}: {key}.{name}: expected a number, got {v!r}")
    if not math.isfinite(v):  # an infinite high passed `low < high` and reached the sampler
        raise RecipeError(f"{source}: {key}.{name}: {v} is not a finite number")
    return v


def parse_space(data: Any, source: str) -> list[Param]:
    if not isinstance(data, dict) or not data:
        raise RecipeError(
            f"{source}: expected a mapping of recipe keys to ranges or choices, e.g. training.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}"
        )
    params: list[Param] = []
    for key, spec in data.items():
        if not isinstance(key, str) or "." not in key:
            raise RecipeError(f"{source}: {key!r}: expected a dotted recipe key such as training.lr")
        if not isinstance(spec, dict):
            raise RecipeError(
                f"{source}: {key}: expected {{low, high[, log, step]}} or {{choices: [...]}}, got {spec!r}"
            )
        unknown = sorted(set(spec) - FIELDS)
        if unknown:
            raise RecipeError(f"{source}: {key}: unknown field(s) {unknown}; expected {sorted(FIELDS)}")
        when = spec.get("when") or {}
        if not isinstance(when, dict):
            raise RecipeError(
                f"{source}: {key}.when: expected a mapping of recipe key to value, e.g. {{adapter.method: lora}}"
            )
        for cond in when:
            if cond == key:
                raise RecipeError(f"{source}: {key}.when: a key cannot depend on itself")
            if cond in data and list(data).index(cond) > list(data).index(key):
                raise RecipeError(f"{source}: {key}.when: {cond} is chosen later in the space; list it before {key}")
        if "choices" in spec:
            choices = spec["choices"]
            if set(spec) - {"choices", "when"}:
                raise RecipeError(f"{source}: {key}: give `choices` or a range (low, high), not both")
            if not isinstance(choices, list) or not choices:
                raise RecipeError(f"{source}: {key}.choices: expected a non-empty list")
            params.append(Param(key, choices=tuple(choices), when=when))
            continue
        if "low" not in spec or "high" not in spec:
            raise RecipeError(f"{source}: {key}: expected low and high (or choices)")
        low, high = _number(source, key, "low", spec["low"]), _number(source, key, "high", spec["high"])
        step = _number(source, key, "step", spec["step"]) if spec.get("step") is not None else None
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise RecipeError(f"{source}: {key}.log: expected true or false")
        if not low < high:
            raise RecipeError(f"{source}: {key}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise RecipeError(f"{source}: {key}: a log scale needs low > 0")
        if log and step is not None:
            raise RecipeError(f"{source}: {key}: give log or step, not both")
        if step is not None and step <= 0:
            raise RecipeError(f"{source}: {key}.step: expected a positive number")
        params.append(Param(key, low, high, log, step, None, when))
    return params


def load_space(path: str | Path) -> list[Param]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"--space: {path} not found")
    try:  # the recipe's YAML rules (1.2 scalars: `yes` is a word, 1e-4 a number) and its alias bound
        data = parse_yaml(path.read_text(encoding="utf-8"), f"--space: {path}")
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RecipeError(f"--space: {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise RecipeError(f"--space: {path}: nested more than {MAX_DEPTH} levels deep") from None
    return parse_space(data, str(path))


def dump_value(v) -> str:
    """A value as `--set` reads it back: JSON is YAML for numbers, strings, booleans and lists."""
    return json.dumps(v)
