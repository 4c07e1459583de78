"""Fault injection: a re-train killed mid-way and a run killed during its final save never leave a run that eval,
predict or export accept; a second writer is refused while the first trains; a full disk (a small tmpfs, where this
machine lets the tests mount one) is one line, a finished run on it stays usable, and the same command succeeds
once space is freed. The killed trainings are real subprocesses."""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from adapterkit.training import checkpoint
from helpers import ROOT, cli, cli_start, tiny_recipe, wait_for, write_recipe, write_sentiment

pytestmark = pytest.mark.slow  # every test here trains a model

ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # the killed trainings' environment, over this one's


def _recipe(tmp_path: Path, tiny_bert: Path, out: Path, name: str = "r.yaml", **sections) -> Path:
    """A checkpointing tiny recipe (every 2 steps, 2 epochs) written to tmp_path/name, beside its sentiment files."""
    files = write_sentiment(tmp_path)
    training = dict({"epochs": 2, "batch_size": 8, "checkpoint_every": 2}, **sections.pop("training", {}))
    return write_recipe(tmp_path / name, tiny_recipe(tiny_bert, files, out, training=training, **sections))


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()


def _refused_everywhere(run: Path, tmp_path: Path, status: str) -> None:
    for argv in (["eval", str(run)], ["predict", str(run), "--text", "good"], ["export", str(run), "--out", str(tmp_path / "export")]):
        res = cli(*argv)
        assert res.code == 2 and len(res.err_lines) == 1 and f"the run is {status}, not finished" in res.err_lines[0], (argv, res.err)
    assert not (tmp_path / "export").exists()


def test_a_retrain_killed_midway_leaves_no_run_that_loads(tiny_bert, tmp_path):
    out = tmp_path / "run"
    first = _recipe(tmp_path, tiny_bert, out, "first.yaml")
    assert cli("train", first).code == 0
    # The same folder re-trained with another label order: killed while it trains, the new labels.json sits beside
    # the old weights.
    second = _recipe(tmp_path, tiny_bert, out, "second.yaml", task={"type": "sequence_classification", "labels": ["pos", "neg"]},
                     training={"overwrite": True})
    proc = cli_start("train", second, cwd=ROOT, stdout=subprocess.DEVNULL, env={**ENV, checkpoint.SLEEP_ENV: "4:300"})
    wait_for(proc, lambda: (out / "checkpoints" / ".tmp-step-00000004" / "optimizer.safetensors").is_file())
    _kill(proc)
    assert json.loads((out / "labels.json").read_text())["labels"] == ["pos", "neg"]
    _refused_everywhere(out, tmp_path, "running")


def test_a_run_killed_during_its_final_save_is_not_usable_and_trains_again(tiny_bert, tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, tiny_bert, out)
    # sleeps once the final weights are written, the run not yet marked finished
    proc = cli_start("train", recipe, cwd=ROOT, stdout=subprocess.DEVNULL, env={**ENV, checkpoint.SLEEP_ENV: "final:300"})
    wait_for(proc, lambda: (out / "head.safetensors").is_file())
    _kill(proc)
    _refused_everywhere(out, tmp_path, "running")
    res = cli("train", recipe, "--resume")  # from its last checkpoint, to the end
    assert res.code == 0, res.err_lines
    assert cli("eval", out).code == 0


def test_a_second_writer_is_refused_while_the_first_trains(tiny_bert, tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, tiny_bert, out)
    proc = cli_start("train", recipe, cwd=ROOT, stdout=subprocess.DEVNULL, env={**ENV, checkpoint.SLEEP_ENV: "2:60"})
    try:
        wait_for(proc, lambda: (out / "checkpoints" / ".tmp-step-00000002" / "optimizer.safetensors").is_file())
        res = cli("train", recipe, "--set", "training.overwrite=true")
        assert res.code == 2 and len(res.err_lines) == 1, res.err_lines
        assert f"in use by another adapterkit process (PID {proc.pid})" in res.err_lines[0]
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
    res = cli("train", _recipe(tmp_path, tiny_bert, done, "done.yaml", training={"checkpoint_every": None}))
    assert res.code == 0, res.err_lines
    free = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 200_000))  # ~200 kB left: the tokenizer does not fit
    recipe = _recipe(tmp_path, tiny_bert, small_disk / "next", "next.yaml")
    res = cli("train", recipe)
    assert res.code == 2 and len(res.err_lines) == 1 and "no space left on device" in res.err_lines[0], res.err_lines
    res = cli("eval", done)  # the finished run beside it is untouched
    assert res.code == 0, res.err_lines
    filler.unlink()
    res = cli("train", recipe)  # the same command once space is freed
    assert res.code == 0, res.err_lines
