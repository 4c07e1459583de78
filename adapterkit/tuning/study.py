"""`adapterkit tune`: a hyperparameter search over recipe keys with Optuna.

Each trial is an ordinary run folder (OUT/trials/trial-NNNN); its validation metric at every evaluation feeds the
pruner; the study lives in OUT/study.db (SQLite), so the same command after an interruption continues it: finished
trials stay, a trial that was running is marked failed and its settings are tried again. SIGINT or SIGTERM stops
the whole search (not just the trial) with exit 130/143; the trial it stopped does not count toward --trials. The result is
best_recipe.yaml, trials.csv / trials.md and report.html with the optimisation history and parameter importances.

A shared search (`--storage URL`, storage.py) is one study in a database that processes on several machines use:
the command without --worker starts or continues it and writes the results; `--worker` joins it and only runs
trials, each below its own --out. Every process starts a trial only while finished plus running trials are fewer
than --trials, and ends once the study holds --trials finished ones; a trial whose process died is failed by the
heartbeat check and its settings run again (the same requeue as a trial a signal stopped)."""

from __future__ import annotations

import csv
import datetime
import gc
import io
import json
import math
import random
import socket
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .. import console
from ..config import apply_override, resolve_paths
from ..config.load import dump_yaml, parse_yaml
from ..config.schema import MAX_FOLDS, SEED_MAX
from ..errors import AdapterkitError, Interrupted, RecipeError
from ..files import atomic_write_text
from ..model import load_recipe
from ..progress import quiet_libraries
from ..runs.lock import locked
from ..runs.results import RunResult
from ..scoring import lower_is_better
from ..signals import Stopped, signal_number, stop_on_signals
from ..stats import mean_sd
from ..training import preflight, tracking, train
from ..training.loop import selection
from .repeats import check_parent, fold_overrides
from .space import Param, check_grid, dump_value, load_space
from .storage import connect, driver_url, heartbeat_seconds, masked

SAMPLERS = ("tpe", "random", "grid")
MAX_TRIALS = 10_000  # each trial is a training run
MAX_JOBS = 64  # each job is a process holding its own model
PRUNERS = ("median", "hyperband", "none")
STUDY = "adapterkit"
MAX_RETRIES = 3  # settings whose process keeps dying (out of memory) stop being retried: the failure then counts
POLL_SECONDS = 2  # how often a process with no trial to start looks at the study again
JOIN_WAIT_SECONDS = 600  # a --worker started before the search waits this long for it


@dataclass(frozen=True)
class Search:
    """Everything a tune process (and each of its --jobs workers) needs to run trials."""

    recipe: str
    overrides: tuple[str, ...]
    space_file: str
    params: tuple[Param, ...]
    metric: str
    lower: bool
    out: Path
    trials: int
    sampler: str
    pruner: str
    folds: int | None
    seed: int
    timeout: float | None
    storage: str | None = None  # the URL as given (--storage); None: OUT/study.db
    worker: bool = False
    heartbeat: int = field(default_factory=heartbeat_seconds)  # replaced by the study's own once it is open

    @property
    def storage_url(self) -> str:
        return driver_url(self.storage) if self.storage else f"sqlite:///{self.out / 'study.db'}"

    @property
    def where(self) -> str:
        """The study as messages name it: the URL with its password masked, or the study file."""
        return masked(self.storage) if self.storage else str(self.out / "study.db")

    @property
    def option(self) -> str:
        return "--storage" if self.storage else "--out"

    @property
    def cap(self) -> int:
        """Finished trials to reach: --trials, or fewer where a grid has fewer points."""
        if self.sampler != "grid":
            return self.trials
        return min(self.trials, math.prod(len(p.grid(self.space_file)) for p in self.params))


def _recipe_value(data: dict, key: str):
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def trial_overrides(s: Search, chosen: dict, run_dir: Path) -> list[str]:
    return (
        list(s.overrides)
        + [f"{k}={dump_value(v)}" for k, v in chosen.items()]
        + [f"training.output_dir={run_dir}", f"training.early_stopping.metric={s.metric}"]
    )


