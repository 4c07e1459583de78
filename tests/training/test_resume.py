"""Checkpoints and exact resume: SIGKILL mid-epoch and during a checkpoint save, then `--resume` gives the same
final adapter and head weights, bit for bit, as a run that was never interrupted. The killed runs are real
subprocesses; the reference and the resumed runs go through the same CLI in this process (faster)."""
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapterkit.training import checkpoint
from helpers import ROOT, cli, cli_start, tiny_recipe, wait_for, write_recipe, write_sentiment

pytestmark = pytest.mark.slow  # every test here trains a model

# 64 examples / batch 8 = 8 steps per epoch; 3 epochs = 24 steps; a checkpoint every 2 steps; LoRA dropout on,
# length-grouped shuffling on, evaluation (and best-state tracking) at each epoch end.
TRAINING = {"epochs": 3, "batch_size": 8, "checkpoint_every": 2, "keep_checkpoints": 2, "log_every": 3}
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # the killed trainings' environment, over this one's


@pytest.fixture(scope="module")
def setup(tiny_bert, tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    files = write_sentiment(d)

    def recipe(name: str, **training) -> Path:
        r = tiny_recipe(tiny_bert, files, d / name, training={**TRAINING, **training}, adapter={"dropout": 0.1})
        return write_recipe(d / f"{name}.yaml", r)

    ref = recipe("reference", keep_checkpoints=12)  # every checkpoint stays: tests resume from chosen steps
    res = cli("train", ref)
    assert res.code == 0, res.err
    return d, recipe


def _start_and_kill(recipe: Path, run: Path, ready, sleep_spec: str):
    """Start training, wait until `ready(run)` is true, SIGKILL it."""
    proc = cli_start("train", recipe, cwd=ROOT, stdout=subprocess.DEVNULL, env={**ENV, checkpoint.SLEEP_ENV: sleep_spec})
    wait_for(proc, lambda: ready(run), "the kill point")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    proc.stderr.close()


def _final_weights(run: Path) -> dict:
    out = {f"adapter/{k}": v for k, v in load_file(run / "adapter" / "adapter_model.safetensors").items()}
    out.update({f"head/{k}": v for k, v in load_file(run / "head.safetensors").items()})
    return out


def _assert_bit_identical(run: Path, ref: Path):
    a, b = _final_weights(run), _final_weights(ref)
    assert a.keys() == b.keys() and len(a) > 4
    # bit for bit: compare the raw bytes (torch.equal on floats would call -0.0 == 0.0)
    different = [k for k in a if not (a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                                      and torch.equal(a[k].contiguous().view(torch.uint8), b[k].contiguous().view(torch.uint8)))]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"
    ma, mb = (json.loads((r / "metrics.json").read_text()) for r in (run, ref))
    assert ma["validation"] == mb["validation"]
    assert ma["train"]["steps"] == mb["train"]["steps"] == 24 and ma["train"]["best_step"] == mb["train"]["best_step"]


def test_sigkill_mid_epoch_then_resume_is_bit_exact(setup):
    d, recipe = setup
    r = recipe("killed")
    run = d / "killed"
    # Step 12 is the middle of epoch 2 (after an evaluation at step 8); the save at step 14 would stall, so the kill
    # lands between the two: somewhere in steps 13-14 of training.
    _start_and_kill(r, run, lambda run: (run / "checkpoints" / "step-00000012").is_dir(), "14:300")
    found = [p.name for p in checkpoint.list_checkpoints(run)]
    assert found[-1] == "step-00000012" and "step-00000008" in found  # last K=2 (10, 12) + the best evaluation (8)
    assert found == ["step-00000008", "step-00000010", "step-00000012"]
    state = checkpoint.verify(run / "checkpoints" / "step-00000012")
    assert state["streams"]["main"] == {"epoch": 1, "batch": 4} and state["has_best"]
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    assert not (run / "adapter").exists()

    res = cli("train", r)  # without --resume: refuses to start over the checkpoints
    assert res.code == 2 and "holds checkpoints of an unfinished run" in res.err and "--resume" in res.err

    res = cli("train", r, "--resume")
    assert res.code == 0, res.err
    _assert_bit_identical(run, d / "reference")
    events = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "resume" and e["step"] == 12 for e in events)

    res = cli("train", r, "--resume")  # a finished run has nothing to resume
    assert res.code == 2 and "holds a finished run" in res.err


