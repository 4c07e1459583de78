"""Issue 5 on the real models: export a CoNLL-2003 token-classification run (int8 all-MiniLM-L6-v2 + LoRA) and a
SmolLM2-135M label-words run (GGUF backbone + LoRA), then load each export in a process that never imports
adapterkit with its transformers auto class: tags a sentence / generates, and compares with the run itself.

    python benchmarks/export_real_models.py CONLL_RUN SMOLLM2_RUN

(runs from `benchmarks/conll_ner.py` and `benchmarks/smollm2_label_words.py`, or any runs of
recipes/conll2003-lora-int8.yaml and recipes/smollm2-sst2-label-words-lora.yaml). Writes
benchmarks/results/export_real_models.{json,md}.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAIN_ENV = {"HF_HUB_OFFLINE": "1", "PATH": "", "TOKENIZERS_PARALLELISM": "false"}
NER_TEXT = "John Smith flew from Paris to New York to meet the United Nations ."
LM_PROMPT = "Movie review: a gorgeous, witty, seductive movie.\nSentiment (positive or negative):"

NER_CODE = """
import sys, json, torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
m = AutoModelForTokenClassification.from_pretrained(sys.argv[1]).eval()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
words = sys.argv[2].split()
enc = tok([words], is_split_into_words=True, return_tensors="pt")
with torch.no_grad():
    pred = m(**enc).logits.argmax(-1)[0].tolist()
seen, tags = set(), []
for i, w in enumerate(enc.word_ids(0)):
    if w is not None and w not in seen:
        seen.add(w)
        tags.append(m.config.id2label[pred[i]])
assert "adapterkit" not in sys.modules
print(json.dumps(dict(cls=type(m).__name__, tags=tags)))
"""

LM_CODE = """
import sys, json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
enc = tok([sys.argv[2]], return_tensors="pt")
out = m.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
assert "adapterkit" not in sys.modules
print(json.dumps(dict(cls=type(m).__name__, completion=tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))))
"""


def cli(*args):
    res = subprocess.run([sys.executable, "-m", "adapterkit.cli", *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        sys.exit(f"adapterkit {' '.join(args)} failed:\n{res.stderr[-3000:]}")
    return res.stdout


def plain(code, *args):
    res = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=PLAIN_ENV)
    if res.returncode:
        sys.exit(f"plain transformers load failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _first_word(text):  # the label word; the plain tokenizer and the run may differ in a leading BOS token
    return (text.strip().split() or [""])[0].lower()


def with_validation(run, copy):
    """benchmarks/smollm2_label_words.py trains without a validation split (it scores it afterwards): give a copy
    of the run SST-2 validation (first 200 rows), which the export verification scores."""
    import shutil

    import yaml

    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    if recipe["data"].get("validation"):
        return run
    shutil.copytree(run, copy)
    recipe["data"].update(validation=str(ROOT.parent / "shared" / "data" / "sst2" / "validation.tsv"))
    (copy / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return copy


def export(run, out, *extra):
    t = time.time()
    cli("export", str(run), "--out", str(out), *extra)
    report = json.loads((out / "export_report.json").read_text())
    return report, round(time.time() - t, 1)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    conll_run, lm_run = map(Path, sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="adapterkit-exports-"))
    result = {"when": time.strftime("%Y-%m-%d %H:%M")}

    rep, secs = export(conll_run, tmp / "conll")
    loaded = plain(NER_CODE, tmp / "conll", NER_TEXT)
    ours = json.loads(cli("predict", str(conll_run), "--text", NER_TEXT).strip().splitlines()[0])
    result["conll"] = dict(run=str(conll_run), export_s=secs, loads_with=rep["loads_with"],
                           merged_vs_unmerged=rep["merged_vs_unmerged"], verification=rep["verification"],
                           plain_class=loaded["cls"], plain_tags=loaded["tags"], run_tags=[t for _, t in ours["tags"]],
                           tags_agree=loaded["tags"] == [t for _, t in ours["tags"]])

    lm_run = with_validation(lm_run, tmp / "smollm2-run")
    rep, secs = export(lm_run, tmp / "smollm2", "--verify-samples", "200")
    loaded = plain(LM_CODE, tmp / "smollm2", LM_PROMPT)
    gen = json.loads(cli("generate", str(lm_run), "--prompt", LM_PROMPT.split("\n")[0].removeprefix("Movie review: "),
                         "--max-new-tokens", "3").strip().splitlines()[0])
    result["smollm2"] = dict(run=str(lm_run), export_s=secs, loads_with=rep["loads_with"],
                             merged_vs_unmerged=rep["merged_vs_unmerged"], verification=rep["verification"],
                             plain_class=loaded["cls"], plain_completion=loaded["completion"], run_completion=gen["completion"],
                             completions_agree=_first_word(loaded["completion"]) == _first_word(gen["completion"]),
                             files={k: v for k, v in rep.items() if k in ("files", "size_mib", "dtypes")})
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_real_models.json").write_text(json.dumps(result, indent=1))
    c, s = result["conll"], result["smollm2"]
    md = ["# Exports of real runs, loaded with plain transformers", "",
          f"Run {result['when']}; each export loaded in a fresh process that never imports adapterkit.", "",
          "| run | loads with | merged vs unmerged max abs diff | plain-transformers output | same as the run |",
          "|---|---|---|---|---|",
          f"| CoNLL-2003, int8 MiniLM + LoRA | `{c['plain_class']}` | {c['merged_vs_unmerged']['max_abs_diff']:.2e} | "
          f"{' '.join(c['plain_tags'])} | {c['tags_agree']} |",
          f"| SmolLM2-135M label words + LoRA | `{s['plain_class']}` | {s['merged_vs_unmerged']['max_abs_diff']:.2e} | "
          f"{s['plain_completion']!r} | {s['completions_agree']} |", "",
          "Verification blocks (agreement with the trained run on its validation split, metric of each):", "",
          "```json", json.dumps({"conll": c["verification"], "smollm2": s["verification"]}, indent=1), "```", ""]
    (out / "export_real_models.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