def check_space(s: Search) -> None:
    """Every value at the ends of every range (and every choice) gives a valid recipe: one line naming the key."""
    for p in s.params:
        values = list(p.choices) if p.choices is not None else [p.low, p.high]
        for v in values:
            try:
                load_recipe(s.recipe, list(s.overrides) + [f"{p.key}={dump_value(v)}"])
            except RecipeError as e:
                raise RecipeError(f"{s.space_file}: {p.key}: {v!r} does not give a valid recipe: {e}") from None


def make_sampler(s: Search):
    import optuna

    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.sampler == "grid":
        return optuna.samplers.GridSampler({p.key: p.grid(s.space_file) for p in s.params}, seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed)


def make_pruner(s: Search):
    import optuna

    if s.pruner == "none":
        return optuna.pruners.NopPruner()
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def open_study(s: Search, heartbeat: bool = True):
    """The study, created where needed. A --worker only joins one: started first, it waits for the command without
    --worker to create the study and record its settings. Without `heartbeat`: to read the settings."""
    import optuna

    storage = connect(s.storage_url, s.option, s.where, s.heartbeat if heartbeat else None, retry_stale)
    kw = {"study_name": STUDY, "storage": storage, "sampler": make_sampler(s), "pruner": make_pruner(s)}
    if not s.worker:
        return optuna.create_study(**kw, load_if_exists=True, direction="minimize" if s.lower else "maximize")
    deadline, noted = time.monotonic() + JOIN_WAIT_SECONDS, False
    while True:
        try:
            study = optuna.load_study(**kw)
            if "settings" in study.user_attrs:
                return study
        except KeyError:  # no study of that name yet
            pass
        if time.monotonic() > deadline:
            raise RecipeError(
                f"--storage {s.where}: no adapterkit search started there in {JOIN_WAIT_SECONDS} s; start it with "
                f"the same command without --worker"
            )
        if not noted:
            console.echo(f"note: waiting for the search at {s.where} to start (the command without --worker)", err=True)
            noted = True
        time.sleep(POLL_SECONDS)


def settings_record(s: Search) -> dict:
    return {
        "recipe": s.recipe,
        "overrides": list(s.overrides),
        "space": yaml.safe_load(Path(s.space_file).read_text()),
        "metric": s.metric,
        "cv_folds": s.folds,
        "sampler": s.sampler,
        "pruner": s.pruner,
    }


def retried(trials) -> set[int]:
    """Numbers of the trials whose settings were queued again (a signal or a dead process stopped them)."""
    return {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}


def counted(trials) -> int:
    """Trials that count toward --trials: finished, pruned, or failed by themselves. Not: a trial a signal or a dead
    process stopped (its settings run again), one that stepped back before starting, or one that stopped before it
    had settings (nothing ran)."""
    from optuna.trial import TrialState

    again = retried(trials)
    return sum(
        1
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (
            t.state == TrialState.FAIL
            and _settings(t)
            and not (t.user_attrs.get("interrupted") or t.user_attrs.get("surplus") or t.number in again)
        )
    )


def lost_just_now(trials, heartbeat: int) -> int:
    """Trials the heartbeat check failed less than a heartbeat ago whose settings are not queued again yet. Optuna
    marks such a trial failed first and calls retry_stale after; in between, `counted` sees a failure of its own,
    so other processes count it as in flight rather than end the search one result short."""
    from optuna.trial import TrialState

    again = retried(trials)
    now = datetime.datetime.now()
    return sum(
        1
        for t in trials
        if t.state == TrialState.FAIL
        and _settings(t)
        and not (t.user_attrs.get("ended") or t.user_attrs.get("interrupted") or t.user_attrs.get("surplus"))
        and t.number not in again
        and t.datetime_complete is not None
        and (now - t.datetime_complete).total_seconds() < heartbeat
    )


def requeue(study, settings: dict, retry_of: int) -> None:
    """The one way settings run again: a waiting trial that the next process to start a trial takes first."""
    if settings:
        study.enqueue_trial(settings, user_attrs={"retry_of": retry_of})


def _settings(t) -> dict:
    """A trial's settings: those it chose, or, for a queued trial stopped before choosing, those it was given."""
    return dict(t.params or t.system_attrs.get("fixed_params") or {})


def recover_interrupted(study) -> list[int]:
    """Trials left RUNNING by a killed search: failed (marked interrupted) and their settings queued again."""
    from optuna.trial import TrialState

    redo = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        requeue(study, _settings(t), t.number)
        redo.append(t.number)
    return redo


