"""`adapterkit tune` on a tiny model: a search killed with SIGKILL continues with the same command (no finished
trial re-run, the interrupted one tried again), pruning stops a trial at an evaluation, the grid covers its values,
and a study folder is not reused with other settings."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers import cli, cli_process, cli_start, tiny_recipe, write_sentiment

SPACE = {"training.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}, "adapter.r": {"choices": [2, 4]}}


def _setup(tmp_path, tiny_bert, space=SPACE, **training):
    files = write_sentiment(tmp_path, n_train=48, n_val=16)
    r = tmp_path / "r.yaml"
    r.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, files, tmp_path / "study",
                                            training={"epochs": 1, "batch_size": 16, "eval_every": 1, **training})))
    s = tmp_path / "space.yaml"
    s.write_text(yaml.safe_dump(space))
    return r, s


def _trials(study_dir: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name="adapterkit", storage=f"sqlite:///{study_dir / 'study.db'}").get_trials()


def _finished(study_dir: Path) -> list[Path]:
    return sorted(p.parent for p in (study_dir / "trials").glob("trial-*/run.json") if '"finished"' in p.read_text())


@pytest.mark.slow
def test_sigkill_then_same_command_continues_the_study(tiny_bert, tmp_path):
    from optuna.trial import TrialState

    r, s = _setup(tmp_path, tiny_bert)
    out = tmp_path / "study"
    argv = ["tune", r, "--space", s, "--trials", "4", "--pruner", "none", "--sampler", "random", "--out", out]
    proc = cli_start(*argv, stdout=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (len(_finished(out)) >= 2 and (out / "trials" / "trial-0002" / "log.jsonl").is_file()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.value, t.datetime_complete) for t in _trials(out) if t.state == TrialState.COMPLETE}
    assert len(before) >= 2, proc.stderr.read()[-2000:]
    mtimes = {p.name: (p / "run.json").stat().st_mtime_ns for p in _finished(out)}
    running = [t for t in _trials(out) if t.state == TrialState.RUNNING]

    res = cli_process(*argv, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    trials = _trials(out)
    after = {t.number: (t.value, t.datetime_complete) for t in trials if t.state == TrialState.COMPLETE}
    assert all(after[n] == before[n] for n in before)  # finished trials kept, not re-run
    assert {p.name: (p / "run.json").stat().st_mtime_ns for p in _finished(out) if p.name in mtimes} == mtimes
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    for t in running:  # the interrupted trial: failed, marked, and its settings tried again
        t2 = next(x for x in trials if x.number == t.number)
        assert t2.state == TrialState.FAIL and t2.user_attrs["interrupted"]
        retry = [x for x in trials if x.user_attrs.get("retry_of") == t.number]
        assert len(retry) == 1 and retry[0].params == t.params and retry[0].state == TrialState.COMPLETE
    assert "were interrupted; their settings run again" in res.stderr
    summary = json.loads((out / "tune.json").read_text())
    best = min(after.values(), key=lambda v: v[0])[0]  # metric: loss (the recipe's early-stopping default)
    assert summary["best"]["value"] == best and summary["trials"]["complete"] == 4
    from adapterkit.model import load_recipe

    tuned = load_recipe(out / "best_recipe.yaml")
    assert tuned.adapter.r == summary["best"]["params"]["adapter.r"]
    assert tuned.training.lr == pytest.approx(summary["best"]["params"]["training.lr"])
    assert (out / "plots" / "history.png").is_file() and "history.png" in (out / "report.html").read_text()
    assert len((out / "trials.csv").read_text().splitlines()) == 1 + len(trials)


@pytest.mark.slow
def test_pruned_trial_stops_at_its_evaluation(tiny_bert, tmp_path, monkeypatch):
    import optuna
    from optuna.trial import TrialState

    from adapterkit.tuning import study, tune

    class PruneLater(optuna.pruners.BasePruner):
        def prune(self, study_, trial):  # every trial after the first stops at its first evaluation
            return trial.number >= 1

    monkeypatch.setattr(study, "make_pruner", lambda s: PruneLater())
    r, s = _setup(tmp_path, tiny_bert, epochs=2)
    result = tune(r, s, trials=2, sampler="random", metric="accuracy", out=tmp_path / "study")
    trials = _trials(tmp_path / "study")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert list(trials[1].intermediate_values) == [1]  # one evaluation (step 1 of 6), then stopped
    log = [json.loads(l) for l in (tmp_path / "study" / "trials" / "trial-0001" / "log.jsonl").read_text().splitlines()]
    assert max(x.get("step", 0) for x in log) == 1
    assert not (tmp_path / "study" / "trials" / "trial-0001" / "head.safetensors").exists()
    assert result["trials"] == {"complete": 1, "pruned": 1, "fail": 0} and result["best"]["trial"] == 0


@pytest.mark.slow
def test_grid_tries_each_value_and_settings_cannot_change(tiny_bert, tmp_path):
    from adapterkit.errors import RecipeError
    from adapterkit.tuning import tune

    r, s = _setup(tmp_path, tiny_bert, space={"adapter.r": {"choices": [2, 4]}, "training.lr": {"choices": [0.005]}})
    tune(r, s, trials=2, sampler="grid", out=tmp_path / "study")
    assert sorted(t.params["adapter.r"] for t in _trials(tmp_path / "study")) == [2, 4]
    with pytest.raises(RecipeError, match=r"holds a search with other settings \(metric differ\)"):
        tune(r, s, trials=3, sampler="grid", metric="accuracy", out=tmp_path / "study")


def test_bad_space_value_and_lock_are_one_line(tiny_bert, tmp_path):
    from adapterkit.errors import RecipeError, RunDirError
    from adapterkit.tuning import tune
    from adapterkit.runs.lock import locked

    r, s = _setup(tmp_path, tiny_bert, space={"adapter.dropout": {"low": 0.0, "high": 1.5}})
    with pytest.raises(RecipeError, match=r"space.yaml: adapter.dropout: 1.5 does not give a valid recipe: .*adapter.dropout"):
        tune(r, s, trials=1, out=tmp_path / "study")
    for args, expected in ((["--space", str(tmp_path / "none.yaml")], "--space: "), (["--space", str(s), "--sampler", "bayes"], "--sampler: 'bayes'")):
        res = cli("tune", r, *args)
        err = res.err.strip().splitlines()
        assert res.code == 2 and len(err) == 1 and expected in err[0], err
    with locked(tmp_path / "x", "--out", "tune.lock"):
        with pytest.raises(RunDirError, match=rf"--out: .*x is in use by another adapterkit process \(PID {os.getpid()}\)"):
            with locked(tmp_path / "x", "--out", "tune.lock"):
                pass


@pytest.mark.slow
def test_cv_trial_is_the_mean_over_folds(tiny_bert, tmp_path):
    from adapterkit.tuning import tune

    r, s = _setup(tmp_path, tiny_bert, space={"adapter.r": {"choices": [2]}})
    tune(r, s, trials=1, metric="accuracy", folds=2, out=tmp_path / "study")
    (t,) = _trials(tmp_path / "study")
    folds = [json.loads((tmp_path / "study" / "trials" / "trial-0000" / f"fold-{i}" / "metrics.json").read_text())["validation"]["accuracy"]
             for i in range(2)]
    assert t.user_attrs["fold_values"] == folds and t.value == pytest.approx(sum(folds) / 2)


@pytest.mark.slow
def test_jobs_run_trials_in_several_processes_on_one_study(tiny_bert, tmp_path):
    from optuna.trial import TrialState

    from adapterkit.tuning import tune

    r, s = _setup(tmp_path, tiny_bert)
    result = tune(r, s, trials=3, sampler="random", pruner="none", jobs=2, out=tmp_path / "study")
    trials = _trials(tmp_path / "study")
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 3 <= len(done) <= 4  # each worker stops once the study holds 3; one may finish a trial it had started
    assert len({t.user_attrs["run_dir"] for t in done}) == len(done)
    assert len(_finished(tmp_path / "study")) == len(done) and result["trials"]["complete"] == len(done)
