"""`adapterkit tune --storage URL [--worker]`: one search shared by several processes through PostgreSQL (a
throwaway server in a temporary folder), a worker SIGKILLed mid-trial whose settings run again on another
process, and a database URL that cannot connect as one line with its password masked."""
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from helpers import cli, cli_start, tiny_recipe, write_sentiment

TRIALS = 4


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def _install_postgres() -> str:
    """Debian's server, where this runs as root with apt-get (bounded in time); else why not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not installed, and installing it needs root and apt-get"
    try:
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], capture_output=True, timeout=300,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        return f"apt-get install postgresql failed: {str(e)[:200]}"
    return "" if _postgres_bin() else "apt-get installed no pg_ctl"


@pytest.fixture
def postgres():
    """A PostgreSQL server listening only on a unix socket in a private folder; yields the URL of an empty database.
    The server refuses to run as root: as root it runs as the `postgres` user."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        why = _install_postgres()
        bin_dir = _postgres_bin()
        if bin_dir is None:
            pytest.skip(f"PostgreSQL server not available: {why}")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="adapterkit-pg-"))  # short: a unix socket path has ~100 characters
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("PostgreSQL server not available: it does not run as root and there is no `postgres` user")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"

    def pg(*argv, timeout=60):
        return subprocess.run([*as_user, *map(str, argv)], capture_output=True, text=True, timeout=timeout)

    started = False
    try:
        res = pg(bin_dir / "initdb", "-D", data, "-A", "trust", "-U", "adapterkit", "--no-sync", "-E", "UTF8")
        assert res.returncode == 0, res.stderr[-1000:]
        res = pg(bin_dir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-t", "60", "-o",
                 f"-k {folder} -c listen_addresses= -c fsync=off -c full_page_writes=off", "start")
        started = res.returncode == 0
        assert started, res.stdout[-500:] + (folder / "log").read_text()[-1000:]
        import psycopg

        with psycopg.connect(host=str(folder), user="adapterkit", dbname="postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE study")
        yield f"postgresql://adapterkit@/study?host={folder}"  # plain postgresql://: adapterkit picks psycopg 3
    finally:
        if started:
            pg(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _study(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = optuna.get_all_study_names(storage=url.replace("postgresql://", "postgresql+psycopg://"))
    if "adapterkit" not in names:
        return None
    return optuna.load_study(study_name="adapterkit", storage=url.replace("postgresql://", "postgresql+psycopg://"))


@pytest.mark.slow
def test_workers_share_a_study_and_a_killed_workers_trial_runs_again(tiny_bert, tmp_path, postgres):
    from optuna.trial import TrialState

    files = write_sentiment(tmp_path, n_train=32, n_val=16)
    r = tmp_path / "r.yaml"
    r.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, files, tmp_path / "unused",
                                            training={"epochs": 1, "batch_size": 16, "eval_every": 1})))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"training.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True}}))
    env = {"ADAPTERKIT_TUNE_HEARTBEAT": 1, "OMP_NUM_THREADS": 1}  # failed 4 s after its last heartbeat
    argv = ["tune", r, "--space", space, "--trials", TRIALS, "--sampler", "random", "--pruner", "none",
            "--storage", postgres]
    # All at once: workers that start first wait for the coordinator's study.
    coordinator = cli_start(*argv, "--out", tmp_path / "coordinator", env=env, start_new_session=True)
    outs = {tmp_path / f"worker-{i}": cli_start(*argv, "--worker", "--out", tmp_path / f"worker-{i}", env=env,
                                                start_new_session=True) for i in (1, 2)}
    procs = [coordinator, *outs.values()]
    try:
        deadline = time.monotonic() + 180
        while (study := _study(postgres)) is None:
            assert coordinator.poll() is None and time.monotonic() < deadline, coordinator.stderr.read()[-2000:]
            time.sleep(0.2)
        # A worker mid-trial: its trial is RUNNING in the study and training has written its log.
        victim = killed = None
        while victim is None:
            assert time.monotonic() < deadline, "no worker started a trial"
            running = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
            for out, proc in outs.items():
                for n, t in running.items():
                    if (out / "trials" / f"trial-{n:04d}" / "log.jsonl").is_file() and t.params:
                        victim, killed = proc, t
            time.sleep(0.1)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        for p in procs:
            if p is not victim:
                _, err = p.communicate(timeout=300)
                assert p.returncode == 0, err[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == TRIALS and not any(t.state == TrialState.RUNNING for t in trials)
    assert len({t.params["training.lr"] for t in complete}) == TRIALS  # no settings ran twice to completion
    dead = next(t for t in trials if t.number == killed.number)
    assert dead.state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    # The results are the coordinator's; workers write only their trials' run folders.
    summary = json.loads((tmp_path / "coordinator" / "tune.json").read_text())
    assert summary["trials"]["complete"] == TRIALS and summary["study"].startswith("postgresql://adapterkit@/study")
    assert "(process lost)" in (tmp_path / "coordinator" / "trials.md").read_text()
    for out in outs:
        assert not (out / "tune.json").exists() and not (out / "best_recipe.yaml").exists()
    ran = {t.number: out for out in [tmp_path / "coordinator", *outs] for t in complete
           if (out / "trials" / f"trial-{t.number:04d}" / "run.json").is_file()}
    assert sorted(ran) == sorted(t.number for t in complete)  # each completed trial's folder is where it ran


def test_a_storage_url_that_cannot_connect_is_one_line_without_its_password(tiny_bert, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = write_sentiment(tmp_path, n_train=8, n_val=8)
    r = tmp_path / "r.yaml"
    r.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, files, tmp_path / "out")))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"training.lr": {"low": 1.0e-3, "high": 1.0e-2}}))
    url = f"postgresql://user:s3cret@127.0.0.1:{port}/db"
    t0 = time.monotonic()
    res = cli("tune", r, "--space", space, "--storage", url)
    assert res.code == 2 and len(res.err_lines) == 1, res.err
    assert res.err_lines[0].startswith(f"adapterkit: error: --storage postgresql://user:***@127.0.0.1:{port}/db: ")
    assert "s3cret" not in res.err + res.out and time.monotonic() - t0 < 30
    for bad, expected in (("postgresql+nosuch://u:pw@h/db", "unknown database or driver name"),
                          ("nonsense", "not a database URL")):
        res = cli("tune", r, "--space", space, "--storage", bad)
        assert res.code == 2 and len(res.err_lines) == 1 and expected in res.err_lines[0], res.err
        assert ":pw@" not in res.err
    monkeypatch.setenv("ADAPTERKIT_TUNE_HEARTBEAT", "0")
    res = cli("tune", r, "--space", space, "--out", tmp_path / "study")
    assert res.code == 2 and res.err_lines == ["adapterkit: error: ADAPTERKIT_TUNE_HEARTBEAT='0': expected a whole "
                                                "number of seconds from 1 to 3600"]
    res = cli("tune", r, "--space", space, "--worker")
    assert res.code == 2 and res.err_lines == ["adapterkit: error: --worker: needs --storage URL, the database of "
                                                "the search to join"]


