"""FSDP2 on CPU: two processes (`accelerate launch` with recipes/accelerate/cpu-fsdp2.yaml, gloo) with batch B each
train as one process with batch 2B; sharded checkpoints (torch distributed checkpoint, safetensors shards) resume to
the uninterrupted run's weights; the run folder of an FSDP run is an ordinary one (its merged export verifies).

Tolerances. float32: 1e-5, as for DDP (tests/training/test_distributed.py). The global batch's gradient is the mean
of the two processes' gradients, reduce-scattered shard by shard: the same sums in another order, so float32 rounding
(about 1e-7 on these weights). bfloat16 backbone: 5e-3. Its activations keep 8 mantissa bits, and each process pads
its own half batch to its own longest row, so the matmuls run on other shapes and round differently; the same two
processes under DDP give bit for bit the FSDP weights: the difference is bfloat16 batching, not sharding."""
from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, cli, cli_process, one_error_line, tiny_recipe, write_sentiment

B = 4
CONFIG = ROOT / "recipes" / "accelerate" / "cpu-fsdp2.yaml"
ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
KINDS = {  # run kind -> recipe sections
    "lora": {},
    "full": {"replace": {"adapter": {"method": "full"}}, "training": {"lr": 1e-3}},
    "bf16": {"backbone": {"dtype": "bfloat16"}},
}
TOLERANCE = {"lora": 1e-5, "full": 1e-5, "bf16": 5e-3}


def _free_port() -> int:
    with socket.socket() as s:  # other test runs may share the machine: never assume 29500 is free
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _failed(proc) -> str:
    return f"{' '.join(map(str, proc.args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def _launch(*argv, cwd) -> None:
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG,
                  "--main_process_port", _free_port()]
    proc = cli_process(*argv, launcher=accelerate, cwd=cwd, env=ENV, timeout=300)
    assert proc.returncode == 0, _failed(proc)


class Runs:
    """Each run trained once for the module: (kind, 'single' | 'fsdp') -> run folder. 32 examples, one epoch of 4
    steps of 8; evaluation at step 2 (so checkpoints hold best weights) and at the end; FSDP runs checkpoint at 2."""

    def __init__(self, root: Path, model: Path):
        self.root, self.model = root, model
        self.files = write_sentiment(root, n_train=32, n_val=8)
        self.done: dict = {}

    def recipe(self, kind: str, procs: str, out: Path) -> Path:
        sections = dict(KINDS[kind])
        training = {"batch_size": 2 * B if procs == "single" else B, "eval_batch_size": 8, "epochs": 1,
                    "log_every": 1, "lr": 5e-3, "warmup_ratio": 0.25, "seed": 3, "eval_every": 2,
                    **({"checkpoint_every": 2, "keep_checkpoints": 5} if procs == "fsdp" else {}),
                    **sections.pop("training", {})}
        r = tiny_recipe(self.model, self.files, out, task={"dropout": 0.0}, training=training, **sections)
        path = self.root / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(r))
        return path

    def get(self, kind: str, procs: str) -> Path:
        if (kind, procs) not in self.done:
            out = self.root / f"{kind}-{procs}"
            path = self.recipe(kind, procs, out)
            if procs == "single":
                res = cli("train", path)
                assert res.code == 0, res.err
            else:
                _launch("train", path, cwd=self.root)
            self.done[kind, procs] = out
        return self.done[kind, procs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_nodrop) -> Runs:
    return Runs(tmp_path_factory.mktemp("fsdp"), tiny_bert_nodrop)


