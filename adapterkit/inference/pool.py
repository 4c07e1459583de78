"""Several runs on one base model in one process: the base loads once, each run attaches by name and detaches at
run time (model/shared.py), and predict, eval and generate address a run by its name.

    pool = RunPool()
    pool.add("runs/sentiment")            # named "sentiment"; loads the base
    pool.add("topics=runs/topic-lora")    # NAME=PATH; shares the base loaded above
    pool.predict("topics", ["..."])
    pool.remove("sentiment")              # its adapter and head are freed; the base stays
"""

from __future__ import annotations

import ctypes
import gc
import re
import sys
from pathlib import Path

import torch

from ..errors import DataError
from ..files import read_json
from ..heads import HEADS
from ..model import LoadedRun, load_run, load_run_recipe, require_finished
from ..model.load import load_into_group
from ..model.mixed import MixGroup, mix_key
from ..model.shared import SharedBase, base_key, same_base
from .generate import generate_loaded, generation_settings
from .run import eval_loaded, predict_loaded, predict_logits, prediction_rows


class UnknownRun(DataError):
    """A run name that is not loaded (the server answers 404)."""


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def run_spec(spec: str | Path) -> tuple[str, Path]:
    """`NAME=PATH` or `PATH` (named after its folder) -> (name, path)."""
    text = str(spec)
    name, sep, path = text.partition("=")
    if not sep or not NAME.fullmatch(name):
        name, path = Path(text).name, text
    if not NAME.fullmatch(name):
        raise DataError(
            f"{text}: {name!r} is not a run name (letters, digits, '.', '_' or '-', up to 64); name it NAME={text}"
        )
    return name, Path(path)


