"""The run-directory contract and the folder lock: a folder adapterkit did not create is never cleared, one writer
per output folder (a dead holder's lock is taken over), an unexpected error is one line with the traceback in the
run's log, and pickled weights are never read, whatever stray .safetensors file sits beside them."""
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

import adapterkit.training.loop as loop
from adapterkit.runs.lock import LOCK_NAME, locked
from helpers import cli, tiny_recipe, write_recipe, write_sentiment


def _recipe(tmp_path: Path, tiny_bert: Path, out: Path, **sections) -> str:
    """A tiny recipe on 16 training rows, written to tmp_path/r.yaml."""
    files = write_sentiment(tmp_path, n_train=16, n_val=8)
    return str(write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_bert, files, out, **sections)))


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tiny_bert, tmp_path):
    out = tmp_path / "run"
    with locked(out, "training.output_dir"):
        res = cli("train", _recipe(tmp_path, tiny_bert, out))
    assert res.code == 2 and len(res.err_lines) == 1, res.err_lines
    assert f"training.output_dir: {out} is in use by another adapterkit process (PID {os.getpid()})" in res.err_lines[0]
    assert not (out / "run.json").exists()  # nothing was started


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text("999999")  # a lock file whose holder died: no flock is held on it
    with locked(tmp_path, "training.output_dir"):
        assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())


def test_a_folder_adapterkit_did_not_create_keeps_its_files(tiny_bert, tmp_path):
    out = tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "notes.txt").write_text("keep me")
    for overwrite in ("false", "true"):
        res = cli("train", _recipe(tmp_path, tiny_bert, out), "--set", f"training.overwrite={overwrite}")
        assert res.code == 2 and "is not an adapterkit run" in res.err_lines[0], res.err_lines
    assert (out / "checkpoints" / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_an_unexpected_error_is_one_line_with_the_traceback_in_the_run_log(tiny_bert, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("boom in evaluation")

    monkeypatch.setattr(loop, "score", broken)
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, tiny_bert, out, training={"epochs": 1})
    res = cli("train", recipe)
    err = res.err_lines
    assert res.code == 1 and len(err) == 1, err
    assert "unexpected RuntimeError: boom in evaluation" in err[0] and str(out / "log.jsonl") in err[0] and "--debug" in err[0]
    events = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "error" and "Traceback" in events[-1]["traceback"] and "broken" in events[-1]["traceback"]
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "failed" and "boom" in info["error"]
    res = cli("eval", str(out))  # a failed run is not usable
    assert res.code == 2 and "the run is failed, not finished" in res.err_lines[0], res.err_lines
    with pytest.raises(RuntimeError, match="boom"):  # --debug: the traceback itself
        cli("train", recipe, "--set", "training.overwrite=true", "--debug")


class _Payload:
    """Unpickling this creates a file: proof that a pickle was read."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickle_folder(tmp_path: Path, tiny_bert: Path, marker: Path) -> Path:
    from safetensors.torch import save_file
    import torch

    d = tmp_path / "pickled"
    d.mkdir()
    for name in os.listdir(tiny_bert):
        if name != "model.safetensors":
            shutil.copy(tiny_bert / name, d / name)
    (d / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    save_file({"x": torch.zeros(1)}, str(d / "extra.safetensors"))  # a stray small safetensors file beside the pickle
    return d


def test_pickled_weights_beside_a_stray_safetensors_file_are_never_unpickled(tiny_bert, tmp_path):
    from transformers import AutoModel

    from adapterkit.errors import ModelError
    from adapterkit.model import recipe_from_dict
    from adapterkit.model.backbone import load_model

    marker = tmp_path / "PWNED"
    folder = _pickle_folder(tmp_path, tiny_bert, marker)
    res = cli("train", _recipe(tmp_path, tiny_bert, tmp_path / "out"), "--set", f"backbone.path={folder}")
    assert res.code == 2 and "has no model.safetensors weights (found ['pytorch_model.bin'])" in res.err_lines[0], res.err_lines
    # Past preflight too: the loader itself asks transformers for safetensors only.
    cfg = recipe_from_dict(tiny_recipe(folder, write_sentiment(tmp_path), tmp_path / "out")).backbone
    with pytest.raises(ModelError, match="backbone.path: cannot load weights"):
        load_model(cfg, AutoModel)
    assert not marker.exists()
