"""The `--train` suite of gpu_llama1b.py: real `adapterkit train` runs on the Llama-1B-shaped model, one per launch
config: LoRA on one GPU (bf16, int8, NF4) and through the shipped Accelerate configs (DDP, FSDP bf16/4-bit,
DeepSpeed ZeRO-2/ZeRO-3). Each run is its own process tree; its figures come from the run folder (metrics.json,
log.jsonl) and from nvidia-smi (peak GPU memory, sampled while it runs).

Multi-process arms use min(2, GPUs) processes: NCCL refuses two ranks on one GPU, so on a one-GPU machine they run
one process each. That still checks the launch, wrapping/partitioning and saving of each config; the record says
how many processes ran."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate"
# label -> (Accelerate config or None for plain `adapterkit train`, backbone.quantization)
ARMS = {
    "single_bf16": (None, "none"),
    "single_int8": (None, "int8"),
    "single_nf4": (None, "nf4"),
    "ddp_int8": ("multi-gpu-ddp.yaml", "int8"),
    "fsdp_bf16": ("fsdp-bf16.yaml", "none"),
    "fsdp_nf4": ("fsdp-4bit.yaml", "nf4"),
    "zero2_bf16": ("deepspeed-zero2.yaml", "none"),
    "zero3_bf16": ("deepspeed-zero3.yaml", "none"),
    "zero3_nf4": ("deepspeed-zero3.yaml", "nf4"),
}
STEPS, BATCH, SEQ = 20, 4, 512


def write_data(folder: Path, n: int = 256, words: int = SEQ) -> Path:
    """Causal-LM samples of SEQ tokens (the benchmark tokenizer is word level; the weights are random anyway)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "train.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"sample {i} says", "completion": " " + " ".join(["word"] * words)}) + "\n")
    return path


def recipe(model: Path, data: Path, out: Path, quantization: str) -> dict:
    return {
        "backbone": {"path": str(model), "dtype": "bfloat16", "quantization": quantization},
        "adapter": {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
        "task": {"type": "causal_lm"},
        "data": {"train": str(data), "max_length": SEQ},
        "training": {"output_dir": str(out), "max_steps": STEPS, "batch_size": BATCH, "mixed_precision": "bf16",
                     "log_every": 10, "checkpoint_every": None, "seed": 0},  # checkpoints: refused under DeepSpeed
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(config: str | None, processes: int, recipe_path: Path) -> list[str]:
    cli = ["-m", "adapterkit.cli", "train", str(recipe_path)]
    if config is None:
        return [sys.executable, *cli]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
            "--num_processes", str(processes), "--main_process_port", str(_free_port()), *cli]


class GpuMemory:
    """Peak memory used on any GPU (MiB, nvidia-smi) while the block runs, minus what was in use before."""

    def __enter__(self):
        self.base = max(self._used(), default=0)
        self.peak, self._stop = self.base, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, *self._used(), self.base)

    @staticmethod
    def _used() -> list[int]:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [int(x) for x in out.split() if x.strip().isdigit()]


def run_arm(label: str, model: Path, data: Path, work: Path, processes: int, timeout: int) -> dict:
    config, quant = ARMS[label]
    out = work / label
    path = work / f"{label}.yaml"
    path.write_text(json.dumps(recipe(model, data, out, quant)))  # JSON is YAML
    n = 1 if config is None else processes
    row: dict = dict(arm=label, config=config or "(adapterkit train)", quantization=quant, processes=n)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    with GpuMemory() as mem:
        try:
            proc = subprocess.run(command(config, n, path), capture_output=True, text=True, env=env, cwd=str(work),
                                  timeout=timeout)
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            rc, err = 124, f"timed out after {timeout} s"
    row.update(wall_s=round(time.time() - t0, 1), peak_gpu_mib=mem.peak - mem.base)
    if rc != 0:
        # The failing rank's exception, not the launcher's summary that follows it.
        ours = [line for line in err.splitlines() if "adapterkit: error" in line]
        raised = [line for line in err.splitlines() if re.search(r"\w+(Error|Exception):", line) and "ChildFailed" not in line]
        row["error"] = (ours or raised or err.splitlines() or ["?"])[-1].strip()[:300]
        return row
    train = json.loads((out / "metrics.json").read_text())["train"]
    start = next(json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"start"' in line)
    row.update(steps=train["steps"], train_s=train["seconds"], examples_per_s=train["examples_per_s"],
               tokens_per_s=round(train["examples_per_s"] * SEQ), distributed=start.get("distributed"),
               trainable_params=train["trainable_params"])
    return row


def run_suite(model: Path, work: Path, processes: int, arms: list[str], deadline: float) -> list[dict]:
    """Every arm in turn; each gets at most 240 s and none starts past `deadline` (time.time()), so a hung launch
    cannot take the whole GPU lease: the arms left are recorded as skipped."""
    data = write_data(work / "data")
    rows = []
    for label in arms:
        left = int(deadline - time.time())
        if left < 30:
            row = dict(arm=label, config=ARMS[label][0] or "(adapterkit train)", quantization=ARMS[label][1],
                       processes=0, wall_s=0, peak_gpu_mib=0, error="skipped: out of the time budget (--budget)")
        else:
            row = run_arm(label, model, data, work, processes, min(240, left))
        print("train", json.dumps(row), flush=True)
        rows.append(row)
    return rows


def validate(model: Path, work: Path, processes: int, arms: list[str]) -> list[str]:
    """--dry-run: every arm's recipe through adapterkit's validation and its Accelerate config through Accelerate's
    loader and launch checks; the commands that would run. Needs no GPU (and no model: the path is not read)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    from adapterkit.model import recipe_from_dict

    data = write_data(work / "data", n=4, words=8)
    lines = []
    for label in arms:
        config, quant = ARMS[label]
        r = recipe(model, data, work / label, quant)
        recipe_from_dict(r)  # the schema: raises on a key or value adapterkit would refuse
        path = work / f"{label}.yaml"
        path.write_text(json.dumps(r))
        cmd = command(config, processes, path)
        if config is not None:
            cfg = load_config_from_file(str(CONFIGS / config))
            args = launch_command_parser().parse_args(cmd[cmd.index("--config_file"):])
            args, _, _ = _validate_launch_command(args)
            assert args.num_processes == processes, (label, args.num_processes)
            lines.append(f"{label}: {cfg.distributed_type.value}, {processes} process(es), {cfg.mixed_precision}")
        lines.append("  " + " ".join(cmd))
    return lines


def markdown(rows: list[dict]) -> str:
    head = ["| arm | config | quant | processes | tokens/s | train s | wall s | peak GPU MiB |",
            "|---|---|---|---|---|---|---|---|"]
    body = [f"| {r['arm']} | {r['config']} | {r['quantization']} | {r['processes']} | {r.get('tokens_per_s', '')} | "
            f"{r.get('train_s', '')} | {r['wall_s']} | {r['peak_gpu_mib']} |" + (f" error: {r['error']}" if "error" in r else "")
            for r in rows]
    return (f"\n## adapterkit train through the launch configs\n\n{STEPS} steps of {BATCH} x {SEQ} tokens per process, LoRA "
            "r=16, bf16; one fresh process tree per arm. Peak GPU memory is nvidia-smi's (all processes, largest GPU).\n\n"
            + "\n".join(head + body) + "\n")
