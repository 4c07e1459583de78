"""Every long command stops on SIGINT/SIGTERM: exit 128 + the signal, exactly one stderr line, and what it finished
kept and continued by the same command. Real processes, signalled at a point each test waits for: a search
(the stopped trial does not count and its settings run again), a series of --seeds (the stopped repeat resumes from
its checkpoint), generate --file (completions kept, the rest generated after a rerun, identical to an uninterrupted
run), and export (no temporary folder left behind)."""
import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from adapterkit.training import checkpoint
from helpers import ROOT, cli_process, cli_start, minilm_dir, tiny_recipe, wait_for, write_recipe, write_sentiment

pytestmark = pytest.mark.slow  # each test trains a tiny model

# The processes' environment over this one's: offline, no progress bars, no test pause unless a test asks for one.
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "ADAPTERKIT_PROGRESS": "0", checkpoint.SLEEP_ENV: None}


def _signal(proc, sig) -> tuple[str, list[str]]:
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=180)
    # Warnings the run gave before the signal (a tiny model's collapse warning) may precede it; the stop is one line.
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("adapterkit: warning:")]
    assert proc.returncode == 128 + sig, err[-2000:]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), lines
    return out, lines


def _recipe(tmp_path, tiny_bert, out, **training) -> Path:
    """A one-epoch recipe on 48 training rows, written to tmp_path/r.yaml."""
    files = write_sentiment(tmp_path, n_train=48, n_val=16)
    return write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_bert, files, out, training={"epochs": 1, "batch_size": 8, **training}))


def test_tune_stops_on_sigterm_and_the_same_command_continues(tiny_bert, tmp_path):
    import optuna
    from optuna.trial import TrialState

    r = _recipe(tmp_path, tiny_bert, tmp_path / "study")
    s = tmp_path / "space.yaml"
    s.write_text(yaml.safe_dump({"training.lr": {"low": 1e-3, "high": 1e-2, "log": True}}))
    out = tmp_path / "study"
    argv = ["tune", r, "--space", s, "--trials", "3", "--pruner", "none", "--sampler", "random", "--out", out]
    proc = cli_start(*argv, cwd=ROOT, env=ENV)
    wait_for(proc, lambda: (out / "trials" / "trial-0001" / "log.jsonl").is_file(), "the second trial")
    _, err = _signal(proc, signal.SIGTERM)
    assert "tune: interrupted by SIGTERM" in err[0] and "continue with the same command" in err[0]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="adapterkit", storage=f"sqlite:///{out / 'study.db'}").get_trials()
    stopped = next(t for t in trials if t.number == 1)
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["interrupted"]
    assert [t.user_attrs.get("retry_of") for t in trials if t.state == TrialState.WAITING] == [1]
    assert not (out / "tune.json").exists()

    res = cli_process(*argv, cwd=ROOT, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    trials = optuna.load_study(study_name="adapterkit", storage=f"sqlite:///{out / 'study.db'}").get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3  # the stopped trial did not count toward --trials
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.state == TrialState.COMPLETE and retry.params == stopped.params
    assert json.loads((out / "tune.json").read_text())["trials"]["complete"] == 3


def test_seeds_stop_on_sigint_and_the_stopped_repeat_resumes(tiny_bert, tmp_path):
    out = tmp_path / "series"
    r = _recipe(tmp_path, tiny_bert, out, checkpoint_every=2, epochs=2)
    proc = cli_start("train", r, "--seeds", "2", cwd=ROOT, env={**ENV, checkpoint.SLEEP_ENV: "4:3"})
    wait_for(proc, lambda: (out / "seed-0" / "checkpoints" / ".tmp-step-00000004" / "optimizer.safetensors").is_file(), "step 4")
    _, err = _signal(proc, signal.SIGINT)
    assert "seed-0: interrupted by SIGINT" in err[0] and "0 of 2 repeats done" in err[0] and "run the same command again" in err[0]
    assert json.loads((out / "seed-0" / "run.json").read_text())["status"] == "interrupted"
    assert not (out / "seed-1" / "run.json").exists()  # the next repeat never started

    res = cli_process("train", r, "--seeds", "2", cwd=ROOT, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "seed-0: continues from its checkpoint" in res.stderr
    events = [json.loads(l) for l in (out / "seed-0" / "log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "resume" for e in events)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["repeats"] == ["seed-0", "seed-1"] and len(summary["summary"]["validation/loss"]["values"]) == 2


def test_export_stopped_by_sigterm_leaves_nothing_behind(tmp_path):
    run = tmp_path / "run"  # the real MiniLM: its export takes long enough to be signalled in the middle
    res = cli_process("train", _recipe(tmp_path, minilm_dir(), run, max_steps=2), cwd=ROOT, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = tmp_path / "exp"
    proc = cli_start("export", run, "--out", out, cwd=ROOT, env=ENV)
    wait_for(proc, lambda: any(tmp_path.glob(".exp.adapterkit-tmp-*")), "the export's temporary folder")
    _signal(proc, signal.SIGTERM)
    assert not out.exists() and not list(tmp_path.glob(".exp.adapterkit-*"))


def test_generate_file_stopped_keeps_its_completions_and_continues(tiny_llama, tmp_path):
    from adapterkit.inference import generate

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}.", "completion": f" {w}"}) + "\n"
                            for w in ("yes", "no", "maybe", "never") * 4))
    run = tmp_path / "run"
    r = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_llama, {"train": data, "validation": data}, run, task={"type": "causal_lm"},
                                                      training={"max_steps": 4, "batch_size": 8}))
    res = cli_process("train", r, cwd=ROOT, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Item {i}: say something", "id": i}) + "\n" for i in range(300)))
    out = tmp_path / "gen.jsonl"
    partial = tmp_path / "gen.jsonl.partial"
    argv = ["generate", run, "--file", prompts, "--out", out, "--batch-size", "2", "--max-new-tokens", "6"]
    proc = cli_start(*argv, cwd=ROOT, env=ENV)
    wait_for(proc, lambda: partial.is_file() and partial.read_text().count("\n") >= 4, "the first completions")
    _, err = _signal(proc, signal.SIGINT)
    assert "generate: interrupted by SIGINT" in err[0] and "of 300 completions kept" in err[0]
    kept = partial.read_text().count("\n")
    assert 4 <= kept < 300 and kept % 2 == 0 and not out.exists()
    with open(partial, "a") as f:  # a kill in the middle of a write leaves half a line: it is generated again
        f.write('{"prompt": "Item')

    res = cli_process("generate", run, "--file", prompts, "--out", out, "--batch-size", "2", "--max-new-tokens", "3",
                      cwd=ROOT, env=ENV, timeout=600)
    assert res.returncode == 2 and "other settings (settings)" in res.stderr, res.stderr
    res = cli_process(*argv, cwd=ROOT, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"300 completions written to {out} ({kept} kept from the interrupted run)" in res.stdout
    assert not partial.exists() and not (tmp_path / "gen.jsonl.partial.json").exists()
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert rows == generate(run, file=prompts, batch_size=2, max_new_tokens=6)
