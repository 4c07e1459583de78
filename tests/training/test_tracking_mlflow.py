"""`training.trackers: [mlflow]`: one MLflow run per training run in a real local store, read back with MlflowClient."""
import json
import subprocess
import sys

import pytest

from adapterkit.errors import RecipeError
from helpers import ROOT, cli_process, tiny_recipe, write_recipe, write_sentiment

mlflow = pytest.importorskip("mlflow")

# The real process's terminal is checked too; MLflow's usage telemetry is off in tests (no network here).
ENV = {"HF_HUB_OFFLINE": "1", "ADAPTERKIT_PROGRESS": "0", "ADAPTERKIT_DEBUG": None, "MLFLOW_TRACKING_URI": None,
       "MLFLOW_EXPERIMENT_NAME": None, "MLFLOW_DISABLE_TELEMETRY": "true"}


def _history(client, run, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


@pytest.fixture(scope="module")
def series(tiny_bert, tmp_path_factory):
    """`adapterkit train --seeds 0,1` with `trackers: [mlflow]` in a real process, the default store."""
    tmp = tmp_path_factory.mktemp("mlflow")
    files = write_sentiment(tmp, n_train=16, n_val=8)
    out = tmp / "series"
    r = tiny_recipe(tiny_bert, files, out, training={"epochs": 2, "eval_every": 2, "log_every": 1, "trackers": ["mlflow"]})
    # Run from the temporary folder (mlflow's own default store would be ./mlflow.db there), this checkout's code.
    env = dict(ENV, PYTHONPATH=str(ROOT))
    res = cli_process("train", write_recipe(tmp / "r.yaml", r), "--seeds", "0,1", cwd=tmp, env=env, timeout=240)
    assert res.returncode == 0, res.stderr
    return out, r, res


@pytest.mark.slow
def test_each_seed_is_its_own_tracked_run_with_recipe_and_metrics(series):
    out, r, res = series
    # Store set-up and migration notes go to the log, never to the terminal.
    noise = [l for l in (res.stdout + res.stderr).splitlines() if any(w in l for w in ("INFO", "alembic", "mlflow."))]
    assert not noise, noise
    store = out / "trackers" / "mlflow.db"  # the default store: one per series, in its folder
    assert store.is_file() and not (out.parent / "mlflow.db").exists() and not (out.parent / "mlruns").exists()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    exp = client.get_experiment_by_name("series")
    runs = {run.info.run_name: run for run in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == ["seed-0", "seed-1"]
    for seed in (0, 1):
        run, run_dir = runs[f"seed-{seed}"], out / f"seed-{seed}"
        assert run.info.status == "FINISHED"
        assert run.data.tags["seed"] == str(seed) and run.data.tags["adapterkit.run_dir"] == str(run_dir.resolve())
        assert run.data.tags["adapterkit.series"] == str(out.resolve())
        assert float(run.data.params["training.lr"]) == r["training"]["lr"]
        assert run.data.params["training.seed"] == str(seed) and run.data.params["adapter.method"] == "lora"
        log = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines()]
        evals = [e for e in log if e.get("event") == "eval" and e.get("split", "validation") == "validation"]
        steps = [e for e in log if "event" not in e and "step" in e]
        assert len(evals) >= 2 and len(steps) >= 4
        for key in ("accuracy", "loss"):
            assert _history(client, run, f"validation/{key}") == sorted((e["step"], pytest.approx(e[key])) for e in evals)
        assert _history(client, run, "train/loss") == sorted((e["step"], pytest.approx(e["loss"])) for e in steps)
        final = json.loads((run_dir / "metrics.json").read_text())
        assert run.data.metrics["final/validation/accuracy"] == pytest.approx(final["validation"]["accuracy"])


@pytest.mark.slow
def test_runs_of_two_folders_in_one_user_store_stay_apart(series, tmp_path, monkeypatch):
    """MLFLOW_TRACKING_URI shared by series in different folders of the same name; long and many recipe values."""
    from adapterkit.training import mlflow_run, tracking

    # The series' store stands in for the user's: creating an MLflow SQLite store takes seconds.
    uri = f"sqlite:///{series[0] / 'trackers' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    config = {f"p.k{i}": i for i in range(150)} | {"data.text": "x" * 10_000, "odd key (a,b)": "v"}
    started = []
    for parent in ("a", "b"):
        root = tmp_path / parent / "study"
        with tracking.series(root, root / "trials", trial=3, study="study"):
            s = tracking._series.get()
        run = mlflow_run.MlflowRun(root / "trials" / "trial-0003", {"adapterkit.series": str(root), **s.tags},
                                   s.root, s.names_from)
        run.start()
        run.store_init_configuration(config)
        run.log({"train/loss": 0.5, "validation/f1 (pos|neg)": 1.0, "flag": True}, step=2)
        started.append(run)
    started[0].completed = True
    started[0].finish()
    mlflow_run.end_open("FAILED")  # what a failed training leaves: ended, not RUNNING
    assert not (tmp_path / "a" / "study" / "trackers").exists()  # the user's store only

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert len(found) == 2 and {r.info.run_name for r in found} == {"trial-0003"}
    assert {r.data.tags["adapterkit.series"] for r in found} == {str(tmp_path / p / "study") for p in "ab"}
    assert {r.info.status for r in found} == {"FINISHED", "FAILED"}
    for r in found:
        assert r.data.tags["trial"] == "3" and r.data.tags["study"] == "study"
        assert len(r.data.params) == 152 and r.data.params["p.k149"] == "149"
        assert len(r.data.params["data.text"]) == 6000 and r.data.params["data.text"].endswith("...")
        assert r.data.params["odd key _a_b_"] == "v"
        assert r.data.metrics == {"train/loss": 0.5, "validation/f1 _pos_neg_": 1.0}


def test_missing_mlflow_names_the_package_to_install(monkeypatch):
    import accelerate.tracking

    from adapterkit.training.tracking import check_trackers

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(RecipeError, match=r"'mlflow' needs its package installed \(pip install mlflow-skinny\)"):
        check_trackers(["mlflow"])


def test_help_does_not_import_mlflow():
    code = ("import sys\nfrom adapterkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'mlflow'], 'adapterkit --help imported mlflow'\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_a_store_mlflow_cannot_open_is_one_line(tmp_path, monkeypatch):
    from adapterkit.training.mlflow_run import MlflowRun

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://store")
    with pytest.raises(RecipeError, match=r"^training.trackers: MLflow store nosuch://store \(MLFLOW_TRACKING_URI\): \S[^\n]+$"):
        MlflowRun(tmp_path / "run", {}).open_experiment()