def release_memory() -> None:
    """Collect what a detached run left, and hand glibc's freed heap back to the system (it keeps it otherwise, so
    the process's memory would not show the run is gone)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: nothing to hand back this way
            pass


class RunPool:
    """Runs sharing one base model, by name. Runs of a method that mixes in a batch (LoRA, bottleneck) with the same
    task share one PEFT model too (model/mixed.py), so `predict_rows` runs their rows in one forward pass. Not
    thread-safe: the server calls it from one worker."""

    def __init__(self, quantization: str | None = None):
        self.quantization = quantization
        self.base: SharedBase | None = None
        self.runs: dict[str, LoadedRun] = {}
        self.paths: dict[str, Path] = {}
        self.groups: dict[tuple, MixGroup] = {}
        self.group_of: dict[str, tuple] = {}

    def add(self, spec: str | Path, name: str | None = None) -> str:
        """Attach a run (`NAME=PATH` or `PATH`); the first one loads the base. Returns its name."""
        name, path = (name, Path(spec)) if name else run_spec(spec)
        if name in self.runs:
            raise DataError(f"{spec}: a run named {name!r} is loaded already ({self.paths[name]}); name it NAME=PATH")
        require_finished(path)
        recipe = load_run_recipe(path)
        if self.base is None:
            self.base = SharedBase.from_run(path, recipe, self.quantization)
        key = mix_key(path, recipe, read_json(path / "labels.json", "label map").get("labels"))
        if key is not None and key in self.groups:
            self.runs[name] = load_into_group(self.groups[key], name, path, self.base, self.quantization)
        else:
            self.runs[name] = load_run(path, self.quantization, base=self.base)
            if key is not None:
                self.groups[key] = MixGroup.start(key, name, self.runs[name].model, self.runs[name].head_modules)
        if key is not None:
            self.group_of[name] = key
        self.paths[name] = path
        return name

    def remove(self, name: str) -> None:
        """Detach a run: its adapter and head are freed, the base stays for the others."""
        self.get(name)
        key = self.group_of.pop(name, None)
        if key is not None and self.groups[key].detach(name):
            del self.groups[key]
        del self.runs[name], self.paths[name]
        release_memory()

    def get(self, name: str) -> LoadedRun:
        """The run by name, its adapter active (runs in a mix group share one model)."""
        if name not in self.runs:
            raise UnknownRun(f"no run named {name!r} is loaded (loaded: {', '.join(self.runs) or 'none'})")
        if name in self.group_of:
            self.groups[self.group_of[name]].activate(name)
        return self.runs[name]

    def names(self) -> list[str]:
        return list(self.runs)

    def predict(self, name: str, texts: list[str]) -> list[dict]:
        return predict_loaded(self.get(name), texts)

    def predict_rows(self, items: list[tuple[str, str]]) -> list[dict]:
        """Prediction rows for (run name, text) pairs, in order: the rows of a mix group's runs in one forward pass
        (each through its own adapter and head), any other run's rows in a pass of its own."""
        parts: dict[str | tuple, list[int]] = {}
        for i, (name, _) in enumerate(items):
            if name not in self.runs:
                self.get(name)  # the one-line refusal
            mixes = name in self.group_of and HEADS[self.runs[name].recipe.task.type].label_kind != "tokens"
            parts.setdefault(self.group_of[name] if mixes else name, []).append(i)
        out: list[dict] = [{} for _ in items]
        for part, idx in parts.items():
            pairs = [items[i] for i in idx]
            if isinstance(part, str):
                rows = self.predict(part, [t for _, t in pairs])
            else:
                rows = self._mixed(self.groups[part], pairs)
            for i, row in zip(idx, rows):
                out[i] = row
        return out

    def _mixed(self, group: MixGroup, pairs: list[tuple[str, str]], batch_size: int = 64) -> list[dict]:
        """Rows of a mix group's runs, grouped by run (each run's rows one span) and run in batches of mixed runs."""
        order = group.order([n for n, _ in pairs])
        names, texts = [pairs[i][0] for i in order], [pairs[i][1] for i in order]
        first = self.runs[names[0]]  # one tokenizer and text length for the group (its key says so)
        parts = []
        for i in range(0, len(names), batch_size):
            with group.rows(names[i : i + batch_size]) as forward:
                parts.append(
                    predict_logits(
                        first.model,
                        first.tokenizer,
                        texts[i : i + batch_size],
                        first.recipe.data.max_length,
                        batch_size,
                        forward,
                    )
                )
        logits = torch.cat(parts)
        rows: list[dict] = [{} for _ in pairs]
        for name in dict.fromkeys(names):
            idx = [i for i, n in enumerate(names) if n == name]
            own = logits[idx][..., : group.width(name)]  # heads of other widths share the padded output
            for i, row in zip(idx, prediction_rows(self.runs[name], [texts[i] for i in idx], own)):
                rows[order[i]] = row
        return rows

    def parallel(self, names: list[str], texts: list[str]) -> dict[str, list[dict]]:
        """Each run's prediction rows for the same texts; runs that share a PEFT model (model/mixed.py) answer in
        one forward pass, each row copy through its own adapter and head (AdapterHub's `Parallel`)."""
        rows = self.predict_rows([(n, t) for n in names for t in texts])
        return {n: rows[i * len(texts) : (i + 1) * len(texts)] for i, n in enumerate(names)}

    def eval(self, name: str, split: str = "validation", data_file: str | None = None) -> dict:
        return eval_loaded(self.get(name), split, data_file)

    def generate(self, name: str, prompts: list[str], max_new_tokens=None, temperature=0.0, batch_size=None):
        run = self.get(name)
        return generate_loaded(run, prompts, generation_settings(run, max_new_tokens, temperature, batch_size))


def checked_specs(specs, quantization: str | None = None) -> list[tuple[str, Path]]:
    """(name, path) of each run (`NAME=PATH` or `PATH`): names distinct, runs finished, all on one base loaded one
    way; checked before any model loads."""
    first: tuple | None = None
    names: dict[str, Path] = {}
    for spec in specs:
        name, path = run_spec(spec)
        if name in names:
            raise DataError(f"{path}: the run name {name!r} is taken by {names[name]}; name one NAME=PATH")
        names[name] = path
        require_finished(path)
        key = base_key(path, load_run_recipe(path), quantization)
        first = first or (path, key)
        same_base(path, key, *first)
    return list(names.items())


def open_pool(specs, quantization: str | None = None) -> RunPool:
    """A pool of the given runs (`NAME=PATH` or `PATH` each), all checked to share one base before it loads."""
    pool = RunPool(quantization)
    for name, path in checked_specs(specs, quantization):
        pool.add(path, name)
    return pool
