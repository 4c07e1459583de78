"""Fault injection: a re-train killed mid-way and a run killed during its final save never leave a run that eval,
predict or export accept; a second writer is refused while the first trains; a full disk (a small tmpfs, where this
machine lets the tests mount one) is one line, a finished run on it stays usable, and the same command succeeds
once space is freed. The killed trainings are real subprocesses."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adapterkit.training import checkpoint
from conftest import ROOT, run_cli, tiny_recipe, wait_for, write_sentiment

pytestmark = pytest.mark.slow  # every test here trains a model


def _main(*argv) -> tuple[int, list[str]]:
    code, err = run_cli(*argv)
    return code, [l for l in err.splitlines() if l.strip()]


def _recipe(tmp_path: Path, tiny_bert: Path, out: Path, name: str = "r.yaml", **sections) -> Path:
    files = write_sentiment(tmp_path)
    training = dict({"epochs": 2, "batch_size": 8, "checkpoint_every": 2}, **sections.pop("training", {}))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_bert, files, out, training=training, **sections)))
    return path


def _start(recipe: Path, pause: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **{checkpoint.SLEEP_ENV: pause})
    return subprocess.Popen([sys.executable, "-m", "adapterkit.cli", "train", str(recipe)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)





def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()


def _refused_everywhere(run: Path, tmp_path: Path, status: str) -> None:
    for argv in (["eval", str(run)], ["predict", str(run), "--text", "good"], ["export", str(run), "--out", str(tmp_path / "export")]):
        code, err = _main(*argv)
        assert code == 2 and len(err) == 1 and f"the run is {status}, not finished" in err[0], (argv, err)
    assert not (tmp_path / "export").exists()


def test_a_retrain_killed_midway_leaves_no_run_that_loads(tiny_bert, tmp_path):
    out = tmp_path / "run"
    first = _recipe(tmp_path, tiny_bert, out, "first.yaml")
    assert _main("train", str(first))[0] == 0
    # The same folder re-trained with another label order: killed while it trains, the new labels.json sits beside
    # the old weights.
    second = _recipe(tmp_path, tiny_bert, out, "second.yaml", task={"type": "sequence_classification", "labels": ["pos", "neg"]},
                     training={"overwrite": True})
    proc = _start(second, "4:300")
    wait_for(proc, lambda: (out / "checkpoints" / ".tmp-step-00000004" / "optimizer.safetensors").is_file())
    _kill(proc)
    assert json.loads((out / "labels.json").read_text())["labels"] == ["pos", "neg"]
    _refused_everywhere(out, tmp_path, "running")


def test_a_run_killed_during_its_final_save_is_not_usable_and_trains_again(tiny_bert, tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, tiny_bert, out)
    proc = _start(recipe, "final:300")  # the final weights are written, the run not yet marked finished
    wait_for(proc, lambda: (out / "head.safetensors").is_file())
    _kill(proc)
    _refused_everywhere(out, tmp_path, "running")
    code, err = _main("train", str(recipe), "--resume")  # from its last checkpoint, to the end
    assert code == 0, err
    assert _main("eval", str(out))[0] == 0


def test_a_second_writer_is_refused_while_the_first_trains(tiny_bert, tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, tiny_bert, out)
    proc = _start(recipe, "2:60")
    try:
        wait_for(proc, lambda: (out / "checkpoints" / ".tmp-step-00000002" / "optimizer.safetensors").is_file())
        code, err = _main("train", str(recipe), "--set", "training.overwrite=true")
        assert code == 2 and len(err) == 1, err
        assert f"in use by another adapterkit process (PID {proc.pid})" in err[0]
        assert not (out / "checkpoints" / "step-00000002").exists()  # the first writer's files were not touched
    finally:
        _kill(proc)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (root with mount rights only; skipped elsewhere)."""
    d = tmp_path / "disk"
    d.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip()[:80] or 'mount failed'})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_a_full_disk_is_one_line_and_loses_nothing(tiny_bert, tmp_path, small_disk):
    done = small_disk / "done"
    code, err = _main("train", str(_recipe(tmp_path, tiny_bert, done, "done.yaml", training={"checkpoint_every": None})))
    assert code == 0, err
    free = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 200_000))  # ~200 kB left: the tokenizer does not fit
    recipe = _recipe(tmp_path, tiny_bert, small_disk / "next", "next.yaml")
    code, err = _main("train", str(recipe))
    assert code == 2 and len(err) == 1 and "no space left on device" in err[0], err
    code, err = _main("eval", str(done))  # the finished run beside it is untouched
    assert code == 0, err
    filler.unlink()
    code, err = _main("train", str(recipe))  # the same command once space is freed
    assert code == 0, err
