"""DDP equivalence: one process with batch 2B == two CPU processes (gloo, `accelerate launch` with recipes/accelerate/cpu-multiprocess.yaml) with batch B each.

Same seed, no dropout anywhere: the final adapter and head weights must agree within 1e-5 and the logged
(cross-process reduced) losses must match. This exercises data sharding (incl. length grouping over the
global batch), gradient averaging, the LR schedule's step count and main-process-only writing."""
from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, cli_process, save_tokenizer, tiny_recipe, write_sentiment

B = 4


@pytest.fixture(scope="module")
def tiny_bert_nodrop(tmp_path_factory) -> Path:
    """A 2-layer random BERT without dropout (frozen backbones still run dropout in train mode)."""
    import torch
    from transformers import BertConfig, BertModel

    d = tmp_path_factory.mktemp("tiny_bert_nodrop")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                     architectures=["BertModel"])
    BertModel(cfg).save_pretrained(d)
    save_tokenizer(d)
    return d


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


@pytest.mark.slow  # trains in three real processes
def test_two_processes_match_one_process_with_double_batch(tmp_path, tiny_bert_nodrop):
    group_by_length = True  # the harder case: length groups must span the global batch (data.dataloader)
    files = write_sentiment(tmp_path, n_train=48, n_val=16)
    runs = {}
    for name, batch in (("single", 2 * B), ("ddp", B)):
        r = tiny_recipe(tiny_bert_nodrop, files, tmp_path / name,
                        task={"dropout": 0.0},
                        training={"batch_size": batch, "eval_batch_size": 8, "epochs": 2, "log_every": 1, "lr": 5e-3,
                                  "warmup_ratio": 0.25, "group_by_length": group_by_length, "seed": 3})
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(r))
        runs[name] = (path, tmp_path / name)

    proc = cli_process("train", runs["single"][0], cwd=tmp_path, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)
    # The shipped CPU config (torchrun launcher): `--cpu --num_processes 2` would start one process without MPI.
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ROOT / "recipes/accelerate/cpu-multiprocess.yaml",
                  "--num_processes", "2", "--main_process_port", _free_port()]
    proc = cli_process("train", runs["ddp"][0], launcher=accelerate, cwd=tmp_path, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)

    single, ddp = runs["single"][1], runs["ddp"][1]
    start = [json.loads(l) for l in (ddp / "log.jsonl").read_text().splitlines() if '"start"' in l]
    assert len(start) == 1 and start[0]["processes"] == 2  # really two processes, and the log written once

    ls, ld = _losses(single), _losses(ddp)
    assert [s for s, _ in ls] == [s for s, _ in ld] == list(range(1, 13))  # 48 examples / 8 per global batch x 2 epochs
    for (step, a), (_, b) in zip(ls, ld):
        assert abs(a - b) < 1e-5, f"step {step}: loss {a} (1 process) vs {b} (2 processes)"

    lr = lambda run: [json.loads(l)["lr"] for l in (run / "log.jsonl").read_text().splitlines() if '"lr"' in l]
    assert lr(single) == pytest.approx(lr(ddp), rel=1e-9)  # same schedule, not one stepped twice per step
    assert lr(single)[-1] == pytest.approx(0.0, abs=1e-12)  # linear decay reaches zero at the last step

    ws, wd = _weights(single), _weights(ddp)
    assert ws.keys() == wd.keys() and any("lora_A" in k for k in ws)
    worst = max((ws[k].float() - wd[k].float()).abs().max().item() for k in ws)
    assert worst < 1e-5, f"largest weight difference {worst}"
    moved = max((ws[k].float() - _init_like(k, ws[k])).abs().max().item() for k in ws if "lora_B" in k)
    assert moved > 1e-3  # training really changed the adapter (LoRA B starts at zero)

    ms = json.loads((single / "metrics.json").read_text())["validation"]
    md = json.loads((ddp / "metrics.json").read_text())["validation"]
    assert md["loss"] == pytest.approx(ms["loss"], abs=1e-5)  # gathered evaluation: all 16 examples, none twice
    assert md["accuracy"] == ms["accuracy"]


def _init_like(key, tensor):
    import torch

    return torch.zeros_like(tensor.float())