def retry_stale(study, trial) -> None:
    """Optuna's heartbeat check failed `trial` (its process stopped answering): its settings run again, at most
    MAX_RETRIES times in a row; after that the failure stays and counts (the settings themselves kill processes)."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    chain, n = 0, trial.user_attrs.get("retry_of")
    while n in by_number and chain <= MAX_RETRIES:
        chain, n = chain + 1, by_number[n].user_attrs.get("retry_of")
    if chain < MAX_RETRIES:
        requeue(study, _settings(trial), trial.number)


class _Surplus(Exception):
    """Another process took the study's last place at the same moment: this trial steps back before it starts."""


def _surplus(trial, s: Search) -> bool:
    """Whether the study is full without this trial: two processes that both checked before either started see
    each other here (each wrote its trial first), and both step back rather than run one trial too many."""
    from optuna.trial import TrialState

    trials = trial.study.get_trials(deepcopy=False)
    others = sum(1 for t in trials if t.state == TrialState.RUNNING and t.number != trial.number)
    others += lost_just_now(trials, s.heartbeat)
    if counted(trials) + others < s.cap:
        return False
    trial.set_user_attr("surplus", True)
    if "retry_of" in trial.user_attrs:  # queued settings that must still run: back in the queue
        requeue(trial.study, _settings(trial.study._storage.get_trial(trial._trial_id)), trial.user_attrs["retry_of"])
    return True


def objective(s: Search, base_data: dict):
    def run(trial) -> float:
        if _surplus(trial, s):
            raise _Surplus
        trial.set_user_attr("host", socket.gethostname())
        chosen: dict[str, Any] = {}
        for p in s.params:
            if p.active(chosen, lambda k: _recipe_value(base_data, k)):
                chosen[p.key] = p.suggest(trial)
        run_dir = s.out / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.relative_to(s.out)))
        sets = trial_overrides(s, chosen, run_dir)
        try:
            with tracking.series(s.out, s.out / "trials", trial=trial.number, study=s.out.name):
                return _run_trial(s, trial, sets, run_dir)
        except (Interrupted, KeyboardInterrupt) as e:
            # A signal says nothing about these settings: the trial is marked (not counted), its settings run again
            # when the same command continues, and the search stops (Stopped is not in optimize's `catch`).
            trial.set_user_attr("interrupted", True)
            requeue(trial.study, trial.params, trial.number)
            raise Stopped(e.signum if isinstance(e, Interrupted) else signal_number(e)) from None
        except AdapterkitError as e:
            trial.set_user_attr("error", str(e))
            raise
        finally:
            trial.set_user_attr("ended", True)  # in this process: not a trial whose process was lost
            gc.collect()

    return run