def test_sigkill_during_checkpoint_save_keeps_previous_checkpoint(setup):
    d, recipe = setup
    r = recipe("killed_in_save")
    run = d / "killed_in_save"
    tmp = run / "checkpoints" / ".tmp-step-00000006"
    # The save of step 6 sleeps after its tensors are written and before the rename: kill it there.
    _start_and_kill(r, run, lambda run: (tmp / "optimizer.safetensors").is_file(), "6:300")
    assert tmp.is_dir() and not (tmp / "state.json").exists()  # the half-written checkpoint
    found = checkpoint.list_checkpoints(run)
    assert [p.name for p in found] == ["step-00000002", "step-00000004"]
    # The previous checkpoint is complete and loads: every file, including the optimizer state.
    state = checkpoint.verify(found[-1])
    assert state["position"]["step"] == 4 and state["streams"]["main"]["batch"] == 4
    assert checkpoint.resolve_resume(run, "latest") == found[-1]

    res = cli("train", r, "--resume", found[-1])
    assert res.code == 0, res.err
    assert not tmp.exists()  # the next save cleaned the half-written folder up
    _assert_bit_identical(run, d / "reference")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_training_writes_a_checkpoint_then_resume_is_bit_exact(setup, sig):
    """Ctrl-C (SIGINT) or SIGTERM: the step in progress finishes, a checkpoint of it is written, the command exits
    128 + the signal number with one line saying how to continue; --resume then ends bit-identical. A changed
    batch size is refused on resume (the restored state would ignore it)."""
    d, recipe = setup
    name = f"signalled_{sig.name}"
    r, run = recipe(name), d / name
    # The save of step 12 pauses 2 s: the signal lands during it or in the steps right after.
    proc = cli_start("train", r, cwd=ROOT, stdout=subprocess.DEVNULL, env={**ENV, checkpoint.SLEEP_ENV: "12:2"})
    wait_for(proc, lambda: (run / "checkpoints" / ".tmp-step-00000012" / "optimizer.safetensors").is_file(), "step 12")
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=120)
    err = [l for l in stderr.splitlines() if l.strip()]
    assert proc.returncode == 128 + sig, stderr[-2000:]
    assert len(err) == 1 and f"interrupted by {sig.name} at step" in err[0] and "--resume" in err[0], err
    info = json.loads((run / "run.json").read_text())
    step = info["step"]
    assert info["status"] == "interrupted" and 12 <= step < 24
    assert checkpoint.list_checkpoints(run)[-1].name == f"step-{step:08d}"
    assert json.loads((run / "log.jsonl").read_text().splitlines()[-1])["event"] == "interrupted"

    res = cli("eval", run)  # not a usable run until it finishes
    assert res.code == 2 and "the run is interrupted, not finished" in res.err
    res = cli("train", r, "--resume", "--set", "training.batch_size=4")
    assert res.code == 2 and res.err.strip().count("\n") == 0 and "the recipe changed" in res.err, res.err
    assert "training.batch_size: 8 -> 4" in res.err, res.err
    res = cli("train", r, "--resume")
    assert res.code == 0, res.err
    _assert_bit_identical(run, d / "reference")


def test_checkpoints_hold_no_pickles_and_only_trainable_weights(setup):
    d, _ = setup
    run = d / "reference"  # a finished run keeps its last K checkpoints (+ the best); no file in it is a pickle
    files = [p for p in run.rglob("*") if p.is_file()]
    assert files
    for p in files:
        head = p.read_bytes()[:2]
        # torch.save / pickle files start with a zip header or the pickle protocol opcode.
        assert head not in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"), p
        assert p.suffix not in (".bin", ".pt", ".pth", ".pkl", ".ckpt"), p
    ckpts = checkpoint.list_checkpoints(run)
    assert [p.name for p in ckpts][-2:] == ["step-00000020", "step-00000022"]
    weights = load_file(ckpts[-1] / "trainable.safetensors")
    assert weights and all(("lora_" in k) or ("classifier" in k) or ("pooler" in k) for k in weights)
    n_ckpt = sum(v.numel() for v in weights.values())
    assert n_ckpt == json.loads((run / "run.json").read_text())["trainable_params"]


def test_resume_errors_are_one_line(setup, tmp_path):
    d, recipe = setup
    r = recipe("never_ran")
    res = cli("train", r, "--resume")
    assert res.code == 2
    assert res.err.strip().count("\n") == 0 and "--resume: " in res.err and "no checkpoint" in res.err
    # a truncated checkpoint file is named
    bad = tmp_path / "run" / "checkpoints" / "step-00000002"
    src = checkpoint.list_checkpoints(d / "reference")[-1]
    bad.mkdir(parents=True)
    for f in src.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = (bad / "optimizer.safetensors").read_bytes()
    (bad / "optimizer.safetensors").write_bytes(data[: len(data) // 2])
    res = cli("train", r, "--resume", bad)
    assert res.code == 2 and res.err.strip().count("\n") == 0
    assert "optimizer.safetensors is corrupted or truncated" in res.err


def test_resume_at_an_epoch_boundary_in_process(setup):
    """Step 8 ends epoch 1: the checkpoint resumes at the start of epoch 2 (sampler state after the epoch)."""
    import shutil

    from adapterkit.config import resolve_paths
    from adapterkit.model import load_recipe
    from adapterkit.training import train

    d, recipe = setup
    r = recipe("from_epoch_end")
    run = d / "from_epoch_end"
    src = d / "reference" / "checkpoints" / "step-00000008"
    assert checkpoint.verify(src)["streams"]["main"] == {"epoch": 1, "batch": 0}
    shutil.copytree(src, run / "checkpoints" / src.name)
    train(resolve_paths(load_recipe(r)), resume="latest")
    _assert_bit_identical(run, d / "reference")
