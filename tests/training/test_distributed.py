"""Runs over several processes equal one process: DDP on one machine, two machines (two launchers on 127.0.0.1, as two
machines would), and elastic resume (a checkpoint of 2 processes continued by 1, and of 1 by 2).
The same for DeepSpeed ZeRO-3 (recipes/accelerate/deepspeed-zero3.yaml on CPU), within 1e-4.

One process with batch 2B == two CPU processes (gloo, recipes/accelerate/cpu-multiprocess.yaml) with batch B each.
Same seed, no dropout anywhere: the final adapter and head weights agree and the logged (cross-process reduced)
losses match. This exercises data sharding (incl. length grouping over the global batch), gradient averaging, the LR
schedule's step count and main-process-only writing. Not bit-exact: two processes average their own batch means
(all-reduce), one process takes one mean over the whole batch; the same terms summed in another order."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, cli_process, cli_start, one_error_line, tiny_recipe, write_recipe, write_sentiment

B = 4


def _free_port() -> int:
    with socket.socket() as s:  # other test runs may share the machine: never assume 29500 is free
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _failed(proc) -> str:
    return f"{' '.join(proc.args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    out = {f"adapter/{k}": v for k, v in load_file(run / "adapter" / "adapter_model.safetensors").items()}
    out.update({f"head/{k}": v for k, v in load_file(run / "head.safetensors").items()})
    return out


def _worst(a: Path, b: Path) -> float:
    """The largest difference between two runs' final adapter and head weights."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and any("lora_A" in k for k in wa)
    return max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r and "event" not in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_nodrop) -> dict:
    """The recipes (the same but for the batch: 2B for one process, B for each of two) and the one-process run, which
    every test here compares with. Checkpoints every 3 of the 12 steps, all kept (the elastic tests resume from them)."""
    d = tmp_path_factory.mktemp("distributed")
    files = write_sentiment(d, n_train=48, n_val=16)
    out = {"dir": d}
    for name, batch in (("single", 2 * B), ("ddp", B)):
        r = tiny_recipe(tiny_bert_nodrop, files, d / name,
                        task={"dropout": 0.0},
                        training={"batch_size": batch, "eval_batch_size": 8, "epochs": 2, "log_every": 1, "lr": 5e-3,
                                  "warmup_ratio": 0.25, "group_by_length": True, "seed": 3, "checkpoint_every": 3,
                                  "keep_checkpoints": 10})
        out[name] = d / f"{name}.yaml"
        out[name].write_text(yaml.safe_dump(r))
    proc = cli_process("train", out["single"], cwd=d, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)
    out["single_run"] = d / "single"
    return out


def _init_like(key, tensor):
    import torch

    return torch.zeros_like(tensor.float())


# ---- several machines, and a different number of processes after a resume ----------------------------------------

MULTI = 1e-6  # the bound for two machines against one process (measured: about 4e-8)


def _launch(port: int, machines: int = 1, rank: int = 0, processes: int = 2, timeout: int = 60) -> list:
    """`adapterkit launch` and its options for one machine of a run: what each machine of a real cluster runs."""
    return ["launch", "--timeout", str(timeout),
            "--config_file", ROOT / "recipes/accelerate/cpu-multiprocess.yaml", "--num_machines", str(machines),
            "--machine_rank", str(rank), "--num_processes", str(processes), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port)]


def _errors(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if l.strip() and not l.startswith("adapterkit: warning:")]


def _two_machines(runs, out: Path, env: dict, resume: bool = False):
    port = _free_port()
    argv = ["train", runs["ddp"], "--set", f"training.output_dir={out}"] + (["--resume"] if resume else [])
    return [cli_start(*_launch(port, 2, rank), *argv, cwd=runs["dir"], env=env) for rank in (0, 1)]