def _run_trial(s: Search, trial, sets: list[str], run_dir: Path) -> float:
    """One trial's training (each fold's, with --cv); the pruner may stop it after an evaluation or a fold."""
    import optuna

    if s.folds:
        values = []
        for i in range(s.folds):
            r = resolve_paths(
                load_recipe(
                    s.recipe,
                    sets + [f"training.output_dir={run_dir / f'fold-{i}'}", *fold_overrides(s.folds, i)],
                )
            )
            values.append(_final_value(train(r), s.metric))
            trial.report(mean_sd(values)[0], i)
            if i + 1 < s.folds and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {i}")
        trial.set_user_attr("fold_values", values)
        return mean_sd(values)[0]
    r = resolve_paths(load_recipe(s.recipe, sets))

    def on_eval(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    return _final_value(train(r, on_eval=on_eval), s.metric)


def _final_value(final: dict, metric: str) -> float:
    result = RunResult.from_metrics(final)
    return selection(result.split("validation"), metric, result.multi)


def work(s: Search, study=None):
    """Run trials until the study holds --trials counted ones (or --timeout passes); also the body of each --jobs
    process (which opens its own connection to the study). Returns the study."""
    import optuna
    from optuna.trial import TrialState

    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if study is None:  # a --jobs worker: the parent passes SIGTERM on, and it stops as the parent does
        stop_on_signals()
    if study is None or s.worker:
        study = study or open_study(s)
        # --seed seeds the process that starts the search; others seeded alike would choose the same settings
        study.sampler.reseed_rng()
    run = objective(s, _base_data(s))
    deadline = time.monotonic() + s.timeout if s.timeout else math.inf
    while time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # also while waiting: a dead process's trial comes back
        trials = study.get_trials(deepcopy=False)
        done, lost = counted(trials), lost_just_now(trials, s.heartbeat)
        if done - lost >= s.cap:
            break
        if done + sum(t.state == TrialState.RUNNING for t in trials) >= s.cap:
            time.sleep(min(s.heartbeat, POLL_SECONDS))  # the last trials run elsewhere; one may die and come back
            continue
        _one_trial(s, study, run)
    return study


def _one_trial(s: Search, study, run) -> None:
    import optuna

    try:
        study.optimize(run, n_trials=1, catch=(AdapterkitError, FloatingPointError))
    except _Surplus:
        time.sleep(random.uniform(0, POLL_SECONDS))  # both processes stepped back: not in step again
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as e:
        # No heartbeat got through for the grace period (a stalled machine or database): another process failed
        # this trial and queued its settings again, so its result cannot be recorded.
        if isinstance(e, ValueError) and not str(e).startswith("Cannot tell a"):
            raise
        console.echo(
            f"note: {s.where}: a trial of this process was failed for missing heartbeats; it runs again", err=True
        )


def _base_data(s: Search) -> dict:
    data = parse_yaml(Path(s.recipe).read_text(encoding="utf-8"), s.recipe)  # as load_recipe read it (YAML 1.2 scalars)
    for o in s.overrides:
        apply_override(data, o)
    return data


def tune(
    recipe,
    space,
    overrides=(),
    trials: int = 20,
    sampler: str = "tpe",
    metric: str | None = None,
    timeout: float | None = None,
    jobs: int = 1,
    pruner: str = "median",
    out=None,
    folds: int | None = None,
    seed: int = 0,
    storage: str | None = None,
    worker: bool = False,
) -> dict:
    """Search the space; returns the summary written to OUT/tune.json. With `worker`: join the search at `storage`
    and only run trials (the process without --worker writes the results); returns the study's counts."""
    _check_options(sampler, pruner, trials, jobs, seed, folds, timeout)
    if worker and not storage:
        raise RecipeError("--worker: needs --storage URL, the database of the search to join")
    s = _search(recipe, space, overrides, trials, sampler, metric, timeout, pruner, out, folds, seed, storage, worker)
    if worker:  # no lock: trial folders are named by the study's trial numbers, unique across every process
        study, s = _open_same_study(s)
        _run(s, study, jobs)
        trials_ = _shown(study.get_trials(deepcopy=False))
        return {"worker": True, "study": s.where, "trials": _states(trials_), "out": str(s.out)}
    with locked(s.out, "--out", "tune.lock"):
        study, s = _open_same_study(s)
        # OUT/study.db is this process's alone (the lock): whatever is RUNNING there was stopped. A shared study's
        # running trials may be other machines' live ones: the heartbeat check fails only the dead.
        redo = recover_interrupted(study) if not s.storage else []
        if redo:
            console.echo(f"note: trial(s) {redo} were interrupted; their settings run again", err=True)
        t0 = time.perf_counter()
        _run(s, study, jobs)
        return write_results(s, study, round(time.perf_counter() - t0, 1))  # trials are read from the shared storage


def _search(recipe, space, overrides, trials, sampler, metric, timeout, pruner, out, folds, seed, storage, worker):
    """The Search, every input checked before the study is opened."""
    recipe = str(Path(recipe).resolve())
    base = resolve_paths(load_recipe(recipe, list(overrides)))
    if folds and base.tasks:
        raise RecipeError("--cv: cross-validation is for single-task recipes")
    params = tuple(load_space(space))
    metric = metric or base.training.early_stopping.metric
    out = Path(out or base.training.output_dir).resolve()
    s = Search(
        recipe,
        tuple(overrides),
        str(Path(space).resolve()),
        params,
        metric,
        lower_is_better(metric, base.training.early_stopping.mode),
        out,
        trials,
        sampler,
        pruner,
        folds,
        seed,
        timeout,
        storage,
        worker,
    )
    if sampler == "grid":
        check_grid(params, s.space_file)
    check_space(s)
    check_parent(out)
    preflight(base, output=False)  # trials write below --out, each into its own folder
    return s


def _run(s: Search, study, jobs: int) -> None:
    """Trials in this process and jobs - 1 more, until the study is done; a signal stops them all."""
    workers = []
    if jobs > 1:
        import multiprocessing

        tracking.prepare_store(resolve_paths(load_recipe(s.recipe, list(s.overrides))), s.out)  # workers would race

        ctx = multiprocessing.get_context("spawn")
        workers = [ctx.Process(target=work, args=(s,)) for _ in range(jobs - 1)]
        for w in workers:
            w.start()
    try:
        work(s, study)
    except Stopped as e:
        _stop_workers(workers)
        done = counted(study.get_trials(deepcopy=False))
        raise Interrupted(
            f"tune: interrupted by {e.name}; {done} trial(s) done and kept in {s.where}, "
            f"the stopped trial's settings run again: continue with the same command",
            e.signum,
        ) from None
    for w in workers:
        w.join()


def _stop_workers(workers) -> None:
    """Workers share the terminal's Ctrl-C but not a SIGTERM sent to this process: pass it on, then wait for each
    to mark its trial interrupted."""
    for w in workers:
        if w.is_alive():
            w.terminate()
    for w in workers:
        w.join(timeout=60)
        if w.is_alive():
            w.kill()


def _check_options(sampler, pruner, trials, jobs, seed, folds, timeout) -> None:
    """Counts checked before anything is read: one line naming the option."""
    if sampler not in SAMPLERS:
        raise RecipeError(f"--sampler: {sampler!r}; expected one of {list(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise RecipeError(f"--pruner: {pruner!r}; expected one of {list(PRUNERS)}")
    for name, value, lo, hi in (
        ("--trials", trials, 1, MAX_TRIALS),
        ("--jobs", jobs, 1, MAX_JOBS),
        ("--seed", seed, 0, SEED_MAX),
        ("--cv", folds, 2, MAX_FOLDS),
    ):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
            raise RecipeError(f"{name}: {value!r}; expected an integer from {lo} to {hi}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):  # nan passed `min=1`: no timeout at all
        raise RecipeError(f"--timeout: {timeout}; expected a positive number of seconds")


def _open_same_study(s: Search):
    """The study and the Search with the study's heartbeat; refused when the study has other settings. A --worker
    may name the recipe by another path (another machine); the space, --set, metric, sampler, pruner and --cv must
    match."""
    study = open_study(s, heartbeat=False)
    record = settings_record(s)
    before = study.user_attrs.get("settings")
    if not s.worker and "heartbeat" not in study.user_attrs:  # before `settings`, which workers wait for
        study.set_user_attr("heartbeat", s.heartbeat)  # one interval for every process: a grace period of its own
    if before is None:
        study.set_user_attr("settings", record)
    else:
        differ = sorted(k for k in record if record[k] != before.get(k) and not (s.worker and k == "recipe"))
        if differ:
            where = f"--out: {s.where}" if not s.storage else f"--storage {s.where}:"
            fix = "choose another --out or remove it" if not s.storage else "give this process the same settings"
            raise RecipeError(f"{where} holds a search with other settings ({', '.join(differ)} differ); {fix}")
    s = replace(s, heartbeat=int(study.user_attrs.get("heartbeat", s.heartbeat)))
    return open_study(s), s


def _shown(trials) -> list:
    """The trials a report lists: not those that stepped back before starting (they ran nothing)."""
    return [t for t in trials if not t.user_attrs.get("surplus")]


def _states(trials) -> dict[str, int]:
    from optuna.trial import TrialState

    return {
        st.name.lower(): sum(1 for t in trials if t.state == st)
        for st in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }


def write_results(s: Search, study, seconds: float) -> dict:
    from optuna.trial import TrialState

    trials = _shown(study.get_trials(deepcopy=False))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    result: dict[str, Any] = {
        "metric": s.metric,
        "direction": "minimize" if s.lower else "maximize",
        "trials": _states(trials),
        "seconds_this_call": seconds,
        "study": s.where,
    }
    if done:
        best = study.best_trial
        result["best"] = {
            "trial": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
        }
        data = _base_data(s)
        for k, v in best.params.items():
            apply_override(data, f"{k}={dump_value(v)}")
        data.setdefault("training", {})["output_dir"] = str(s.out / "best")
        data["training"].setdefault("early_stopping", {})["metric"] = s.metric
        header = (
            f"# Best of {len(done)} completed trials of `adapterkit tune` (trial {best.number}: validation {s.metric} "
            f"{best.value:.6g}).\n# Tuned keys: {', '.join(best.params)}; the rest is {Path(s.recipe).name}.\n"
        )
        atomic_write_text(s.out / "best_recipe.yaml", header + dump_yaml(data))
    rows = _rows(s, trials)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["trial"])
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(s.out / "trials.csv", buf.getvalue())
    atomic_write_text(s.out / "trials.md", _table(rows))
    result["importances"], note = _importances(study)
    if note:
        result["importances_note"] = note
    plots = _plots(s, study, result["importances"])
    atomic_write_text(s.out / "tune.json", json.dumps(result, indent=1, default=str))
    _report(s, result, rows, plots)
    return result


def _rows(s: Search, trials) -> list[dict]:
    """One row a trial; a shared search also says which machine ran it (its run folder is there, below its --out)."""
    keys = [p.key for p in s.params]
    again = retried(trials)
    rows = []
    for t in trials:
        dur = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        last = max(t.intermediate_values) if t.intermediate_values else None
        label = " (interrupted)" if t.user_attrs.get("interrupted") else " (process lost)" if t.number in again else ""
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower() + label,
                "value": t.value,
                "last_step": last,
                "seconds": round(dur, 1) if dur is not None else None,
                **{k: t.params.get(k) for k in keys},
                **({"host": t.user_attrs.get("host")} if s.storage else {}),
                "run_dir": t.user_attrs.get("run_dir"),
                "note": t.user_attrs.get("error")
                or (f"retry of {t.user_attrs['retry_of']}" if "retry_of" in t.user_attrs else ""),
            }
        )
    return rows


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _table(rows: list[dict]) -> str:
    if not rows:
        return "no trials\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _importances(study) -> tuple[dict, str | None]:
    import optuna

    try:
        return {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}, None
    except (ValueError, RuntimeError) as e:  # too few completed trials, or nothing varied
        return {}, str(e).splitlines()[0]


