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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError

FIELDS = {"low", "high", "log", "step", "choices", "when"}


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

    def suggest(self, trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def grid(self, source: str) -> list:
        """Every value the grid sampler tries."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is None:
            raise RecipeError(f"{source}: {self.key}: the grid sampler needs `choices` or a `step`")
        n = int(round((self.high - self.low) / self.step))
        values = [self.low + i * self.step for i in range(n + 1)]
        return [int(v) for v in values] if self.kind == "int" else [round(v, 12) for v in values]

    def active(self, chosen: dict, recipe_value) -> bool:
        for key, want in self.when.items():
            have = chosen[key] if key in chosen else recipe_value(key)
            if have not in (want if isinstance(want, list) else [want]):
                return False
        return True


def _number(source: str, key: str, name: str, v):
    if isinstance(v, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RecipeError(f"{source}: {key}.{name}: expected a number, got {v!r}")
    return v


def parse_space(data: Any, source: str) -> list[Param]:
    if not isinstance(data, dict) or not data:
        raise RecipeError(f"{source}: expected a mapping of recipe keys to ranges or choices, e.g. training.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}")
    params: list[Param] = []
    for key, spec in data.items():
        if not isinstance(key, str) or "." not in key:
            raise RecipeError(f"{source}: {key!r}: expected a dotted recipe key such as training.lr")
        if not isinstance(spec, dict):
            raise RecipeError(f"{source}: {key}: expected {{low, high[, log, step]}} or {{choices: [...]}}, got {spec!r}")
        unknown = sorted(set(spec) - FIELDS)
        if unknown:
            raise RecipeError(f"{source}: {key}: unknown field(s) {unknown}; expected {sorted(FIELDS)}")
        when = spec.get("when") or {}
        if not isinstance(when, dict):
            raise RecipeError(f"{source}: {key}.when: expected a mapping of recipe key to value, e.g. {{adapter.method: lora}}")
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
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RecipeError(f"--space: {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return parse_space(data, str(path))


def dump_value(v) -> str:
    """A value as `--set` reads it back: JSON is YAML for numbers, strings, booleans and lists."""
    return json.dumps(v)
