"""DDP equivalence: one process with batch 2B == two CPU processes (gloo, `accelerate launch` with recipes/accelerate/cpu-multiprocess.yaml) with batch B each.
The same for DeepSpeed ZeRO-3 (recipes/accelerate/deepspeed-zero3.yaml on CPU), within 1e-4.

Same seed, no dropout anywhere: the final adapter and head weights must agree within 1e-5 and the logged
(cross-process reduced) losses must match. This exercises data sharding (incl. length grouping over the
global batch), gradient averaging, the LR schedule's step count and main-process-only writing."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, cli_process, one_error_line, tiny_recipe, write_recipe, write_sentiment

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


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r and "event" not in r]


def _recipe(model: Path, tmp: Path, name: str, batch: int, **training) -> Path:
    files = {split: tmp / f"{split}.csv" for split in ("train", "validation")}
    r = tiny_recipe(model, files, tmp / name, task={"dropout": 0.0},
                    training={"batch_size": batch, "eval_batch_size": 8, "epochs": 2, "log_every": 1, "lr": 5e-3,
                              "warmup_ratio": 0.25, "seed": 3,
                              # the harder case: length groups must span the global batch (data.dataloader)
                              "group_by_length": True, **training})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_bert_nodrop) -> Path:
    """The reference: one process with the global batch 2B (shared by the multi-process tests of this file)."""
    tmp = tmp_path_factory.mktemp("single")
    write_sentiment(tmp, n_train=48, n_val=16)
    proc = cli_process("train", _recipe(tiny_bert_nodrop, tmp, "run", 2 * B), cwd=tmp, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)
    return tmp / "run"


def _launch(config: str, tmp: Path, recipe: Path) -> Path:
    """`accelerate launch --config_file recipes/accelerate/CONFIG` with 2 CPU processes; the run folder."""
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ROOT / "recipes/accelerate" / config,
                  "--num_processes", "2", "--main_process_port", _free_port()]
    proc = cli_process("train", recipe, launcher=accelerate, cwd=tmp, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)
    run = tmp / "run"
    start = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"start"' in l]
    assert len(start) == 1 and start[0]["processes"] == 2  # really two processes, and the log written once
    return run


def _compare(single: Path, multi: Path, tol: float) -> None:
    """Same losses (cross-process reduced), schedule, final weights and gathered validation, within `tol`."""
    ls, ld = _losses(single), _losses(multi)
    assert [s for s, _ in ls] == [s for s, _ in ld] == list(range(1, 13))  # 48 examples / 8 per global batch x 2 epochs
    for (step, a), (_, b) in zip(ls, ld):
        assert abs(a - b) < tol, f"step {step}: loss {a} (1 process) vs {b} (2 processes)"

    lr = lambda run: [json.loads(l)["lr"] for l in (run / "log.jsonl").read_text().splitlines() if '"lr"' in l]
    assert lr(single) == pytest.approx(lr(multi), rel=1e-9)  # same schedule, not one stepped twice per step
    assert lr(single)[-1] == pytest.approx(0.0, abs=1e-12)  # linear decay reaches zero at the last step

    ws, wd = _weights(single), _weights(multi)
    assert ws.keys() == wd.keys() and any("lora_A" in k for k in ws)
    worst = max((ws[k].float() - wd[k].float()).abs().max().item() for k in ws)
    assert worst < tol, f"largest weight difference {worst}"
    moved = max(ws[k].float().abs().max().item() for k in ws if "lora_B" in k)
    assert moved > 1e-3  # training really changed the adapter (LoRA B starts at zero)

    ms = json.loads((single / "metrics.json").read_text())["validation"]
    md = json.loads((multi / "metrics.json").read_text())["validation"]
    assert md["loss"] == pytest.approx(ms["loss"], abs=tol)  # gathered evaluation: all 16 examples, none twice
    assert md["accuracy"] == ms["accuracy"]


@pytest.mark.slow  # trains in three real processes
def test_two_processes_match_one_process_with_double_batch(tmp_path, tiny_bert_nodrop, single):
    write_sentiment(tmp_path, n_train=48, n_val=16)
    # The shipped CPU config (torchrun launcher): `--cpu --num_processes 2` would start one process without MPI.
    ddp = _launch("cpu-multiprocess.yaml", tmp_path, _recipe(tiny_bert_nodrop, tmp_path, "run", B))
    _compare(single, ddp, 1e-5)


@pytest.mark.slow  # trains in two real processes (plus the shared one-process reference)
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed is not installed (the test extra has it: pip install -c requirements.lock deepspeed)")
def test_deepspeed_zero3_on_two_cpu_processes_matches_one_process(tmp_path, tiny_bert_nodrop, single):
    """The shipped ZeRO-3 config, unchanged, on CPU: DeepSpeed's CPU accelerator over gloo, parameters, gradients
    and optimizer state partitioned over 2 processes. ZeRO-2 runs the same adapterkit code (gloo group, clipping
    from the recipe, main-process writing) minus the partitioned weights; it matched DDP to 4e-8 when tried."""
    write_sentiment(tmp_path, n_train=48, n_val=16)
    recipe = _recipe(tiny_bert_nodrop, tmp_path, "run", B, checkpoint_every=None)  # checkpoints: refused under DeepSpeed
    zero3 = _launch("deepspeed-zero3.yaml", tmp_path, recipe)
    start = [json.loads(l) for l in (zero3 / "log.jsonl").read_text().splitlines() if '"start"' in l][0]
    ref = [json.loads(l) for l in (single / "log.jsonl").read_text().splitlines() if '"start"' in l][0]
    assert start["distributed"] == "DEEPSPEED"  # not silently plain DDP
    assert start["total_params"] == ref["total_params"]  # counted whole although ZeRO-3 loads them partitioned
    # ZeRO-3 reduce-scatters gradients in buckets, summing in another order than one process: 1e-5 drift, not 1e-8.
    _compare(single, zero3, 1e-4)


def test_deepspeed_launch_refuses_int8_and_checkpoints(tmp_path, tiny_bert, monkeypatch):
    """Before anything loads, so no DeepSpeed is needed: what `accelerate launch` with a DeepSpeed config sets."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    files = write_sentiment(tmp_path, n_train=8, n_val=4)
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(tiny_bert, files, tmp_path / "run"))
    assert "checkpoint_every=null" in one_error_line(["train", str(path)])  # the default checkpoint_every: 500
    err = one_error_line(["train", str(path), "--set", "training.checkpoint_every=null",
                          "--set", "backbone.quantization=int8"])
    assert "int8" in err and "DeepSpeed" in err