@pytest.mark.slow  # five real processes and their launchers; also the DDP equivalence of two processes
def test_two_machines_match_one_process_and_resume_after_one_is_killed(runs):
    import psutil

    out = runs["dir"] / "two_machines"
    # Machine 0's process pauses inside the save of step 6, so machine 1's is surely waiting for it when killed.
    nodes = _two_machines(runs, out, {**ENV, "ADAPTERKIT_TEST_SLEEP_IN_SAVE": "6:3"})
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / ".tmp-step-00000006").exists():
        assert time.monotonic() < deadline and nodes[0].poll() is None, "machine 0 never reached step 6"
        time.sleep(0.1)
    for p in psutil.Process(nodes[1].pid).children(recursive=True):
        p.send_signal(signal.SIGKILL)  # machine 1's training process dies without a word, as a crashed machine
    killed = time.monotonic()
    (out0, err0), (out1, err1) = (n.communicate(timeout=120) for n in nodes)
    assert time.monotonic() - killed < 60  # ended by the lost connection, not the (60 s) collective timeout
    assert nodes[0].returncode == 1 and nodes[1].returncode == 1
    e0, e1 = _errors(err0), _errors(err1)
    assert len(e0) == 1 and e0[0].startswith("adapterkit: error: process 0 lost the other processes"), err0
    assert "--resume" in e0[0] and "step-0000000" in e0[0]
    assert e1 == ["adapterkit: error: process 1 on this machine was stopped by SIGKILL; start every machine again "
                  "with the same command and --resume"], err1
    assert json.loads((out / "run.json").read_text())["status"] == "failed"

    nodes = _two_machines(runs, out, ENV, resume=True)
    for n in nodes:
        stdout, stderr = n.communicate(timeout=300)
        assert n.returncode == 0, stderr[-3000:]
    resumed = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"resume"' in l]
    assert resumed and resumed[-1]["step"] in (3, 6) and resumed[-1]["processes"] == 2
    _equals_one_process(runs["single_run"], out)
    runs["two_machines"] = out


def _equals_one_process(single: Path, ddp: Path, tol: float = MULTI, loss_tol: float = 1e-5) -> None:
    """Two processes with batch B trained as one with 2B: losses, schedule, weights and the gathered evaluation.
    group_by_length (in the recipes) is the harder case: length groups must span the global batch (data.dataloader)."""
    start = [json.loads(l) for l in (ddp / "log.jsonl").read_text().splitlines() if '"start"' in l]
    assert start and all(r["processes"] == 2 for r in start)  # really two processes, each start logged once

    ls, ld = _losses(single), dict(_losses(ddp))  # a resumed run logs the steps after its checkpoint again: the last
    assert [s for s, _ in ls] == sorted(ld) == list(range(1, 13))  # 48 examples / 8 per global batch x 2 epochs
    for step, a in ls:
        assert abs(a - ld[step]) < loss_tol, f"step {step}: loss {a} (1 process) vs {ld[step]} (2 processes)"

    def lr(run):
        return dict((r["step"], r["lr"]) for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
                    if "lr" in r)
    assert lr(single) == pytest.approx(lr(ddp), rel=1e-9)  # same schedule, not one stepped twice per step
    assert lr(single)[12] == pytest.approx(0.0, abs=1e-12)  # linear decay reaches zero at the last step

    assert _worst(single, ddp) < tol
    ws = _weights(single)
    moved = max((ws[k].float() - _init_like(k, ws[k])).abs().max().item() for k in ws if "lora_B" in k)
    assert moved > 1e-3  # training really changed the adapter (LoRA B starts at zero)

    ms = json.loads((single / "metrics.json").read_text())["validation"]
    md = json.loads((ddp / "metrics.json").read_text())["validation"]
    assert md["loss"] == pytest.approx(ms["loss"], abs=loss_tol)  # gathered evaluation: all 16 examples, none twice
    assert md["accuracy"] == ms["accuracy"]