def test_a_lost_trial_is_retried_at_most_three_times_and_only_the_last_failure_counts():
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from adapterkit.tuning.study import MAX_RETRIES, counted, retry_stale

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    dist = {"training.lr": FloatDistribution(1e-4, 1e-2)}
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, params={"training.lr": 1e-3}, distributions=dist))
    lost = {"training.lr": 2e-3}
    study.add_trial(create_trial(state=TrialState.FAIL, params=lost, distributions=dist))  # its process died
    dead = study.get_trials()[-1]
    for attempt in range(MAX_RETRIES + 1):
        retry_stale(study, dead)  # what the heartbeat check calls after failing the trial
        queued = study.get_trials(states=(TrialState.WAITING,))
        if attempt == MAX_RETRIES:
            assert not queued  # the settings themselves kill their process: the failure stays and counts
            assert counted(study.get_trials()) == 2
            break
        assert len(queued) == 1 and queued[0].user_attrs == {"retry_of": dead.number}
        assert queued[0].system_attrs["fixed_params"] == lost
        assert counted(study.get_trials()) == 1  # settings queued again: the lost trial does not count
        study._storage.set_trial_state_values(queued[0]._trial_id, TrialState.RUNNING)
        study._storage.set_trial_state_values(queued[0]._trial_id, TrialState.FAIL)  # dies before choosing
        dead = study.get_trials()[-1]


def test_a_trial_failed_a_moment_ago_and_not_yet_queued_again_is_in_flight_not_done():
    """Optuna fails a stale trial first and queues its settings (retry_stale) after: in between, a process that
    counted it as a failure of its own ended the search one result short."""
    import datetime

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from adapterkit.tuning.study import counted, lost_just_now

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    dist = {"training.lr": FloatDistribution(1e-4, 1e-2)}
    now = datetime.datetime.now()
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, params={"training.lr": 1e-3},
                                 distributions=dist))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"training.lr": 2e-3}, distributions=dist))
    lost = study.get_trials()[-1]
    trials = study.get_trials()
    assert lost.datetime_complete is not None and (now - lost.datetime_complete).total_seconds() < 1
    assert counted(trials) == 2 and lost_just_now(trials, heartbeat=5) == 1  # done - lost: one result, not two
    assert lost_just_now(trials, heartbeat=0) == 0  # a heartbeat later nobody queued it: it counts as failed
    ended = create_trial(state=TrialState.FAIL, params={"training.lr": 3e-3}, distributions=dist,
                         user_attrs={"ended": True})  # failed by itself in its own process
    study.add_trial(ended)
    assert lost_just_now(study.get_trials(), heartbeat=5) == 1
    study.enqueue_trial({"training.lr": 2e-3}, user_attrs={"retry_of": lost.number})  # retry_stale's requeue
    assert lost_just_now(study.get_trials(), heartbeat=5) == 0 and counted(study.get_trials()) == 2