def _plots(s: Search, study, importances: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    out = s.out / "plots"
    out.mkdir(exist_ok=True)
    paths = []
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if done:
        xs, ys = [t.number for t in done], [t.value for t in done]
        ax.scatter(xs, ys, label="completed", color="tab:blue")
        best, run = [], None
        for y in ys:
            run = y if run is None or (y < run if s.lower else y > run) else run
            best.append(run)
        ax.step(xs, best, where="post", color="tab:red", label="best so far")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
            marker="x",
            color="grey",
            label="pruned (last value)",
        )
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {s.metric}")
    ax.set_title("optimisation history")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    paths.append(out / "history.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    if importances:
        fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(importances)))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:green")
        ax.set_xlabel("importance (share)")
        ax.set_title("parameter importances")
        fig.tight_layout()
        paths.append(out / "importances.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def _report(s: Search, result: dict, rows: list[dict], plots: list[Path]) -> None:
    import html

    best = result.get("best")
    parts = [
        "<html><head><meta charset='utf-8'><title>adapterkit tune</title></head><body>",
        f"<h1>adapterkit tune: {html.escape(Path(s.recipe).name)}</h1>",
        f"<p>Space {html.escape(s.space_file)}; sampler {s.sampler}, pruner {s.pruner}; metric validation "
        f"{html.escape(s.metric)} ({result['direction']}); trials {result['trials']}.</p>",
    ]
    if best:
        parts.append(
            f"<p>Best: trial {best['trial']}, {html.escape(s.metric)} = {best['value']:.6g}, "
            f"{html.escape(json.dumps(best['params']))} (best_recipe.yaml).</p>"
        )
    for p in plots:
        parts.append(f"<img src='plots/{p.name}' alt='{p.stem}'>")
    cols = list(rows[0]) if rows else []
    parts.append(
        "<table border='1' cellspacing='0' cellpadding='3'><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"
    )
    parts += ["<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>" for r in rows]
    parts.append("</table></body></html>")
    atomic_write_text(s.out / "report.html", "\n".join(parts))