@pytest.mark.slow  # three real processes
def test_elastic_resume_two_processes_to_one_and_one_to_two(runs):
    """The global batch is kept (8 = 2 x 4 = 1 x 8): the same examples make each step at any number of processes, so
    the result equals the uninterrupted run at the new number within the reduction-order tolerance above."""
    d, ckpt = runs["dir"], "checkpoints/step-00000003"
    if "two_machines" not in runs:
        pytest.skip("needs the two-machine run of the test above")
    proc = cli_process("train", runs["ddp"], "--set", f"training.output_dir={d / 'two_to_one'}",
                       "--resume", runs["two_machines"] / ckpt, cwd=d, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)
    assert _worst(runs["single_run"], d / "two_to_one") < MULTI  # one process, uninterrupted
    # The plain launcher here (the two-machine test runs `adapterkit launch`): the shipped CPU config starts torchrun;
    # `--cpu --num_processes 2` would start one process without MPI.
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  ROOT / "recipes/accelerate/cpu-multiprocess.yaml", "--num_processes", "2",
                  "--main_process_port", _free_port()]
    proc = cli_process("train", runs["single"], "--set", f"training.output_dir={d / 'one_to_two'}",
                       "--resume", runs["single_run"] / ckpt, launcher=accelerate, cwd=d, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)
    assert _worst(runs["two_machines"], d / "one_to_two") < MULTI  # two processes, uninterrupted (but for a kill)
    for run, processes, batch in (("two_to_one", 1, 8), ("one_to_two", 2, 4)):
        rec = [json.loads(l) for l in (d / run / "log.jsonl").read_text().splitlines() if '"resume"' in l][-1]
        assert (rec["processes"], rec["batch_size"], rec["step"]) == (processes, batch, 3)
        assert [s for s, _ in _losses(d / run)] == list(range(4, 13))  # steps 4..12: the same 12 steps in all


# ---- DeepSpeed ------------------------------------------------------------------------------------------------------


@pytest.mark.slow  # trains in two real processes (plus the shared one-process reference)
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed is not installed (the test extra has it: pip install -c requirements.lock deepspeed)")
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                    reason="DeepSpeed on CPU compiles its shared-memory op at the first launch: no C++ compiler here")
def test_deepspeed_zero3_on_two_cpu_processes_matches_one_process(runs):
    """The shipped ZeRO-3 config, unchanged, on CPU: DeepSpeed's CPU accelerator over gloo, parameters, gradients
    and optimizer state partitioned over 2 processes. ZeRO-2 runs the same adapterkit code (gloo group, clipping
    from the recipe, main-process writing) minus the partitioned weights; it matched DDP to 4e-8 when tried."""
    d, zero3 = runs["dir"], runs["dir"] / "zero3"
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  ROOT / "recipes/accelerate/deepspeed-zero3.yaml", "--num_processes", "2",
                  "--main_process_port", _free_port()]
    proc = cli_process("train", runs["ddp"], "--set", f"training.output_dir={zero3}",
                       "--set", "training.checkpoint_every=null",  # checkpoints: refused under DeepSpeed
                       launcher=accelerate, cwd=d, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)
    start = [json.loads(l) for l in (zero3 / "log.jsonl").read_text().splitlines() if '"start"' in l][0]
    ref = [json.loads(l) for l in (runs["single_run"] / "log.jsonl").read_text().splitlines() if '"start"' in l][0]
    assert start["distributed"] == "DEEPSPEED"  # not silently plain DDP
    assert start["total_params"] == ref["total_params"]  # counted whole although ZeRO-3 loads them partitioned
    # ZeRO-3 reduce-scatters gradients in buckets, summing in another order than one process: 1e-5 drift, not 1e-8.
    _equals_one_process(runs["single_run"], zero3, tol=1e-4, loss_tol=1e-4)


def test_deepspeed_launch_refuses_int8_and_checkpoints(tmp_path, tiny_bert, monkeypatch):
    """Before anything loads, so no DeepSpeed is needed: what `accelerate launch` with a DeepSpeed config sets."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    files = write_sentiment(tmp_path, n_train=8, n_val=4)
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_bert, files, tmp_path / "run"))
    assert "checkpoint_every=null" in one_error_line(["train", str(path)])  # the default checkpoint_every: 500
    err = one_error_line(["train", str(path), "--set", "training.checkpoint_every=null",
                          "--set", "backbone.quantization=int8"])
    assert "int8" in err and "DeepSpeed" in err
    monkeypatch.setenv("CXX", "no-such-compiler")  # DeepSpeed's CPU backend compiles an op when it starts
    err = one_error_line(["train", str(path), "--set", "training.checkpoint_every=null"])
    assert "needs a C++ compiler (no-such-compiler not found)" in err