def _weights(run: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for part in ("adapter/adapter_model.safetensors", "model/model.safetensors", "head.safetensors"):
        if (run / part).is_file():
            out.update({f"{part}/{k}": v for k, v in load_file(run / part).items()})
    return out


def _worst(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and "event" not in r]


@pytest.mark.slow  # trains in two real processes, and one
@pytest.mark.parametrize("kind", list(KINDS))
def test_two_fsdp_processes_match_one_process_with_double_batch(runs, kind):
    single, sharded = runs.get(kind, "single"), runs.get(kind, "fsdp")
    start = [json.loads(line) for line in (sharded / "log.jsonl").read_text().splitlines() if '"start"' in line]
    assert len(start) == 1 and start[0]["processes"] == 2
    ws, wf = _weights(single), _weights(sharded)
    worst = _worst(ws, wf)
    assert worst < TOLERANCE[kind], f"{kind}: largest weight difference {worst}"
    assert len(_losses(single)) == len(_losses(sharded)) == 4
    for a, b in zip(_losses(single), _losses(sharded)):
        assert abs(a - b) < 10 * TOLERANCE[kind]
    if kind == "full":  # the whole model, unsharded, and moved from the backbone it started from
        from safetensors.torch import load_file

        start = load_file(runs.model / "model.safetensors")["encoder.layer.0.attention.self.query.weight"]
        query = wf["model/model.safetensors/bert.encoder.layer.0.attention.self.query.weight"]
        assert query.shape == start.shape == (64, 64) and (query - start).abs().max() > 1e-4
    else:  # LoRA B starts at zero
        assert max(v.float().abs().max().item() for k, v in wf.items() if "lora_B" in k) > 1e-3


@pytest.mark.slow
def test_sharded_checkpoint_resumes_to_the_uninterrupted_weights(runs, tmp_path):
    """The full fine-tuning run's step-2 checkpoint (weights, best weights and AdamW state in shards) copied into a
    fresh folder: `--resume` ends on the uninterrupted run's weights."""
    done = runs.get("full", "fsdp")
    ckpt = done / "checkpoints" / "step-00000002"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["sharded"] and state["has_best"] and state["processes"] == 2
    shards = sorted(p.name for p in (ckpt / "sharded").iterdir())
    assert len(shards) == 2 and all(n.endswith(".safetensors") for n in shards)  # one per process, no pickle
    assert not (ckpt / "trainable.safetensors").exists()

    resumed = runs.root / "full-resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, resumed / "checkpoints" / ckpt.name)
    path = runs.recipe("full", "fsdp", resumed)
    _launch("train", path, "--resume", cwd=runs.root)
    worst = _worst(_weights(done), _weights(resumed))
    assert worst < 1e-6, f"largest weight difference after resume {worst}"
    assert _losses(resumed) == _losses(done)[2:]  # steps 3 and 4, logged again after the resume


@pytest.mark.slow
def test_merged_export_of_an_fsdp_run_verifies(runs, tmp_path):
    from adapterkit.deploy import export

    run = runs.get("lora", "fsdp")
    report = export(run, tmp_path / "exp", requantize=False)
    assert report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4
    assert report["verification"]["exported"]["prediction_agreement"] == 1.0


def test_int8_backbone_under_fsdp_is_refused_before_loading(tmp_path, monkeypatch, tiny_bert_nodrop):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for distributed_type: FSDP
    files = write_sentiment(tmp_path, n_train=8, n_val=4)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_bert_nodrop, files, tmp_path / "run",
                                               backbone={"quantization": "int8"})))
    line = one_error_line(["train", str(path)])
    assert "backbone.quantization: int8" in line and "bnb_4bit_quant_storage" in line and "fsdp-4bit.yaml" in line
    assert not (tmp_path / "run" / "log.jsonl").exists()


def test_a_sharded_checkpoint_missing_or_truncating_a_shard_is_refused(tmp_path):
    """Checked before any model loads (`--resume` resolves the checkpoint first), one line each."""
    import torch
    from safetensors.torch import save_file

    from adapterkit.errors import RunDirError
    from adapterkit.training import checkpoint

    ckpt = tmp_path / "step-00000002"
    (ckpt / "sharded").mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"sharded": True, "processes": 2, "has_best": False}))
    save_file({"scheduler.x": torch.zeros(1)}, str(ckpt / "optimizer.safetensors"))
    shard = ckpt / "sharded" / "shard-00001-model-00001-of-00001.safetensors"
    save_file({"model.w": torch.zeros(2, 2)}, str(shard))
    with pytest.raises(RunDirError, match=r"1 shard file\(s\) for the 2 process\(es\)"):
        checkpoint.verify(ckpt)
    save_file({"model.w": torch.zeros(2, 2)}, str(ckpt / "sharded" / "shard-00002-model-00001-of-00001.safetensors"))
    assert checkpoint.verify(ckpt)["sharded"]
    shard.write_bytes(shard.read_bytes()[:20])
    with pytest.raises(RunDirError, match="corrupted or truncated"):
        checkpoint.verify(ckpt)
